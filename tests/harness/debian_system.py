"""A whole Debian 12 system in QEMU with kdump-agent installed from its .deb, the way an
admin's server has it: systemd, the kernel package, dracut, our boot service.

The root file system is made once with debootstrap (cached as a tarball), then for each
test unpacked, given our package (`dpkg -i` in a chroot), `systemctl enable kdump-agent`
and a test-only unit, and written into an ext4 image with `mkfs.ext4 -d` (no loop device,
no mount). QEMU boots the system's own kernel and initramfs from /boot with root on the
virtio disk. What the guest should do on a boot is chosen on its kernel command line
(`kdumptest=report|panic|check`), read by the test unit: see GUEST_SCRIPT.
"""

from __future__ import annotations

import hashlib
import shutil
from dataclasses import dataclass
from pathlib import Path

from .cache import locked
from .commands import log, run
from .guest import BootResult, boot
from .kernels import Kernel

SUITE = "bookworm"
MIRROR = "http://deb.debian.org/debian"
# The system an admin has: init, udev, the kernel, the tools our package depends on, and
# initramfs-tools for the system's own boot initramfs.
INCLUDE = ["systemd-sysv", "udev", "kmod", "linux-image-cloud-amd64", "initramfs-tools", "kexec-tools",
           "makedumpfile", "dracut-core", "e2fsprogs", "procps", "cpio", "zstd"]
ROOT_UUID = "5b0e3f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
IMAGE_MIB = 3072

GUEST_SCRIPT = """#!/bin/sh
# Test-only: what this boot is for comes from kdumptest= on the kernel command line.
mode=$(sed -n 's/.*kdumptest=\\([a-z]*\\).*/\\1/p' /proc/cmdline)
say() { echo "KDUMP-TEST: $*" > /dev/console; }
case "$mode" in
report)
    kdump-agent status > /dev/console 2>&1; say "status rc=$?"
    kdump-agent estimate > /dev/console 2>&1; say "estimate rc=$?"
    systemctl poweroff ;;
panic)
    say "service $(systemctl is-active kdump-agent.service)"
    kdump-agent status > /dev/console 2>&1; rc=$?; say "status rc=$rc"
    if [ "$rc" = 0 ]; then say "panicking"; kdump-agent test --yes > /dev/console 2>&1; fi
    systemctl poweroff ;;
check)
    for d in /var/crash/*/; do say "dump $d"; ls -l "$d" > /dev/console; done
    say "check done"
    systemctl poweroff ;;
esac
"""

GUEST_UNIT = """[Unit]
Description=kdump-agent end-to-end test driver (test images only)
After=kdump-agent.service multi-user.target
ConditionKernelCommandLine=kdumptest

[Service]
Type=oneshot
ExecStart=/usr/local/sbin/kdump-test
StandardOutput=journal+console
StandardError=journal+console

[Install]
WantedBy=multi-user.target
"""


@dataclass(frozen=True)
class DebianSystem:
    """A bootable image and the kernel and initramfs to boot it with."""

    image: Path
    vmlinuz: Path
    initrd: Path

    def boot(self, append: str, log_path: Path, timeout_s: int = 900) -> BootResult:
        cmdline = f"root=UUID={ROOT_UUID} rw console=ttyS0 panic=1 systemd.show_status=0 {append}"
        return boot_kernel(self.vmlinuz, self.initrd, cmdline, self.image, log_path, timeout_s)


def boot_kernel(vmlinuz: Path, initrd: Path, append: str, image: Path, log_path: Path,
                timeout_s: int) -> BootResult:
    kernel = Kernel(kver="guest", vmlinuz=vmlinuz, kmoddir=vmlinuz.parent)
    return boot(kernel, initrd, append=append, disks=[image], timeout_s=timeout_s, log_path=log_path)


def base_tarball(cache_dir: Path) -> Path:
    """debootstrap once; the tree is kept as a tarball keyed by what went into it."""
    key = hashlib.sha256(f"{SUITE} {MIRROR} {' '.join(INCLUDE)}".encode()).hexdigest()[:12]
    tarball = cache_dir / f"debian-{SUITE}-{key}.tar"
    with locked(cache_dir / ".debootstrap.lock"):
        if tarball.exists():
            return tarball
        tree = cache_dir / f".debootstrap-{key}"
        shutil.rmtree(tree, ignore_errors=True)
        log(f"debootstrap {SUITE} (first run only; a few minutes)")
        run(["debootstrap", "--variant=minbase", f"--include={','.join(INCLUDE)}", SUITE, tree, MIRROR],
            timeout=3600)
        partial = tarball.with_suffix(".part")
        run(["tar", "-C", tree, "--numeric-owner", "-cf", partial, "."], timeout=900)
        partial.rename(tarball)
        shutil.rmtree(tree, ignore_errors=True)
    return tarball


def build_system(cache_dir: Path, deb: Path, workdir: Path) -> DebianSystem:
    """A fresh image with our package installed and enabled, for one test."""
    tree = workdir / "root"
    tree.mkdir(parents=True)
    run(["tar", "-C", tree, "--numeric-owner", "-xf", base_tarball(cache_dir)], timeout=900)
    shutil.copy(deb, tree / "tmp" / deb.name)
    run(["chroot", tree, "dpkg", "-i", f"/tmp/{deb.name}"], timeout=600)
    (tree / "tmp" / deb.name).unlink()
    run(["chroot", tree, "systemctl", "enable", "kdump-agent.service"])
    script = tree / "usr" / "local" / "sbin" / "kdump-test"
    script.parent.mkdir(parents=True, exist_ok=True)
    script.write_text(GUEST_SCRIPT)
    script.chmod(0o755)
    (tree / "etc" / "systemd" / "system" / "kdump-test.service").write_text(GUEST_UNIT)
    run(["chroot", tree, "systemctl", "enable", "kdump-test.service"])
    (tree / "etc" / "fstab").write_text(f"UUID={ROOT_UUID} / ext4 defaults 0 1\n")
    (tree / "etc" / "hostname").write_text("crashbox\n")
    run(["chroot", tree, "passwd", "-d", "root"])
    boot_dir = workdir / "boot"
    boot_dir.mkdir()
    vmlinuz = _newest(tree / "boot", "vmlinuz-*", boot_dir)
    initrd = _newest(tree / "boot", "initrd.img-*", boot_dir)
    image = workdir / "system.img"
    run(["mkfs.ext4", "-q", "-F", "-U", ROOT_UUID, "-L", "debian", "-d", tree, image, f"{IMAGE_MIB}M"],
        timeout=900)
    shutil.rmtree(tree)
    return DebianSystem(image=image, vmlinuz=vmlinuz, initrd=initrd)


def _newest(directory: Path, pattern: str, into: Path) -> Path:
    found = sorted(directory.glob(pattern))
    if not found:
        raise RuntimeError(f"no {pattern} in {directory}")
    return Path(shutil.copy(found[-1], into / found[-1].name))
