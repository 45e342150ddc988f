"""The one cache directory: downloads and built images, shared by every test session, the
demo and the bench, and kept across them (`$KDUMP_AGENT_CACHE`, or /var/cache/kdump-agent-test).

Everything in it is keyed by its inputs, so a stale entry is rebuilt, never reused; the
locks keep two sessions from building the same entry at once.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator
from pathlib import Path

DEFAULT_CACHE = Path("/var/cache/kdump-agent-test")


def cache_dir(*subdirectory: str) -> Path:
    """The cache directory, or a subdirectory of it (e.g. "capture-initrds"), created."""
    path = Path(os.environ.get("KDUMP_AGENT_CACHE") or DEFAULT_CACHE).joinpath(*subdirectory)
    path.mkdir(parents=True, exist_ok=True)
    return path


@contextlib.contextmanager
def locked(path: Path) -> Iterator[None]:
    """Hold an exclusive flock on `path` so parallel sessions (pytest-xdist, a demo running
    next to the tests) do not download or build the same artifact twice at once."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as fd:
        fcntl.flock(fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fd, fcntl.LOCK_UN)
