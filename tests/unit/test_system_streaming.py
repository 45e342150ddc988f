"""system.run_streaming with real child processes: output read as it comes, failures named."""

from __future__ import annotations

from typing import IO

import pytest

from kdump_agent import system
from kdump_agent.errors import CommandFailed, KdumpError


def read_all(stream: IO[bytes]) -> bytes:
    return stream.read()


def test_the_consumer_gets_the_output_and_the_exit_status_is_returned() -> None:
    data, result = system.run_streaming(["sh", "-c", "printf dump; exit 3"], read_all, timeout=10)
    assert data == b"dump" and result.returncode == 3


def test_a_program_that_failed_first_is_the_error_not_its_cut_stream() -> None:
    def needs_more(stream: IO[bytes]) -> bytes:
        stream.read()
        raise KdumpError("stream ended before its end marker")

    with pytest.raises(CommandFailed, match="sh exited 1: write error: No space left on device"):
        system.run_streaming(["sh", "-c", "echo 'write error: No space left on device' >&2; exit 1"],
                             needs_more, timeout=10)


def test_a_consumer_error_kills_the_program_and_goes_on() -> None:
    def gives_up(stream: IO[bytes]) -> bytes:
        stream.read(1)
        raise KdumpError("the server went away")

    with pytest.raises(KdumpError, match="the server went away"):
        system.run_streaming(["sh", "-c", "echo x; exec sleep 60"], gives_up, timeout=10)
    assert not system._children  # killed and reaped, not left behind
