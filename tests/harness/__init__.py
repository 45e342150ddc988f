"""The test harness: everything the QEMU, integration and bench runs share, one job per module.

- `commands`       run a host command, log progress.
- `cache`          the one cache directory (downloads, built images) and its file locks.
- `kernels`        Debian's cloud kernel, fetched once; kernel modules for an initramfs.
- `cpio`           the one newc writer: initramfs images and overlays without root.
- `panic_initrd`   the first kernel's initramfs: load the capture kernel, then crash.
- `disks`          ext4 images made and read back without mounting, journal replay.
- `guest`          QEMU with a hard timeout; an interactive serial console.
- `baseline`       a capture initramfs with no agent (busybox + makedumpfile).
- `rootfs`         a busybox root file system image (mount_root_run_init, dump_to_rootfs).
- `debian_system`  a whole Debian system with the agent's .deb installed.
- `sshd`, `nfs_server`  real servers on loopback for the network targets.
- `scenario`       one panic end to end with the real binary.
- `dumps`          where the dumps are, and the one check that a dump is good.

Tests, `make demo` and `make bench` import it as `harness` (pytest's `pythonpath` and the
Makefile's PYTHONPATH name `tests/`); nothing edits sys.path.
"""
