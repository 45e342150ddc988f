"""Two full Debian systems for the bench, on the same base and disk as debian_system's:
one with Debian's own kdump-tools, installed as an admin installs it, and one with our
package (what tests/e2e/test_full_system.py boots).

The peer: `apt-get install kdump-tools` in the chroot (pinned to bookworm's version),
`USE_KDUMP=1` in /etc/default/kdump-tools and its service enabled; `crashkernel=` comes
with each boot's command line. Each system's service builds its capture initramfs at its
first boot with a reservation (kdump-tools' `kdump-config load` runs mkinitramfs with
MODULES=dep; ours runs dracut), a minute or more under TCG. So that first boot
(kdumptest=armed, peer_guest.sh) is done once and the disk it leaves is cached, keyed by
everything that went into it; every bench run boots its own sparse copy.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import debian_layouts, debian_system
from .cache import locked
from .commands import log, run
from .debian_system import DebianSystem, finish_system, unpack_base
from .disks import extract, replay_journal

PEER_PACKAGE = "kdump-tools"
PEER_VERSION = "1:1.8.1"  # Debian 12's
GUEST_SCRIPT = Path(__file__).with_name("peer_guest.sh")
ARM_CRASHKERNEL_MIB = 384  # the first boot's reservation: only the capture initramfs is made there
ARM_TIMEOUT_S = 1800
# Bump when the way a system is made changes here (the guest script is keyed by content).
SYSTEM_VERSION = 1
_ENTRY_FILES = {"vmlinuz", "initrd", "armed.log", "facts.json", "disk0.img"}


@dataclass(frozen=True)
class FullSystem:
    """An armed system as cached (boot only its fresh_copy), and facts about it: the
    package's version, the kernel, the capture initramfs its first boot made (the console
    of that boot is armed.log beside its disk)."""

    system: DebianSystem
    facts: dict[str, Any]


def peer_system(cache_dir: Path) -> FullSystem:
    """The system with Debian's kdump-tools, armed once (its kdump initrd built)."""
    return _cached(_prepared(cache_dir, "kdump-tools", None))


def ours_system(cache_dir: Path, deb: Path) -> FullSystem:
    """The system with our package, armed once (the capture initramfs built by our service)."""
    return _cached(_prepared(cache_dir, "kdump-agent", deb))


def fresh_copy(full: FullSystem, workdir: Path) -> DebianSystem:
    """A sparse copy of the system's disk for one boot: no boot sees an earlier one's dump,
    and the cached disk stays as its first boot left it."""
    workdir.mkdir(parents=True, exist_ok=True)
    disk = workdir / "disk0.img"
    run(["cp", "--sparse=always", full.system.image, disk], timeout=300)
    return DebianSystem(disks=(disk,), vmlinuz=full.system.vmlinuz, initrd=full.system.initrd)


def _build_peer(cache_dir: Path, workdir: Path) -> DebianSystem:
    tree = unpack_base(cache_dir, workdir)
    shutil.copy("/etc/resolv.conf", tree / "etc" / "resolv.conf")  # apt in the chroot needs DNS
    # No daemon starts inside the chroot (invoke-rc.d asks policy-rc.d).
    policy = tree / "usr" / "sbin" / "policy-rc.d"
    policy.write_text("#!/bin/sh\nexit 101\n")
    policy.chmod(0o755)
    run(["chroot", tree, "apt-get", "update", "-q"], timeout=900)
    run(["chroot", tree, "env", "DEBIAN_FRONTEND=noninteractive", "apt-get", "install", "-y", "-q",
         f"{PEER_PACKAGE}={PEER_VERSION}"], timeout=1800)
    policy.unlink()
    run(["chroot", tree, "apt-get", "clean"])
    defaults = tree / "etc" / "default" / "kdump-tools"
    text = defaults.read_text()
    if "\nUSE_KDUMP=" not in f"\n{text}":
        raise RuntimeError(f"{defaults} has no USE_KDUMP= line:\n{text}")
    defaults.write_text("".join("USE_KDUMP=1\n" if line.startswith("USE_KDUMP=") else line
                                for line in text.splitlines(keepends=True)))
    run(["chroot", tree, "systemctl", "enable", "kdump-tools.service"])
    return finish_system(tree, workdir, GUEST_SCRIPT)


def _facts(kind: str, system: DebianSystem, console: str, workdir: Path) -> dict[str, Any]:
    """The package's version, the kernel, and the capture initramfs the first boot made
    (compressed and unpacked), read from the disk on the host."""
    initrd_line = next((line for line in console.splitlines() if "KDUMP-TEST: capture initrd " in line), "")
    initrd_path = initrd_line.partition("KDUMP-TEST: capture initrd ")[2].strip()
    if not initrd_path:
        raise RuntimeError(f"the {kind} system's first boot named no capture initramfs")
    initrd = extract(system.image, initrd_path, workdir / "capture-initrd.img")
    run(["unmkinitramfs", initrd, workdir / "unpacked"], timeout=300)
    unpacked = run(["du", "-sb", workdir / "unpacked"])
    status = extract(system.image, "/var/lib/dpkg/status", workdir / "dpkg-status")
    version = _package_version(status.read_text(), kind)
    return {"package": kind, "version": version, "kernel": system.vmlinuz.name.removeprefix("vmlinuz-"),
            "capture_initrd": initrd_path, "capture_initrd_bytes": initrd.stat().st_size,
            "capture_initrd_unpacked_bytes": int(unpacked.stdout.split()[-2])}


def _package_version(status: str, package: str) -> str:
    for stanza in status.split("\n\n"):
        fields = dict(line.split(": ", 1) for line in stanza.splitlines() if ": " in line)
        if fields.get("Package") == package:
            return fields["Version"]
    raise RuntimeError(f"{package} is not installed in the system")


def _prepared(cache_dir: Path, kind: str, deb: Path | None) -> Path:
    """The cache entry of one armed system, made on first use: its disk (disk0.img), vmlinuz,
    initrd, the first boot's console (armed.log) and facts.json."""
    entry = cache_dir / "bench-systems" / f"{kind}-{_key(cache_dir, kind, deb)}"
    with locked(entry.with_name(f".{entry.name}.lock")):
        if entry.is_dir():
            return entry
        work = entry.with_name(f".{entry.name}.tmp")
        shutil.rmtree(work, ignore_errors=True)
        log(f"building and arming the Debian system with {kind} (first run only; minutes)")
        system = (_build_peer(cache_dir, work) if deb is None
                  else debian_system.build_system(cache_dir, deb, work, guest_script=GUEST_SCRIPT))
        armed = system.boot(f"crashkernel={ARM_CRASHKERNEL_MIB}M kdumptest=armed", work / "armed.log",
                            timeout_s=ARM_TIMEOUT_S)
        if "KDUMP-TEST: loaded" not in armed.console or "KDUMP-TEST: capture initrd " not in armed.console:
            raise RuntimeError(f"the {kind} system's service did not arm kdump at its first boot "
                               f"(log {armed.log_path}):\n{armed.tail()}")
        replay_journal(system.image)
        facts = _facts(kind, system, armed.console, work)
        (work / "facts.json").write_text(json.dumps(facts, indent=2) + "\n")
        system.image.rename(work / "disk0.img")
        system.vmlinuz.rename(work / "vmlinuz")
        system.initrd.rename(work / "initrd")
        for leftover in work.iterdir():
            if leftover.is_dir():
                shutil.rmtree(leftover)
            elif leftover.name not in _ENTRY_FILES:
                leftover.unlink()
        work.rename(entry)
    return entry


def _cached(entry: Path) -> FullSystem:
    """The cache entry as a system: boots never run on its disk, only on fresh_copy's."""
    return FullSystem(system=DebianSystem(disks=(entry / "disk0.img",), vmlinuz=entry / "vmlinuz",
                                          initrd=entry / "initrd"),
                      facts=json.loads((entry / "facts.json").read_text()))


def _key(cache_dir: Path, kind: str, deb: Path | None) -> str:
    """Everything that goes into an armed system: the base system, the package (ours by its
    contents, the peer by name and pinned version), the driver and unit, the arming boot's
    reservation and SYSTEM_VERSION for the steps in this code."""
    digest = hashlib.sha256(kind.encode())
    digest.update(debian_system.base_tarball(cache_dir).name.encode())
    if deb is None:
        digest.update(f"{PEER_PACKAGE}={PEER_VERSION}".encode())
    else:
        debian_layouts._digest_package(digest, deb)  # the same key of a package as the layouts
    digest.update(GUEST_SCRIPT.read_bytes())
    digest.update(debian_system.GUEST_UNIT.encode())
    digest.update(repr((SYSTEM_VERSION, debian_system.ROOT_UUID, debian_system.IMAGE_MIB,
                        ARM_CRASHKERNEL_MIB)).encode())
    return digest.hexdigest()[:12]
