"""Which old dumps go: keep_old_dumps and free_disk_size, as a pure policy.

The destinations list what is in `path` (targets/base.py, `old_dumps`) and delete what
this module picks; nothing here touches a disk or a server, so every rule is tested on
plain data. The rules, in the order they protect:

- Only a dump directory of ours is ever a candidate: its name is `<ip>-<stamp>[-N]`
  (layout.py) and it holds nothing but regular files with the layout's names (final or
  partial). A directory with anything else in it (an admin's notes, a subdirectory, a
  link) is someone's work, and it stays. RHEL's kdump makes the same layout, so its dumps
  in the same `path` count as ours.
- Only this host's dumps: the same `<ip>` the new dump directory gets.
- Never the dump being made: every directory of this capture's own time stamp (a second
  attempt, dump_to_rootfs, gets `-2` on the same stamp) is left alone.
- Incomplete dumps (no `vmcore` under its final name) go before complete ones, and within
  each, the oldest first.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from .layout import DUMP_FILES, FLAT_SUFFIX, MANIFEST, VMCORE, parse_dump_dir_name, partial

MIB = 1 << 20
MANIFEST_READ_LIMIT = 1 << 20  # a manifest is a few KiB; more is not one of ours
# makedumpfile's dump level that excludes every kind of page it can (zero, cache, private
# cache, user data, free): the smallest dump that still holds the kernel's own memory.
MAX_DUMP_LEVEL = 31


@dataclass(frozen=True)
class Entry:
    """One thing in a dump directory, as lstat shows it."""

    name: str
    size: int
    regular: bool  # a regular file (not a directory, a link or anything else)


@dataclass(frozen=True)
class ExistingDump:
    """A dump directory of ours found in `path`."""

    name: str
    host: str  # the <ip> of its name
    stamp: str  # YYYY-MM-DD-HH:MM:SS: sorts as it reads
    suffix: int  # 1, or N of -N
    complete: bool  # it holds a vmcore under its final name
    size: int  # bytes its files hold: what deleting it frees
    vmcore_size: int | None  # the vmcore's size, if it has one
    dump_level: int | None  # makedumpfile's -d from its record, if the record says

    @property
    def order(self) -> tuple[bool, str, int]:
        """Deletion order: incomplete before complete, then oldest first."""
        return (self.complete, self.stamp, self.suffix)

    def describe(self) -> str:
        state = "complete" if self.complete else "incomplete"
        return f"{self.name} ({state}, {self.size / MIB:.1f} MiB)"


def examine(name: str, entries: Sequence[Entry], manifest: bytes | None) -> ExistingDump | None:
    """The dump a directory listing shows, or None when it is not a dump directory of ours.

    `manifest` is the start of its kdump-agent.json, if it has one; a record that cannot be
    read only means its dump level is unknown.
    """
    parsed = parse_dump_dir_name(name)
    if parsed is None or any(not e.regular or e.name not in DUMP_FILES for e in entries):
        return None
    host, stamp, suffix = parsed.host, parsed.when, parsed.number
    sizes = {e.name: e.size for e in entries}
    vmcore = next((sizes[n] for n in (VMCORE, VMCORE + FLAT_SUFFIX) if n in sizes), None)
    return ExistingDump(name=name, host=host, stamp=stamp, suffix=suffix, complete=vmcore is not None,
                        size=sum(sizes.values()), vmcore_size=vmcore,
                        dump_level=recorded_dump_level(manifest) if MANIFEST in sizes else None)


def removal_order(names: Iterable[str]) -> list[str]:
    """The order a dump's files are deleted in: the vmcore first (it is the space, and a
    deletion cut short leaves an incomplete dump, the next to go), the record last (what is
    left still says what it was)."""
    vmcores = {VMCORE, partial(VMCORE), VMCORE + FLAT_SUFFIX}
    return sorted(names, key=lambda name: 0 if name in vmcores else 2 if name == MANIFEST else 1)


def recorded_dump_level(manifest: bytes | None) -> int | None:
    """The -d its collector ran with, from a record's collector argv; None if unknown."""
    if not manifest or len(manifest) > MANIFEST_READ_LIMIT:
        return None
    try:
        record = json.loads(manifest)
        argv = record["collector"]["argv"]
    except (ValueError, TypeError, KeyError):
        return None
    if not isinstance(argv, list) or not argv or not all(isinstance(word, str) for word in argv):
        return None
    return dump_level(argv)


def dump_level(argv: Sequence[str]) -> int | None:
    """makedumpfile's dump level in an argv (`-d 31`, `-d31`; 0 without -d); None for
    another collector, whose output is the whole vmcore."""
    if not argv or not argv[0].endswith("makedumpfile"):
        return None
    for index, word in enumerate(argv):
        value = argv[index + 1] if word == "-d" and index + 1 < len(argv) else (
            word[2:] if word.startswith("-d") and word[2:3].isdigit() else None)
        first = (value or "").split(",")[0]  # `-d 1,31`: makedumpfile tries 1 first
        if first.isdigit():
            return int(first)
    return 0


def with_dump_level(argv: Sequence[str], level: int) -> tuple[str, ...]:
    """The collector's argv at another dump level."""
    out: list[str] = []
    skip = False
    for index, word in enumerate(argv):
        if skip:
            skip = False
            continue
        if word == "-d" and index + 1 < len(argv) and argv[index + 1][:1].isdigit():
            skip = True
            continue
        if word.startswith("-d") and word[2:3].isdigit():
            continue
        out.append(word)
    return (*out, "-d", str(level))


def _deletable(dumps: Iterable[ExistingDump], host: str, current_stamp: str) -> list[ExistingDump]:
    """This host's dumps other than the one being made, in deletion order."""
    return sorted((d for d in dumps if d.host == host and d.stamp != current_stamp), key=lambda d: d.order)


def over_count(dumps: Iterable[ExistingDump], host: str, current_stamp: str, keep: int) -> list[ExistingDump]:
    """keep_old_dumps: the dumps to delete so that this host keeps `keep` dumps counting the
    new one (keep - 1 old ones); none for keep 0."""
    if keep <= 0:
        return []
    candidates = _deletable(dumps, host, current_stamp)
    return candidates[:max(0, len(candidates) - (keep - 1))]


def plan_space(dumps: Iterable[ExistingDump], host: str, current_stamp: str, *, free: int,
               keep_free: int, needs: int) -> list[ExistingDump] | None:
    """free_disk_size: the fewest old dumps, in deletion order, whose deletion leaves at
    least `keep_free` bytes free once a dump of `needs` bytes is written ([] when it fits
    as it is); None when even deleting all of them would not."""
    available, chosen = free, []
    for dump in _deletable(dumps, host, current_stamp):
        if available - needs >= keep_free:
            break
        chosen.append(dump)
        available += dump.size
    return chosen if available - needs >= keep_free else None


def upper_bound(vmcore_size: int) -> int:
    """The most a makedumpfile dump of a /proc/vmcore this size can take: every page kept
    and stored uncompressed, plus its 24-byte page descriptor, the bitmaps and the header."""
    return vmcore_size + vmcore_size // 128 + MIB


def earlier_size(dumps: Iterable[ExistingDump], host: str, level: int | None) -> int | None:
    """The largest vmcore of this host's complete earlier dumps made at `level`, as an
    estimate of the next one's size; at the highest level every earlier dump's size bounds
    it from above. None without such a dump."""
    sizes = [d.vmcore_size for d in dumps if d.host == host and d.complete and d.vmcore_size is not None
             and (d.dump_level == level or level == MAX_DUMP_LEVEL)]
    return max(sizes) if sizes else None


def written_bytes(report: str) -> int | None:
    """The dump's size in makedumpfile's report (`--show-stats`): `Write bytes     : 41130632`."""
    for line in report.splitlines():
        key, colon, value = line.partition(":")
        if colon and key.strip() == "Write bytes" and value.strip().isdigit():
            return int(value.strip())
    return None
