"""COLLECT: run core_collector on /proc/vmcore into vmcore-incomplete."""

from __future__ import annotations

import os
from collections.abc import Sequence

from .. import system
from ..context import Capture
from ..errors import CommandFailed

VMCORE_PARTIAL = "vmcore-incomplete"


def collector_argv(core_collector: Sequence[str], vmcore: str, dest: str) -> tuple[list[str], bool]:
    """The argv to run and whether its standard output is the dump.

    Like RHEL's kdump, `-F` (flattened output for streams) is dropped for file targets:
    the file on disk must be a ready kdump-compressed vmcore.
    """
    program, *options = core_collector
    name = os.path.basename(program)
    if name == "makedumpfile":
        return [program, *[o for o in options if o != "-F"], vmcore, dest], False
    if name == "cat":
        return [program, *options, vmcore], True
    return [program, *options, vmcore, dest], False


def collect(capture: Capture, timeout: float) -> str:
    assert capture.config is not None and capture.dump_dir is not None, "earlier states ran"
    dest = capture.dump_dir / VMCORE_PARTIAL
    argv, to_stdout = collector_argv(capture.config.core_collector, capture.paths.vmcore, str(dest))
    capture.collector_argv = argv
    if to_stdout:
        with open(dest, "wb") as out:
            result = system.run(argv, timeout=timeout, stdout=out.fileno(), check=False)
    else:
        # The collector's progress goes straight to the console, where the admin watches.
        result = system.run(argv, timeout=timeout, stdout=None, check=False)
    capture.collector_returncode = result.returncode
    if result.returncode != 0:
        last = (result.stderr or b"").decode(errors="replace").strip().splitlines()
        raise CommandFailed(argv, result.returncode, last[-1] if last else "")
    return f"{argv[0]} exited 0"


