"""COLLECT: run core_collector on /proc/vmcore into what the destination gives it.

Three kinds of sink: a file in a local or NFS directory, a device that takes its flattened
stream from the first byte (raw), or a consumer that reads the stream as it comes (SSH: no
copy of the dump is held in the capture kernel).

makedumpfile and cp write the file themselves, with seeks: makedumpfile's page
descriptors precede the page data in the file but are finished last, and its sub-header
is rewritten at the end, so the bytes never pass in file order and FINALIZE reads the
vmcore back for its sha256. A collector that writes to its standard output (cat) has its
output written here, in order, and hashed on the way: nothing reads that dump back.
With free_disk_size the collector may run at a higher dump level, or not at all, after old
dumps were deleted to make room (steps/rotate.py).
"""

from __future__ import annotations

import os
import resource
import subprocess
import time
from collections.abc import Sequence
from pathlib import Path
from typing import IO, BinaryIO, cast

from .. import memory, system
from ..context import Capture
from ..errors import CommandFailed
from ..targets.base import DeviceSink, DumpState, FileRecord, FileSink, StreamSink
from .rotate import collector_for_space


def collector_argv(core_collector: Sequence[str], vmcore: str, dest: str | None) -> tuple[list[str], bool]:
    """The argv to run and whether its standard output is the dump.

    As RHEL's kdump does: for a file target (dest given) `-F` is dropped, so the file on
    disk is a ready kdump-compressed vmcore; for a stream (dest None: a raw device, an SSH
    server) `-F` is added, so the records can be put together again on the other side.

    Unlike RHEL's, makedumpfile gets no `--num-threads` of ours when the capture kernel has
    several CPUs (an admin may write one into core_collector). Debian 12's makedumpfile 1.7.2
    was measured (`bench/run.py threads`, 2 CPUs and --num-threads=2 against one CPU, TCG):
    the -d 31 dump of a 1 GiB guest took 10.2 s against 0.6 s, the -d 1 dump of a 4 GiB one
    502 s against 68 s (the 1 GiB -d 1 one 12.1 s against 8.7 s on 2026-12-02), and threaded
    dumps often abort as they end ("libgcc_s.so.1 must be installed for pthread_exit to
    work"). On this host's own CPUs too, -l -d 31 of a 146 MiB
    vmcore took 7 s with two threads against 0.2 s without.
    """
    program, *options = core_collector
    name = os.path.basename(program)
    if name == "makedumpfile":
        if dest is None:
            return [program, *options, *([] if "-F" in options else ["-F"]), vmcore], True
        return [program, *[o for o in options if o != "-F"], vmcore, dest], False
    if name == "cat" or dest is None:
        return [program, *options, vmcore], True
    return [program, *options, vmcore, dest], False


def collect(capture: Capture, timeout: float) -> str:
    assert capture.config is not None and capture.destination is not None, "earlier states ran"
    state, vmcore = capture.dump, capture.paths.vmcore
    started = time.monotonic()
    core = collector_for_space(capture)
    timeout -= time.monotonic() - started
    sink = capture.destination.sink(state)
    if isinstance(sink, FileSink):
        argv, to_stdout = collector_argv(core, vmcore, str(sink.path))
        if to_stdout:
            return _write_collector(state, argv, sink.path, timeout)
        # The collector's progress goes to the console, where the admin watches.
        return _run_collector(state, argv, timeout, None)
    if isinstance(sink, DeviceSink):
        with open(sink.device, "r+b", buffering=0) as out:
            return _run_collector(state, _stream_argv(core, vmcore), timeout, out.fileno())
    return _stream_collector(state, _stream_argv(core, vmcore), sink, timeout)


def _stream_argv(core: Sequence[str], vmcore: str) -> list[str]:
    return collector_argv(core, vmcore, None)[0]


def _stream_collector(state: DumpState, argv: list[str], sink: StreamSink, timeout: float) -> str:
    """The flattened stream read as it comes by the sink's consumer."""
    _before_collector(state, argv)

    def send(out: IO[bytes]) -> object:
        state.transfer = sink.consume(cast(BinaryIO, out))
        return state.transfer

    try:
        _, result = system.run_streaming(argv, send, timeout=timeout)
    except CommandFailed as error:
        state.collector_returncode = error.returncode
        raise
    _after_collector(state, argv, result)
    transfer = state.transfer
    assert transfer is not None
    return f"{sink.where}:{transfer.path}: {transfer.size} bytes in {transfer.seconds:.1f} s"


def _write_collector(state: DumpState, argv: list[str], path: Path, timeout: float) -> str:
    """The collector's standard output written into path here, hashed as it is written."""
    _before_collector(state, argv)
    try:
        (size, sha256), result = system.run_streaming(argv, lambda out: system.write_hashed(out, path),
                                                      timeout=timeout)
    except CommandFailed as error:
        state.collector_returncode = error.returncode
        raise
    _after_collector(state, argv, result)
    state.written = FileRecord(path.name, size, sha256)
    return f"{argv[0]} exited 0: {size} bytes written and hashed"


def _run_collector(state: DumpState, argv: list[str], timeout: float, stdout: int | None) -> str:
    _before_collector(state, argv)
    _after_collector(state, argv, system.run(argv, timeout=timeout, stdout=stdout, check=False))
    return f"{argv[0]} exited 0"


def _before_collector(state: DumpState, argv: list[str]) -> None:
    state.collector_argv = argv
    state.memfree_at_collect_kib = memory.reading("/proc/meminfo", "MemFree")


def _after_collector(state: DumpState, argv: list[str], result: subprocess.CompletedProcess[bytes]) -> None:
    state.collector_returncode = result.returncode
    state.collector_peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if result.returncode != 0:
        last = (result.stderr or b"").decode(errors="replace").strip().splitlines()
        raise CommandFailed(argv, result.returncode, last[-1] if last else "")
