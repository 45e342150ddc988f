"""How large a crashkernel= reservation this machine needs, shown as its parts.

Everything the capture uses comes out of the reservation: the capture kernel itself and
what it allocates as it runs, its initramfs unpacked into RAM (kdump-agent's program
included: mkinitrd lays it out unpacked, host/programdir.py), kdump-agent's own heap and
the collector. Their sum, or the seed's rule when that is larger,
rounded up to 16M, is the recommendation. The parts that can be read from this machine's
files are (imagesize.py); the rest are figures `make bench` measured, kept below. The
kernel's run-time share is calibrated so that the benchmark's own guest comes out one
16M step above the floor measured there.

The functions here do no I/O; the caller measures the files and passes the figures in.
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

from ..config import TargetKind

MIB = 1 << 20
GIB = 1 << 30
TIB = 1 << 40
PAGE = 4096
ROUND_TO = 16 * MIB  # the step `make bench` bisects in and admins write

# ---- Measured figures, the one place they are kept -------------------------------------
# From `make bench` (bench/run.py), bench/results/latest.json of 2026-11-29T04:05 (Debian 12
# cloud kernel 6.1.0-56, 1 GiB guest, QEMU):
# - kdump-agent's peak RSS: footprint.agent_peak_rss_kib 20536 (a dump to a local disk) and
#   ssh.agent_peak_rss_kib 43596 (paramiko, cryptography and pyroute2 loaded);
# - (its one-file unpack into $TMPDIR, ~23 MiB then, is gone: the program is in the image,
#   counted with the initramfs, 12 MiB for a local dump and 25 MiB with SSH's libraries;)
# - the smallest reservation that dumps, measured again on 2026-12-01 (kernel 6.1.0-57, 8M
#   steps) once the program was laid out in the image, the image zstd and the initramfs
#   root ramfs (rootfstype=ramfs: no tmpfs cap at half of RAM): 128M for a local dump
#   (120M runs out of memory unpacking the image) and 152M over SSH (144M runs out of
#   memory in the agent). The parts below overlap (the agent's RSS includes libraries
#   mapped from the image; the compressed image is freed once unpacked), so they add up to
#   138 MiB for the local guest: the run-time share keeps it one 16M step above its floor,
#   the margin an admin wants, and SSH 24M above its floor.
AGENT_RSS_LOCAL = 20536 * 1024
AGENT_RSS_NETWORK = 43596 * 1024  # NFS is not measured apart: it loads the same network stack
# Bonds, VLANs and bridges (`bench/run.py links-memfree`, harness.netlab), 176M, 2026-12-01,
# MemFree when makedumpfile starts, SSH, two runs: one plain NIC 23316 / 21568 kB; the same
# with bonding and 8021q loaded (extra_modules) 18592 / 18584 kB; a VLAN on that NIC 18308 /
# 18168 kB; a VLAN on a balance-xor bond of two NICs 17692 / 17684 kB (floor 176M, against
# 160M for the plain NIC). The modules cost most of it; the larger difference is counted,
# whole, for any stack of links.
LINKS_RUNTIME = 5624 * 1024
KERNEL_RUNTIME = 12 * MIB
# Stand-ins when a file is missing, from the same run: the benchmark's kernel and image.
KERNEL_STAND_IN = 53_968_896
INITRAMFS_STAND_IN = 34_828_800
# makedumpfile, from the seed article (its section 4): 2 bits of bitmap per 4 KiB page of the
# crashed machine's RAM, plus about 20 MB to copy with.
MAKEDUMPFILE_BASE = 20 * MIB
# The seed's crashkernel=auto: 128M, plus 64M per TiB of RAM.
SEED_BASE = 128 * MIB
SEED_PER_TIB = 64 * MIB
# RHEL 9's default crashkernel= on x86-64, for comparison.
RHEL9_DEFAULT = "1G-4G:192M,4G-64G:256M,64G-:512M"


@dataclass(frozen=True)
class Part:
    """One consumer of the reservation."""

    name: str
    size: int
    source: str  # how the figure was found, so the admin can judge it


@dataclass(frozen=True)
class Estimate:
    """The parts, the rules to compare them with, and the resulting recommendation."""

    ram: int
    parts: tuple[Part, ...]
    reserved: int | None  # bytes reserved now; None: the kernel cannot reserve any

    @property
    def total(self) -> int:
        return sum(part.size for part in self.parts)

    @property
    def seed_rule(self) -> int:
        return seed_rule(self.ram)

    @property
    def rhel9(self) -> int:
        return rhel_table_size(RHEL9_DEFAULT, self.ram)

    @property
    def recommended(self) -> int:
        """The larger of the parts' sum and the seed's rule, rounded up to 16M."""
        return round_up(max(self.total, self.seed_rule))


def round_up(size: int, step: int = ROUND_TO) -> int:
    return -(-size // step) * step


def seed_rule(ram: int) -> int:
    """The seed article's crashkernel=auto: 128M plus 64M per TiB of RAM."""
    return SEED_BASE + math.ceil(SEED_PER_TIB * ram / TIB)


def makedumpfile_need(ram: int) -> int:
    """makedumpfile's bitmap (2 bits per 4 KiB page of RAM) plus its 20 MB to copy with."""
    return math.ceil(ram / PAGE * 2 / 8) + MAKEDUMPFILE_BASE


_SIZE = re.compile(r"([0-9]+)([KMGT]?)")
_UNITS = {"": 1, "K": 1 << 10, "M": MIB, "G": GIB, "T": TIB}


def _bytes(text: str) -> int:
    match = _SIZE.fullmatch(text)
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1)) * _UNITS[match.group(2)]


def rhel_table_size(table: str, ram: int) -> int:
    """What a `start-end:size,...` crashkernel= value reserves on a machine with ram bytes.

    As the kernel reads it: the first range with start <= ram < end; none: nothing reserved.
    """
    for entry in table.split(","):
        span, size = entry.split(":")
        start, end = span.split("-")
        if _bytes(start) <= ram and (not end or ram < _bytes(end)):
            return _bytes(size)
    return 0


def agent_part(kind: TargetKind | None) -> Part:
    """kdump-agent's own peak memory for the config's kind of target."""
    network = kind in (TargetKind.SSH, TargetKind.NFS)
    rss = AGENT_RSS_NETWORK if network else AGENT_RSS_LOCAL
    what = "network dump" if network else "local dump"
    return Part("kdump-agent", rss, f"peak RSS {mib(rss)} ({what}), from `make bench`")


def links_part(modules: tuple[str, ...]) -> Part:
    """The links' modules loaded and the links built (LINKS_RUNTIME)."""
    return Part("network links", LINKS_RUNTIME,
                f"{', '.join(modules)} loaded and the links built, from `make bench` (a VLAN on a bond)")


def runtime_part() -> Part:
    """What the capture kernel allocates as it runs, beyond its image (see KERNEL_RUNTIME)."""
    return Part("kernel at run time", KERNEL_RUNTIME,
                "slab, udev, dracut's init, and one 16M step of margin over `make bench`'s floor")


def makedumpfile_part(ram: int) -> Part:
    return Part("makedumpfile", makedumpfile_need(ram),
                f"2 bits per 4 KiB page of {gib(ram)} RAM + {mib(MAKEDUMPFILE_BASE)}")


def mib(size: int) -> str:
    return f"{math.ceil(size / MIB)} MiB"


def gib(size: int) -> str:
    return f"{size / GIB:.1f} GiB"


def megabytes(size: int) -> str:
    """A size the way crashkernel= takes it: 144M."""
    return f"{size // MIB}M"


def report(estimate: Estimate) -> list[str]:
    """What `kdump-agent estimate` prints."""
    width = max(len(part.name) for part in estimate.parts)
    lines = [f"{part.name:<{width}}  {mib(part.size):>8}  {part.source}" for part in estimate.parts]
    ram = gib(estimate.ram)
    lines += [
        f"{'total':<{width}}  {mib(estimate.total):>8}",
        f"{'seed rule':<{width}}  {mib(estimate.seed_rule):>8}  128M + 64M per TiB of {ram} RAM",
        f"{'RHEL 9':<{width}}  {mib(estimate.rhel9) if estimate.rhel9 else 'none':>8}  its default "
        f"{RHEL9_DEFAULT}, for comparison" + ("" if estimate.rhel9 else f" (nothing for {ram})"),
        "",
        (f"crashkernel={megabytes(estimate.recommended)}  (the larger of the total and the seed rule, "
        "rounded up to 16M)"),
    ]
    reserved = estimate.reserved
    if reserved is None:
        lines.append("reserved now: nothing (this kernel has no crash kexec support)")
    elif reserved == 0:
        lines.append("reserved now: nothing")
    else:
        verdict = "enough" if reserved >= estimate.recommended else "TOO SMALL"
        lines.append(f"reserved now: {megabytes(reserved)} ({verdict})")
    return lines


def grub_advice(size: int, grub_defaults: str | None, grub_path: str) -> list[str]:
    """How to reserve size with GRUB on Debian: the edited line, then update-grub."""
    current = ""
    for line in (grub_defaults or "").splitlines():
        match = re.fullmatch(r"\s*GRUB_CMDLINE_LINUX_DEFAULT=(['\"]?)(.*)\1\s*", line)
        if match:
            current = match.group(2)
    words = [w for w in current.split() if not w.startswith("crashkernel=")]
    wanted = " ".join([*words, f"crashkernel={megabytes(size)}"])
    return [f"To reserve it (GRUB on Debian): in {grub_path} set",
            f'  GRUB_CMDLINE_LINUX_DEFAULT="{wanted}"',
            "then run `update-grub` and reboot."]
