"""Networking for NFS and SSH targets: bring up the one NIC that reaches the server, and nothing else.

Where the capture kernel's plan comes from, first match wins:

1. dracut's parameters on the capture kernel's command line (`cmdline`), the way admins
   and kexec already describe capture-kernel networking.
2. What `mkinitrd` recorded on the host (`record`): the interface that routes to the
   server, its MAC (the capture kernel may name the NIC differently: there is no udev
   rename in a lean initramfs, so `ens3` may come up as `eth0`), its addresses, gateway,
   DNS servers, whether it used DHCP, and the server's name and address as resolved there.

`bringup` then configures the link in the capture kernel; `rtnetlink` opens the kernel's
routing socket for both the host-side record and the bring-up.

pyroute2 is imported only inside the functions that talk to the kernel (see `rtnetlink`),
so importing these modules costs local captures and the host commands nothing.
"""
