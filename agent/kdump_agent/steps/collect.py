"""COLLECT: run core_collector on /proc/vmcore into vmcore-incomplete."""

from __future__ import annotations

import os
import resource
import subprocess
from collections.abc import Sequence
from typing import IO, TYPE_CHECKING, BinaryIO, cast

from .. import memory, system
from ..context import Capture
from ..errors import CommandFailed
from ..targets.raw import RawTarget

if TYPE_CHECKING:
    from ..ssh.connection import SshTarget, TransferSummary

VMCORE_PARTIAL = "vmcore-incomplete"


def collector_argv(core_collector: Sequence[str], vmcore: str, dest: str | None,
                   cpus: int = 1) -> tuple[list[str], bool]:
    """The argv to run and whether its standard output is the dump.

    As RHEL's kdump does: for a file target (dest given) `-F` is dropped, so the file on
    disk is a ready kdump-compressed vmcore, and makedumpfile gets `--num-threads` when the
    capture kernel has more than one CPU; for a stream (dest None: a raw device) `-F` is
    added, so restore-raw can rebuild the file from records.
    """
    program, *options = core_collector
    name = os.path.basename(program)
    if name == "makedumpfile":
        if dest is None:
            return [program, *options, *([] if "-F" in options else ["-F"]), vmcore], True
        options = [o for o in options if o != "-F"]
        if cpus > 1 and not any(o.startswith("--num-threads") for o in options):
            options.append(f"--num-threads={cpus}")
        return [program, *options, vmcore, dest], False
    if name == "cat" or dest is None:
        return [program, *options, vmcore], True
    return [program, *options, vmcore, dest], False


def collect(capture: Capture, timeout: float) -> str:
    assert capture.config is not None and capture.target is not None, "earlier states ran"
    if isinstance(capture.target, RawTarget):
        return _collect_to_device(capture, capture.target.device, timeout)
    if capture.remote is not None:
        return _collect_to_remote(capture, capture.remote, timeout)
    assert capture.dump_dir is not None, "PREPARE_DIR ran"
    dest = capture.dump_dir / VMCORE_PARTIAL
    argv, to_stdout = collector_argv(capture.config.core_collector, capture.paths.vmcore,
                                     str(dest), os.cpu_count() or 1)
    if to_stdout:
        with open(dest, "wb") as out:
            return _run_collector(capture, argv, timeout, out.fileno())
    # The collector's progress goes to the console, where the admin watches.
    return _run_collector(capture, argv, timeout, None)


def _collect_to_device(capture: Capture, device: str, timeout: float) -> str:
    """The flattened stream straight onto the raw device, from its first byte."""
    assert capture.config is not None
    argv, _ = collector_argv(capture.config.core_collector, capture.paths.vmcore, None)
    with open(device, "r+b", buffering=0) as out:
        return _run_collector(capture, argv, timeout, out.fileno())


def _collect_to_remote(capture: Capture, remote: SshTarget, timeout: float) -> str:
    """The flattened stream read as it comes and sent to the SSH server, where it becomes
    the vmcore (targets/ssh.py): no copy of the dump is held in the capture kernel."""
    assert capture.config is not None
    argv, _ = collector_argv(capture.config.core_collector, capture.paths.vmcore, None)
    _before_collector(capture, argv)

    def send(out: IO[bytes]) -> TransferSummary:
        return remote.receive_flattened(cast(BinaryIO, out))

    try:
        summary, result = system.run_streaming(argv, send, timeout=timeout)
    except CommandFailed as error:
        capture.collector_returncode = error.returncode
        raise
    capture.transfer = {"path": summary.path, "size": summary.size, "records": summary.records,
                        "stream_bytes": summary.stream_bytes, "seconds": round(summary.seconds, 3),
                        "flattened": summary.flattened, "sha256": summary.sha256}
    _after_collector(capture, argv, result)
    return f"{remote.destination}:{summary.path}: {summary.size} bytes in {summary.seconds:.1f} s"


def _run_collector(capture: Capture, argv: list[str], timeout: float, stdout: int | None) -> str:
    _before_collector(capture, argv)
    _after_collector(capture, argv, system.run(argv, timeout=timeout, stdout=stdout, check=False))
    return f"{argv[0]} exited 0"


def _before_collector(capture: Capture, argv: list[str]) -> None:
    capture.collector_argv = argv
    capture.memfree_at_collect_kib = memory.reading("/proc/meminfo", "MemFree")


def _after_collector(capture: Capture, argv: list[str], result: subprocess.CompletedProcess[bytes]) -> None:
    capture.collector_returncode = result.returncode
    capture.collector_peak_kib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    if result.returncode != 0:
        last = (result.stderr or b"").decode(errors="replace").strip().splitlines()
        raise CommandFailed(argv, result.returncode, last[-1] if last else "")
