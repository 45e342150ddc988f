"""The host's record of a bond under a bridge, taken from a real kernel, brings the capture
kernel's network up with no `ip=` at all; a VLAN is recorded the same way.

This host's kernel has no bonding or 8021q module, so the records are taken in a guest:
1. A record boot: a busybox guest with three NICs builds what a server has, a bridge `br0`
   over an active-backup bond `bond0` (miimon 100, primary eth1) over eth0 and eth1, with
   a static address, and runs the frozen `kdump-agent mkinitrd --dry-run` for an NFS
   target. The agent walks the kernel's netlink objects (network/hostlinks.py) and prints
   the record it would pack. Then VLAN 77 on eth2 for a second server, recorded only.
2. A panic boot: that record laid over a capture image, the NICs given to QEMU in the
   other order, so that the capture kernel's eth0 is the host's eth1: the agent must find
   each NIC by the MAC the record holds, rebuild bond and bridge, and dump to NFS through
   them. The capture kernel's command line has no `ip=`.

Both boots use QEMU's user-mode network (one slirp per NIC, each with 10.0.2.2 = this
host's loopback), so the active leg reaches the NFS server whichever it is. Tagged frames
do not pass slirp: tests/e2e/test_network_topologies.py dumps over a VLAN on a lab network.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from harness.cache import cache_dir
from harness.cpio import Cpio
from harness.dumps import assert_good_dump, dump_on_host
from harness.guest import boot
from harness.kernels import Kernel, add_modules
from harness.nfs_server import NfsServer
from harness.panic_initrd import build_panic_initrd
from harness.scenario import (
    BINARY,
    CAPTURE_CMDLINE,
    CAPTURE_IMAGES,
    FIRST_KERNEL_CMDLINE,
    GUEST_ADDRESS,
    HOST_FROM_GUEST,
    LEAN_DRACUT_ARGS,
    build_capture_initrd,
    network_dump_dirs,
    with_config_overlay,
)

pytestmark = pytest.mark.qemu

LIBM = "/lib/x86_64-linux-gnu/libm.so.6"
MACS = ("52:54:00:0e:00:01", "52:54:00:0e:00:02")  # the record boot's eth0, eth1
RECORD_CONFIG = f"nfs {HOST_FROM_GUEST}:/export\npath /var/crash\n"
VLAN_CONFIG = "nfs 192.168.77.1:/export\npath /var/crash\n"
VLAN_NIC_MAC = "52:54:00:0e:00:03"
CAPTURE_CONFIG = "\n".join([f"nfs4 {HOST_FROM_GUEST}:/export", "path /var/crash",
                            "extra_modules virtio_net bonding bridge", LEAN_DRACUT_ARGS,
                            "failure_action poweroff", ""])
RECORDED = re.compile(r"^recorded network: (\{.*\})\s*$", re.MULTILINE)

_RECORD_INIT = """\
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /tmp /run /var/tmp
{insmod}
# What a server's network scripts would have made: br0 > bond0 (active-backup) > eth0, eth1.
[ -d /sys/class/net/bond0 ] || echo +bond0 > /sys/class/net/bonding_masters
echo active-backup > /sys/class/net/bond0/bonding/mode
echo 100 > /sys/class/net/bond0/bonding/miimon
for nic in eth0 eth1; do ip link set $nic down; echo +$nic > /sys/class/net/bond0/bonding/slaves; done
echo eth1 > /sys/class/net/bond0/bonding/primary
brctl addbr br0
brctl addif br0 bond0
ip link set bond0 up
ip link set br0 up
ip addr add {address}/24 dev br0
ip route add default via {gateway}
sleep 2
echo "KDUMP-TEST: record boot links"
ip link show
kdump-agent mkinitrd --dry-run -c /etc/kdump.conf --kver {kver} --kmoddir /lib/modules/{kver} \\
    -o /tmp/unused.img --binary /usr/bin/kdump-agent
echo "KDUMP-TEST: mkinitrd exited $?"
# A VLAN on a third NIC, for a server on that VLAN: recorded only (QEMU's user-mode network
# drops tagged frames, so nothing is sent).
ip link set eth2 up
vconfig add eth2 77
ip addr add 192.168.77.15/24 dev eth2.77
ip link set eth2.77 up
kdump-agent mkinitrd --dry-run -c /etc/kdump-vlan.conf --kver {kver} --kmoddir /lib/modules/{kver} \\
    -o /tmp/unused.img --binary /usr/bin/kdump-agent
echo "KDUMP-TEST: mkinitrd for the VLAN exited $?"
poweroff -f
"""


def user_nics(*macs: str) -> list[str]:
    """Virtio NICs, each on its own user-mode network, in the order given."""
    args: list[str] = []
    for number, mac in enumerate(macs):
        args += ["-netdev", f"user,id=n{number}", "-device", f"virtio-net-pci,netdev=n{number},mac={mac}"]
    return args


def record_image(kernel: Kernel) -> Path:
    archive = Cpio()
    archive.add_base_layout()
    archive.add_busybox()
    archive.add_binary(BINARY, "usr/bin/kdump-agent")
    archive.add_binary(Path("/usr/bin/makedumpfile"), "usr/bin/makedumpfile")  # the default collector
    archive.add_file(LIBM.lstrip("/"), Path(LIBM))  # libpython's, unseen by ldd inside the archive
    archive.add_file("etc/kdump.conf", RECORD_CONFIG.encode())
    archive.add_file("etc/kdump-vlan.conf", VLAN_CONFIG.encode())
    modules = add_modules(archive, kernel, ["virtio_pci", "virtio_net", "bonding", "bridge", "8021q"])
    init = _RECORD_INIT.format(insmod="".join(f"insmod {m}\n" for m in modules), address=GUEST_ADDRESS,
                               gateway=HOST_FROM_GUEST, kver=kernel.kver)
    archive.add_file("init", init.encode(), 0o755)
    return archive.write_cached(cache_dir(CAPTURE_IMAGES) / "network-record-boot.img")


def records_in_guest(kernel: Kernel, workdir: Path) -> list[dict[str, Any]]:
    """The records mkinitrd --dry-run printed in the record boot: the bridge's, the VLAN's."""
    result = boot(kernel, record_image(kernel), append="console=ttyS0 panic=1", timeout_s=300,
                  log_path=workdir / "record-console.log", extra_args=user_nics(*MACS, VLAN_NIC_MAC))
    assert "KDUMP-TEST: mkinitrd exited 0" in result.console, result.tail()
    assert "KDUMP-TEST: mkinitrd for the VLAN exited 0" in result.console, result.tail()
    records = [json.loads(found) for found in RECORDED.findall(result.console)]
    assert len(records) == 2, result.tail()
    return records


def test_a_recorded_bridge_over_a_bond_is_rebuilt_by_mac_and_carries_the_dump(kernel: Kernel,
                                                                                tmp_path: Path) -> None:
    record, vlan_record = records_in_guest(kernel, tmp_path)
    assert vlan_record["interface"] == "eth2.77"
    assert vlan_record["links"] == [{"kind": "vlan", "name": "eth2.77", "members": ["eth2"],
                                     "options": {"id": "77"}, "mac": VLAN_NIC_MAC, "mtu": 1500}]
    assert vlan_record["nic_macs"] == {"eth2": VLAN_NIC_MAC}
    assert vlan_record["addresses"] == ["192.168.77.15/24"]
    assert record["interface"] == "br0"
    assert record["addresses"] == [f"{GUEST_ADDRESS}/24"]
    links = {link["name"]: link for link in record["links"]}
    assert links["bond0"]["kind"] == "bond" and links["bond0"]["members"] == ["eth0", "eth1"]
    assert links["bond0"]["options"] == {"mode": "active-backup", "primary": "eth1"}
    assert links["br0"]["kind"] == "bridge" and links["br0"]["members"] == ["bond0"]
    assert record["nic_macs"] == {"eth0": MACS[0], "eth1": MACS[1]}  # the NICs' own, not the bond's

    image = build_capture_initrd(kernel, CAPTURE_CONFIG, tmp_path)
    capture = with_config_overlay(image, CAPTURE_CONFIG, tmp_path / "capture.img",
                                  records={"network.json": json.dumps(record)})
    panic = build_panic_initrd(kernel, capture, CAPTURE_CMDLINE, tmp_path / "panic.img")
    with NfsServer(tmp_path / "nfs", protocols=(4,)) as server:
        result = boot(kernel, panic, append=FIRST_KERNEL_CMDLINE, timeout_s=420,
                      log_path=tmp_path / "console.log", extra_args=user_nics(MACS[1], MACS[0]))
        dumps = network_dump_dirs(server.export_path / "var" / "crash")
    assert not result.timed_out, result.tail()
    assert "no ip= on the kernel command line" not in result.console
    assert "final action: reboot" in result.console, result.tail()
    (dump,) = dumps
    manifest = assert_good_dump(dump_on_host(dump), tmp_path)
    assert manifest["target"]["local_address"] == GUEST_ADDRESS
    network_up = next(s for s in manifest["states"] if s["state"] == "NETWORK_UP")
    assert "bond0" in network_up["detail"] and "br0" in network_up["detail"], network_up
