"""The kernel's random pool in the capture kernel: who waits for it, and when.

The capture kernel boots with its random pool not yet initialised. A blocking read
(os.urandom, getrandom without flags) waits a second for interrupts to fill it, then has the
kernel gather jitter entropy, one bit a timer tick: 1.1 to 1.8 s under TCG, mostly idle. A
local or NFS dump needs no random bytes, so it must not wait at all; an SSH dump needs them
for its key exchange, so it starts the wait in the background as NETWORK_UP begins, and the
wait overlaps the links coming up instead of following them.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager

log = logging.getLogger("kdump-agent")

# getrandom(2)'s flag for bytes that do not wait for the pool (Linux 5.6); Python 3.11's os
# module does not name it.
GRND_INSECURE = 0x0004


def fill_in_background(getrandom: Callable[[int, int], bytes] = os.getrandom) -> threading.Thread:
    """Start a thread that blocks until the pool is ready, and logs how long that took. It
    is a daemon: the capture never waits for it, only for its own reads (paramiko's)."""
    def wait() -> None:
        started = time.monotonic()
        getrandom(1, 0)
        log.info("random pool ready (%.2f s after NETWORK_UP began)", time.monotonic() - started)

    thread = threading.Thread(target=wait, name="random-pool", daemon=True)
    thread.start()
    return thread


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
