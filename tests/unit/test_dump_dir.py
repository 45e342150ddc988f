"""Dump directory naming and creation (docs/design.md, section 4)."""

import stat
import time
from pathlib import Path

from kdump_agent.layout import dump_dir_name
from kdump_agent.targets.directory import make_dump_dir


def test_dump_dir_name_is_ip_dash_date_time() -> None:
    when = time.strptime("2026-11-29 01:02:03", "%Y-%m-%d %H:%M:%S")
    assert dump_dir_name("127.0.0.1", when) == "127.0.0.1-2026-11-29-01:02:03"


def test_make_dump_dir_creates_private_directory(tmp_path: Path) -> None:
    made = make_dump_dir(tmp_path / "var" / "crash", "127.0.0.1-2026-11-29-01:02:03")
    assert made == tmp_path / "var" / "crash" / "127.0.0.1-2026-11-29-01:02:03"
    assert stat.S_IMODE(made.stat().st_mode) == 0o700


def test_make_dump_dir_never_reuses_an_existing_dump(tmp_path: Path) -> None:
    first = make_dump_dir(tmp_path, "127.0.0.1-2026-11-29-01:02:03")
    (first / "vmcore").write_bytes(b"earlier dump")
    second = make_dump_dir(tmp_path, "127.0.0.1-2026-11-29-01:02:03")
    assert second != first
    assert second.name == "127.0.0.1-2026-11-29-01:02:03-2"
    assert (first / "vmcore").read_bytes() == b"earlier dump"
