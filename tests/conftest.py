"""Fixtures shared by the integration and QEMU end-to-end tests.

These tests boot real kernels under TCG and take tens of seconds each; they carry the
`qemu` marker (`make test` runs them all; `-m "not qemu"` leaves them out). On failure the
tail of every serial console a test registered is attached to the report: that is where the
reason always is. The harness they use is the `harness` package next to this file.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import cache, guest, kernels

CONSOLE_TAIL_LINES = 80


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "qemu: boots kernels in QEMU (slow; select with -m qemu)")


@pytest.fixture(scope="session")
def cache_dir() -> Path:
    """Downloads and built images, kept across sessions ($KDUMP_AGENT_CACHE)."""
    return cache.cache_dir()


@pytest.fixture(scope="session")
def kernel(cache_dir: Path) -> kernels.Kernel:
    """Debian's cloud kernel, downloaded and unpacked once per cache."""
    return kernels.fetch_kernel(cache_dir)


@pytest.fixture
def console_logs(request: pytest.FixtureRequest) -> Iterator[list[Path]]:
    """Append a boot's log_path here and its tail shows up in the report if the test fails."""
    logs: list[Path] = []
    request.node.console_logs = logs
    yield logs


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):
    report = yield
    if report.when == "call" and report.failed:
        for path in getattr(item, "console_logs", []):
            text = guest.clean_console(path.read_bytes()) if path.exists() else "(no log)"
            tail = "\n".join(text.splitlines()[-CONSOLE_TAIL_LINES:])
            report.sections.append((f"serial console tail: {path}", tail))
    return report
