"""Giving back the unpacked libraries a local capture never loads."""

from __future__ import annotations

from pathlib import Path

from kdump_agent import unpacked


def test_only_the_ssh_libraries_are_released(tmp_path: Path) -> None:
    files = {"cryptography/hazmat/bindings/_rust.abi3.so": 5000, "nacl/_sodium.abi3.so": 300,
             "bcrypt/_bcrypt.abi3.so": 200, "_cffi_backend.cpython-311-x86_64-linux-gnu.so": 100,
             "libpython3.11.so.1.0": 4000, "python3.11/lib-dynload/_socket.so": 50,
             "dracut-module/55kdump-agent/module-setup.sh": 10}
    for name, size in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x" * size)
    assert unpacked.release_ssh_libraries(str(tmp_path)) == 5600
    left = sorted(str(p.relative_to(tmp_path)) for p in tmp_path.rglob("*") if p.is_file())
    assert left == ["dracut-module/55kdump-agent/module-setup.sh", "libpython3.11.so.1.0",
                    "python3.11/lib-dynload/_socket.so"]


def test_nothing_happens_outside_the_frozen_binary() -> None:
    assert unpacked.release_ssh_libraries() == 0  # the test run is not frozen: no _MEIPASS
