"""Host commands for the harness: run one with its failure made readable, and log progress."""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from pathlib import Path


def log(message: str) -> None:
    """Progress for humans; stderr so pytest shows it only for failing tests."""
    print(f"[guest] {message}", file=sys.stderr, flush=True)


def run(argv: Sequence[str | os.PathLike[str]], *, cwd: Path | None = None,
        check: bool = True, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    """Run a host command with no stdin and captured text output.

    A failing command raises with its argv and stderr, so a broken host tool reads as such
    instead of as a mysterious guest failure later on.
    """
    args = [str(a) for a in argv]
    proc = subprocess.run(args, cwd=cwd, stdin=subprocess.DEVNULL, capture_output=True,
                          text=True, timeout=timeout, check=False)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{shlex.join(args)} exited {proc.returncode}:\n"
                           f"{proc.stderr.strip() or proc.stdout.strip()}")
    return proc
