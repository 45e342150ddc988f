"""A whole Debian 12 system in QEMU with kdump-agent installed from its .deb, the way an
admin's server has it: systemd, the kernel package, dracut, our boot service.

The root file system is made once with debootstrap (cached as a tarball), then for each
test unpacked, given our package (`dpkg -i` in a chroot), `systemctl enable kdump-agent`
and a test-only unit, and written into an ext4 image with `mkfs.ext4 -d` (no loop device,
no mount). QEMU boots the system's own kernel and initramfs from /boot with root on the
virtio disk. What the guest should do on a boot is chosen on its kernel command line
(`kdumptest=report|panic|check|...`), read by the test unit: see debian_guest.sh.
debian_layouts.py lays such a system out as servers are (root on LVM, /var/crash on md).
"""

from __future__ import annotations

import hashlib
import shutil
from collections.abc import Callable, Sequence
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
           "makedumpfile", "dracut-core", "e2fsprogs", "procps", "cpio", "zstd", "lvm2", "mdadm"]
ROOT_UUID = "5b0e3f7a-1c2d-4e5f-8a9b-0c1d2e3f4a5b"
IMAGE_MIB = 3072

# The test unit's script: what each kdumptest= mode does.
GUEST_SCRIPT = Path(__file__).with_name("debian_guest.sh")
GUEST_SCRIPT_PATH = "/usr/local/sbin/kdump-test"

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
    """A bootable system: its disks (vda, vdb, ... in order), the kernel and initramfs to
    boot it with, and the root= that initramfs mounts."""

    disks: tuple[Path, ...]
    vmlinuz: Path
    initrd: Path
    root: str = f"UUID={ROOT_UUID}"

    @property
    def image(self) -> Path:
        """The first disk: for the plain system, the ext4 root file system itself."""
        return self.disks[0]

    def boot(self, append: str, log_path: Path, timeout_s: int = 900, *,
             disks: Sequence[Path] | None = None, extra_args: Sequence[str] = (),
             progress: Callable[[str], None] | None = None) -> BootResult:
        """One boot of the system; `disks` replaces its own for this boot (a disk added to
        copy a file system out, one left out), `extra_args` and `progress` reach QEMU and
        its console as in harness.guest.boot."""
        cmdline = f"root={self.root} rw console=ttyS0 panic=1 systemd.show_status=0 {append}"
        kernel = Kernel(kver="guest", vmlinuz=self.vmlinuz, kmoddir=self.vmlinuz.parent)
        return boot(kernel, self.initrd, append=cmdline,
                    disks=self.disks if disks is None else disks, timeout_s=timeout_s,
                    log_path=log_path, extra_args=extra_args, progress=progress)


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


def build_system(cache_dir: Path, deb: Path, workdir: Path, *,
                 guest_script: Path = GUEST_SCRIPT) -> DebianSystem:
    """A fresh image with our package installed and enabled, for one test. `guest_script`
    is the test unit's driver (the bench's full systems bring their own)."""
    tree = unpack_base(cache_dir, workdir)
    shutil.copy(deb, tree / "tmp" / deb.name)
    run(["chroot", tree, "dpkg", "-i", f"/tmp/{deb.name}"], timeout=600)
    (tree / "tmp" / deb.name).unlink()
    run(["chroot", tree, "systemctl", "enable", "kdump-agent.service"])
    return finish_system(tree, workdir, guest_script)


def unpack_base(cache_dir: Path, workdir: Path) -> Path:
    """The base system unpacked into workdir/root, for a caller to install its packages in."""
    tree = workdir / "root"
    tree.mkdir(parents=True)
    run(["tar", "-C", tree, "--numeric-owner", "-xf", base_tarball(cache_dir)], timeout=900)
    return tree


def finish_system(tree: Path, workdir: Path, guest_script: Path = GUEST_SCRIPT) -> DebianSystem:
    """The unpacked `tree`, once its packages are in, made a bootable image: the test unit
    and its driver, fstab, host name, root without a password, the kernel and initramfs
    copied out of /boot; the tree is removed."""
    script = tree / GUEST_SCRIPT_PATH.lstrip("/")
    script.parent.mkdir(parents=True, exist_ok=True)
    shutil.copy(guest_script, script)
    script.chmod(0o755)
    (tree / "etc" / "systemd" / "system" / "kdump-test.service").write_text(GUEST_UNIT)
    run(["chroot", tree, "systemctl", "enable", "kdump-test.service"])
    # mdadm's unit runs dracut at every power-off (dracut-core is there, for our package) to
    # stop arrays under the root: a minute per shutdown under TCG, and no test root is on md.
    run(["chroot", tree, "systemctl", "mask", "mdadm-shutdown.service"])
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
    return DebianSystem(disks=(image,), vmlinuz=vmlinuz, initrd=initrd)


def _newest(directory: Path, pattern: str, into: Path) -> Path:
    found = sorted(directory.glob(pattern))
    if not found:
        raise RuntimeError(f"no {pattern} in {directory}")
    return Path(shutil.copy(found[-1], into / found[-1].name))
