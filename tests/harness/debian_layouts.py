"""Debian test systems laid out as admins lay out servers: the root file system on LVM,
/var/crash on an md RAID1 of two disks.

This host has no device-mapper and no md, so the stack is made by the Debian system itself
in a preparatory boot (debian_guest.sh, kdumptest=migrate-lvm / make-md) with blank disks
attached; the system's own initramfs-tools image is rebuilt in the guest to assemble it.
A first boot of the final layout (kdumptest=report) follows: it shows that the system comes
up on its stack and what `kdump-agent status` and `estimate` say there. Both boots are slow
under TCG, so the result, disks, initramfs and that report, is cached, keyed by everything
that went into it (the base tarball, the .deb, the guest script, this code); each test
works on its own sparse copy of the disks.

An LV or an array is no ext4 image debugfs can read on the host, so `export_boot` copies
the file system out in the guest, onto a blank disk, and the test reads the copy.
"""

from __future__ import annotations

import hashlib
import io
import shutil
import subprocess
import tarfile
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import debian_system
from .cache import locked
from .commands import log, run
from .debian_system import IMAGE_MIB, DebianSystem, build_system
from .disks import extract, replay_journal
from .guest import BootResult, clean_console
from .qmp import qmp_args, qmp_command

LVM_ROOT = "/dev/mapper/vgsys-root"  # VG vgsys, LV root, as the guest script makes them
PV_MIB = IMAGE_MIB + 16  # the root's size plus room for the LVM metadata and extent rounding
MD_MEMBER_MIB = 512  # each RAID1 disk: room for a few dumps of a 1 GiB guest
PULLED_DISK = "md-member-2"  # the QEMU device id of the array disk that degrade pulls out
PREPARE_TIMEOUT_S = 1200
# Bump when the way a layout is made changes here or in debian_system.build_system (what the
# guest script does is keyed by its content).
LAYOUT_VERSION = 2


@dataclass(frozen=True)
class Layout:
    """A laid-out system (its disks are this test's copies) and the console of its first
    boot on that layout (kdumptest=report, without crashkernel=)."""

    system: DebianSystem
    report: str


def lvm_root_system(cache_dir: Path, deb: Path, workdir: Path) -> Layout:
    """Root on LV vgsys/root of a one-disk VG, booted with root=/dev/mapper/vgsys-root
    through its own initramfs; kdump.conf as the package installs it (no target line)."""
    return _copy(_prepared(cache_dir, deb, "lvm-root", _migrate_to_lvm), workdir)


def md_crash_system(cache_dir: Path, deb: Path, workdir: Path) -> Layout:
    """Root plain ext4 on vda; /var/crash on md RAID1 /dev/md/crash of vdb and vdc
    (metadata 1.2, in mdadm.conf and the initramfs, mounted by UUID from fstab)."""
    return _copy(_prepared(cache_dir, deb, "md-crash", _make_md), workdir)


def export_boot(system: DebianSystem, mountpoint: str, size_mib: int, workdir: Path,
                log_path: Path, disks: tuple[Path, ...] | None = None) -> tuple[BootResult, Path]:
    """A kdumptest=check boot that also copies the file system mounted on `mountpoint` to an
    extra blank disk; returns the boot and that disk, an ext4 image for harness.dumps.
    `disks` are the system's disks for this boot (default: all of them)."""
    disks = system.disks if disks is None else disks
    export = _blank(workdir / "export.img", size_mib)
    append = (f"kdumptest=check kdumpexport={mountpoint} "
              f"kdumpexportto=/dev/vd{chr(ord('a') + len(disks))}")
    result = system.boot(append, log_path, disks=(*disks, export))
    if "KDUMP-TEST: export rc=0" in result.console:
        replay_journal(export)
    return result, export


def degraded_panic_boot(system: DebianSystem, append: str, log_path: Path) -> BootResult:
    """A kdumptest=panic-degraded boot of the md system: the service builds the capture image
    with both array disks present; when the guest asks ("remove-disk"), the last disk is
    pulled out of the running machine (QMP device_del) and the guest panics on the degraded
    array; the capture kernel never sees that disk."""
    root, first, second = system.disks
    with tempfile.TemporaryDirectory(prefix="qmp-") as sockdir:
        sock = Path(sockdir) / "qmp.sock"
        pulled: list[str] = []

        def pull_disk(line: str) -> None:
            if "KDUMP-TEST: remove-disk" in line and not pulled:
                qmp_command(sock, "device_del", {"id": PULLED_DISK})
                pulled.append(PULLED_DISK)

        extra = [*qmp_args(sock),
                 "-drive", f"file={second},format=raw,if=none,id={PULLED_DISK}-drive",
                 "-device", f"virtio-blk-pci,drive={PULLED_DISK}-drive,id={PULLED_DISK}"]
        return system.boot(f"kdumptest=panic-degraded {append}", log_path,
                           disks=(root, first), extra_args=extra, progress=pull_disk)


# How a layout is made from the plain system: its disks, initramfs and root= afterwards.
Prepare = Callable[[DebianSystem, Path], DebianSystem]


def _migrate_to_lvm(plain: DebianSystem, workdir: Path) -> DebianSystem:
    pv = _blank(workdir / "lvm.img", PV_MIB)
    _prepare_boot(plain, (plain.image, pv), "kdumptest=migrate-lvm kdumpdisks=/dev/vdb",
                  "migrate-lvm", workdir)
    initrd = extract(plain.image, f"/root/{plain.initrd.name}", workdir / plain.initrd.name)
    plain.image.unlink()
    return DebianSystem(disks=(pv,), vmlinuz=plain.vmlinuz, initrd=initrd, root=LVM_ROOT)


def _make_md(plain: DebianSystem, workdir: Path) -> DebianSystem:
    members = (_blank(workdir / "md1.img", MD_MEMBER_MIB), _blank(workdir / "md2.img", MD_MEMBER_MIB))
    _prepare_boot(plain, (plain.image, *members), "kdumptest=make-md kdumpdisks=/dev/vdb,/dev/vdc",
                  "make-md", workdir)
    initrd = extract(plain.image, f"/boot/{plain.initrd.name}", workdir / plain.initrd.name)
    return DebianSystem(disks=(plain.image, *members), vmlinuz=plain.vmlinuz, initrd=initrd)


def _prepare_boot(plain: DebianSystem, disks: tuple[Path, ...], append: str, mode: str,
                  workdir: Path) -> None:
    result = plain.boot(append, workdir / f"{mode}.log", disks=disks, timeout_s=PREPARE_TIMEOUT_S)
    if f"KDUMP-TEST: {mode} rc=0" not in result.console:
        raise RuntimeError(f"the {mode} boot failed (log {result.log_path}):\n{result.tail()}")
    replay_journal(plain.image)


def _prepared(cache_dir: Path, deb: Path, name: str, prepare: Prepare) -> Path:
    """The cache entry of one layout, made on first use: a directory with the disks
    (disk0.img, ...), vmlinuz, initrd, root-spec (its root=) and report.log."""
    entry = cache_dir / "debian-layouts" / f"{name}-{_key(cache_dir, deb, name)}"
    with locked(entry.with_name(f".{entry.name}.lock")):
        if entry.is_dir():
            return entry
        work = entry.with_name(f".{entry.name}.tmp")
        shutil.rmtree(work, ignore_errors=True)
        log(f"laying out the Debian system as {name} (first run only; a few minutes)")
        system = prepare(build_system(cache_dir, deb, work), work)
        report = system.boot("kdumptest=report", work / "report.log", timeout_s=PREPARE_TIMEOUT_S)
        if "KDUMP-TEST: estimate rc=" not in report.console:
            raise RuntimeError(f"the {name} system did not come up (log {report.log_path}):\n"
                               f"{report.tail()}")
        work.joinpath("root-spec").write_text(system.root)
        for index, disk in enumerate(system.disks):
            disk.rename(work / f"disk{index}.img")
        system.vmlinuz.rename(work / "vmlinuz")
        system.initrd.rename(work / "initrd")
        for leftover in work.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.name not in _ENTRY_FILES and not leftover.match("disk*.img"):
                leftover.unlink()
        work.rename(entry)
    return entry


_ENTRY_FILES = {"vmlinuz", "initrd", "root-spec", "report.log"}


def _copy(entry: Path, workdir: Path) -> Layout:
    """This test's own copy of a cached layout: the disks copied sparse, the kernel and
    initramfs used from the cache (QEMU only reads them)."""
    workdir.mkdir(parents=True, exist_ok=True)
    disks = []
    for disk in sorted(entry.glob("disk*.img")):
        run(["cp", "--sparse=always", disk, workdir / disk.name], timeout=300)
        disks.append(workdir / disk.name)
    system = DebianSystem(disks=tuple(disks), vmlinuz=entry / "vmlinuz", initrd=entry / "initrd",
                          root=(entry / "root-spec").read_text())
    return Layout(system=system, report=clean_console((entry / "report.log").read_bytes()))


def _key(cache_dir: Path, deb: Path, name: str) -> str:
    """Everything that goes into a layout: the base system, our package, the guest script and
    unit, the sizes and names, and LAYOUT_VERSION for the steps in this code."""
    digest = hashlib.sha256(name.encode())
    digest.update(debian_system.base_tarball(cache_dir).name.encode())
    _digest_package(digest, deb)
    digest.update(debian_system.GUEST_SCRIPT.read_bytes())
    digest.update(debian_system.GUEST_UNIT.encode())
    digest.update(repr((LAYOUT_VERSION, debian_system.ROOT_UUID, IMAGE_MIB, PV_MIB, MD_MEMBER_MIB,
                        LVM_ROOT)).encode())
    return digest.hexdigest()[:12]


def _digest_package(digest: Any, deb: Path) -> None:
    """What the .deb installs and runs (names, modes, contents, control files), not its time
    stamps: `make deb` stages the files afresh on every run, so the archive's bytes differ
    each time the same package is built."""
    for part in ("--ctrl-tarfile", "--fsys-tarfile"):
        archive = subprocess.run(["dpkg-deb", part, str(deb)], capture_output=True, check=True,
                                 timeout=120).stdout
        with tarfile.open(fileobj=io.BytesIO(archive)) as tar:
            for member in tar:
                digest.update(f"{member.name} {member.mode:o} {member.type!r} {member.linkname}\n"
                              .encode())
                content = tar.extractfile(member) if member.isfile() else None
                if content:
                    digest.update(content.read())


def _blank(path: Path, size_mib: int) -> Path:
    """A sparse all-zero disk image: what a new disk looks like to the guest."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as fd:
        fd.truncate(size_mib * 1024 * 1024)
    return path
