"""The capture kernel's random pool: a pyroute2 import never waits for it."""

from __future__ import annotations

import os
import sys
from typing import Any

import pytest

from kdump_agent import randompool
from kdump_agent.network import rtnetlink


class PoolNotReady:
    """getrandom(2) before the pool is initialised (`ready` False): a non-blocking read
    fails; a blocking one would wait, which no caller here may do."""

    def __init__(self, insecure_supported: bool = True) -> None:
        self.ready = False
        self.insecure_supported = insecure_supported
        self.calls: list[int] = []

    def __call__(self, size: int, flags: int) -> bytes:
        self.calls.append(flags)
        if flags == os.GRND_NONBLOCK and not self.ready:
            raise BlockingIOError(11, "Resource temporarily unavailable")
        if flags == randompool.GRND_INSECURE:
            if not self.insecure_supported:
                raise OSError(22, "Invalid argument")
            return b"\x5a" * size
        assert self.ready, "a blocking read of a pool that is not ready"
        return b"\xa5" * size


def test_bytes_without_waiting_take_the_pools_when_it_is_ready() -> None:
    pool = PoolNotReady()
    pool.ready = True
    assert randompool.bytes_without_waiting(32, pool) == b"\xa5" * 32
    assert pool.calls == [os.GRND_NONBLOCK]


def test_bytes_without_waiting_fall_back_to_insecure_then_zeros() -> None:
    assert randompool.bytes_without_waiting(32, PoolNotReady()) == b"\x5a" * 32
    old_kernel = PoolNotReady(insecure_supported=False)
    assert randompool.bytes_without_waiting(32, old_kernel) == bytes(32)
    assert old_kernel.calls == [os.GRND_NONBLOCK, randompool.GRND_INSECURE]


def test_os_urandom_is_itself_again_after_the_block_even_on_error() -> None:
    real = os.urandom
    with pytest.raises(RuntimeError), randompool.import_without_waiting():
        assert os.urandom is randompool.bytes_without_waiting
        raise RuntimeError("import failed")
    assert os.urandom is real


def test_pyroute2_is_imported_without_a_blocking_read(mocker: Any) -> None:
    """multiprocessing draws its authkey from os.urandom when pyroute2 imports it."""
    mocker.patch.dict(sys.modules)  # the modules imported here go again after the test
    for name in [m for m in sys.modules if m == "pyroute2" or m.startswith(("pyroute2.", "multiprocessing"))]:
        del sys.modules[name]
    blocking = mocker.patch("os.urandom", side_effect=AssertionError("a blocking read of the pool"))
    rtnetlink.import_pyroute2()
    assert "pyroute2" in sys.modules and "multiprocessing.process" in sys.modules
    assert os.urandom is blocking  # restored
    blocking.assert_not_called()
