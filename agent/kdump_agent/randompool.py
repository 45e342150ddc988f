"""The kernel's random pool in the capture kernel: only a capture that needs it waits.

The capture kernel boots with its random pool not yet initialised, and a blocking read
(os.urandom, getrandom without flags) waits until interrupts and the kernel's jitter
gathering fill it: 1.1 to 1.8 s under TCG. A local or NFS dump needs no random bytes, so it
must not wait at all; an SSH dump needs them for its key exchange and waits there, in
paramiko. (Filling the pool from a background thread while the links came up was
measured and made SSH captures slower: the kernel's gathering competes with the imports
and the bring-up for the one CPU; docs/development.md has the figures.)
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager

# getrandom(2)'s flag for bytes that do not wait for the pool (Linux 5.6); Python 3.11's os
# module does not name it.
GRND_INSECURE = 0x0004


def bytes_without_waiting(size: int, getrandom: Callable[[int, int], bytes] = os.getrandom) -> bytes:
    """Random bytes now: the pool's if it is ready, else getrandom's GRND_INSECURE ones
    (zeros on a kernel older than 5.6, which refuses the flag). Only for keys that guard
    nothing the agent uses: see `import_without_waiting`."""
    try:
        return getrandom(size, os.GRND_NONBLOCK)
    except BlockingIOError:
        pass
    try:
        return getrandom(size, GRND_INSECURE)
    except OSError:
        return bytes(size)


@contextmanager
def import_without_waiting() -> Iterator[None]:
    """os.urandom answers without waiting for the pool, for the length of a `with` block.

    For importing pyroute2 in the capture kernel: its config module imports multiprocessing,
    whose main-process object draws a 32-byte authkey from os.urandom at import. That key
    guards multiprocessing's connections, which the agent never opens; a blocking read
    there made every network capture (NFS included) wait for the pool.
    """
    real = os.urandom
    os.urandom = bytes_without_waiting
    try:
        yield
    finally:
        os.urandom = real
