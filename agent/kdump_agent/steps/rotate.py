"""Old dumps deleted for keep_old_dumps (PREPARE_DIR) and free_disk_size (COLLECT).

rotation.py decides which dumps go; this module asks the destination for the listing,
the free space and the deletions, estimates the dump's size, and records every deletion
and its reason in the journal (the step's note) and the manifest (notes). Rotation never
fails a dump: a listing or a deletion that fails is noted and the dump goes on as it would
without rotation. The one exception is the admin's own rule: when free_disk_size cannot be
kept even at the highest dump level, no vmcore is written (see `collector_for_space`).
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path

from .. import rotation, system
from ..context import Capture
from ..deadlines import ESTIMATE_SHARE, ROTATION_SECONDS, collect_seconds
from ..errors import CommandFailed, KdumpError
from ..layout import DMESG, dump_dir_name, parse_dump_dir_name
from ..rotation import MAX_DUMP_LEVEL, MIB, ExistingDump
from ..targets.base import DumpState

log = logging.getLogger("kdump-agent")

DRY_RUN_NAME = "kdump-agent-dry-run"  # never written: makedumpfile --dry-run only names it
# The file comes out a few KiB larger than the dry run's `Write bytes` (padding; 4 KiB on a
# 40 MB dump of the test vmcore): what is added to it.
DRY_RUN_SLACK = MIB


def current_stamp(host: str, when: time.struct_time) -> str:
    """The time stamp of this capture's dump directory (and of a second attempt's, -2)."""
    parsed = parse_dump_dir_name(dump_dir_name(host, when))
    assert parsed is not None, "layout.dump_dir_name makes names layout.parse_dump_dir_name reads"
    return parsed.when


def _note(state: DumpState, text: str) -> str:
    log.info("rotation: %s", text)
    state.notes.append(text)
    return text


def delete(capture: Capture, doomed: Sequence[ExistingDump], why: str, give_up_at: float) -> list[str]:
    """Delete these dumps in order, each noted with `why`; stop at the first failure or when
    time is up. Returns what was deleted. Never raises."""
    assert capture.destination is not None
    deleted: list[str] = []
    for dump in doomed:
        if time.monotonic() >= give_up_at:
            _note(capture.dump, f"stopped deleting old dumps after {ROTATION_SECONDS:g} s; "
                                f"{len(doomed) - len(deleted)} left that {why} would delete")
            break
        try:
            capture.destination.remove_dump(capture.dump, dump.name)
        except (KdumpError, OSError) as error:
            _note(capture.dump, f"could not delete old dump {dump.name}: {error}")
            break
        deleted.append(dump.name)
        _note(capture.dump, f"deleted old dump {dump.describe()}: {why}")
    return deleted


def _listing(capture: Capture) -> tuple[str, list[ExistingDump]] | None:
    """This host's address and the dump directories in `path`, or None (noted) when the
    target has none or cannot be listed."""
    assert capture.destination is not None
    host = capture.destination.dump_host(capture.dump)
    if host is None:
        return None
    try:
        return host, capture.destination.old_dumps(capture.dump)
    except (KdumpError, OSError) as error:
        _note(capture.dump, f"cannot list the old dumps: {error}; none deleted")
        return None


def keep_old_dumps(capture: Capture, when: time.struct_time) -> str | None:
    """keep_old_dumps N, before the new dump directory is made: this host keeps N - 1 old
    dumps. A note for the journal, or None when the setting is off."""
    config = capture.config
    keep = config.keep_old_dumps if config else 0
    if not config or not keep:
        return None
    started = time.monotonic()
    listing = _listing(capture)
    if listing is None:
        return "keep_old_dumps: nothing to rotate"
    host, dumps = listing
    doomed = rotation.over_count(dumps, host, current_stamp(host, when), keep)
    if not doomed:
        return f"keep_old_dumps {keep}: nothing to delete"
    mine = sum(dump.host == host for dump in dumps)
    why = f"keep_old_dumps {keep} ({mine} old dumps of {host} in {config.path})"
    deleted = delete(capture, doomed, why, started + ROTATION_SECONDS)
    return f"keep_old_dumps {keep}: deleted {', '.join(deleted) or 'nothing'}"


def _vmcore_size(vmcore: str) -> int:
    try:
        return os.stat(vmcore).st_size
    except OSError:
        return 0


def estimate(capture: Capture, core: Sequence[str], dumps: list[ExistingDump], host: str,
             timeout: float) -> tuple[int, str]:
    """The dump's size in bytes with this collector, and how it was found: makedumpfile's
    dry run (`Write bytes` of --show-stats, plus DRY_RUN_SLACK: it filters and compresses
    without writing), else the largest earlier dump of this host at this dump level, else the size
    of /proc/vmcore (an upper bound). cp and cat copy /proc/vmcore whole."""
    vmcore = capture.paths.vmcore
    level = rotation.dump_level(core)
    if level is None:
        return _vmcore_size(vmcore), f"the size of {vmcore}, which {os.path.basename(core[0])} copies whole"
    dest = Path(capture.paths.scratch) / DRY_RUN_NAME
    program, *options = core
    argv = [program, "--dry-run", "--show-stats", *(o for o in options if o != "-F"), vmcore, str(dest)]
    try:
        dest.unlink(missing_ok=True)  # makedumpfile refuses a destination that exists
        result = system.run(argv, timeout=timeout, check=True)
        written = rotation.written_bytes(result.stdout.decode(errors="replace"))
        if written is not None:
            return written + DRY_RUN_SLACK, f"makedumpfile --dry-run at dump level {level}"
        log.warning("makedumpfile --dry-run reported no size")
    except (CommandFailed, OSError) as error:
        log.warning("makedumpfile --dry-run gave no estimate: %s", error)
    earlier = rotation.earlier_size(dumps, host, level)
    if earlier is not None:
        return earlier, f"the largest earlier dump of {host} at dump level {level}"
    return rotation.upper_bound(_vmcore_size(vmcore)), f"the size of {vmcore} (an upper bound)"


def collector_for_space(capture: Capture) -> tuple[str, ...]:
    """free_disk_size M, before the collector runs: the core_collector that leaves M MiB
    free once the dump is written, deleting old dumps of this host first if that is needed
    (oldest and incomplete first), then trying the highest dump level (31).

    When nothing would leave M MiB free, the vmcore is not written: KdumpError, so COLLECT
    fails, the failure action runs, and the record says that only vmcore-dmesg.txt was
    kept and why. A target whose free space is unknown is dumped as configured."""
    assert capture.config is not None and capture.destination is not None
    config, state = capture.config, capture.dump
    core = config.core_collector
    if not config.free_disk_size:
        return core
    started = time.monotonic()
    try:
        free = capture.destination.free_bytes(state)
    except (KdumpError, OSError) as error:
        _note(state, f"free_disk_size: cannot tell the free space ({error}); dumping as configured")
        return core
    if free is None:
        _note(state, "free_disk_size: the target does not tell its free space; dumping as configured")
        return core
    keep_free = config.free_disk_size * MIB
    bound = rotation.upper_bound(_vmcore_size(capture.paths.vmcore))
    if free - bound >= keep_free:
        log.info("free_disk_size: %d MiB free, the dump takes at most %d MiB", free // MIB, bound // MIB)
        return core
    listing = _listing(capture) or (capture.destination.dump_host(state) or "", [])
    host, dumps = listing
    stamp = current_stamp(host, time.localtime(capture.started_wall))
    share = ESTIMATE_SHARE * collect_seconds(capture.paths.vmcore)
    level = rotation.dump_level(core)
    choices = [core]
    if level is not None and level != MAX_DUMP_LEVEL:
        choices.append(rotation.with_dump_level(core, MAX_DUMP_LEVEL))
    for choice in choices:
        needs, source = estimate(capture, choice, dumps, host, share)
        _note(state, f"free_disk_size {config.free_disk_size}: the dump at dump level "
                     f"{rotation.dump_level(choice)} takes about {needs / MIB:.1f} MiB ({source}); "
                     f"{free / MIB:.1f} MiB free")
        doomed = rotation.plan_space(dumps, host, stamp, free=free, keep_free=keep_free, needs=needs)
        if doomed is None:
            continue
        why = f"free_disk_size {config.free_disk_size} MiB"
        delete(capture, doomed, why, started + ROTATION_SECONDS)
        if choice is not core:
            _note(state, f"free_disk_size: saving at dump level {MAX_DUMP_LEVEL} instead of {level} "
                         "to leave the space free")
        return choice
    raise KdumpError(f"free_disk_size {config.free_disk_size} MiB: the vmcore would leave less than that "
                     f"free ({free / MIB:.1f} MiB free, even with every old dump of {host} deleted and at "
                     f"the highest dump level); no vmcore was written: {DMESG} is all this dump keeps")
