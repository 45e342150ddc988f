"""The one-file binary laid out unpacked: its archive read, rewritten and kept a valid ELF."""

from __future__ import annotations

import io
import subprocess
import zipfile
import zlib
from pathlib import Path

import pytest
from pyzfiles import pyz_of

from kdump_agent.errors import KdumpError
from kdump_agent.host import programdir, pyzarchive
from kdump_agent.host.programdir import Entry, lay_out, read_archive, write_archive


def stored_zip(files: dict[str, bytes]) -> bytes:
    """A zip archive of uncompressed members, as PyInstaller writes base_library.zip."""
    out = io.BytesIO()
    with zipfile.ZipFile(out, "w", zipfile.ZIP_STORED) as archive:
        for name, data in files.items():
            archive.writestr(name, data)
    return out.getvalue()


BASE_FILES = {"encodings/__init__.pyc": b"\x00" * 4000, "codecs.pyc": b"codec " * 500}


def entry(name: str, typecode: str, content: bytes, compressed: bool = True) -> Entry:
    return Entry(name, ord(typecode), compressed, len(content),
                 zlib.compress(content) if compressed else content)


ENTRIES = [
    entry("pyiboot01_bootstrap", "s", b"bootstrap code"),
    entry("libpython3.11.so.1.0", "b", b"\x7fELF libpython" * 100),
    entry("python3.11/lib-dynload/_json.so", "b", b"json extension"),
    entry("base_library.zip", "x", stored_zip(BASE_FILES), compressed=False),
    entry("cryptography/hazmat/bindings/_rust.abi3.so", "b", b"rust crypto"),
    entry("cryptography-50.0.2.dist-info/METADATA", "x", b"Name: cryptography"),
    entry("_cffi_backend.cpython-311-x86_64-linux-gnu.so", "b", b"cffi"),
    entry("dracut-module/55kdump-agent/module-setup.sh", "x", b"#!/bin/bash"),
    entry("libz.so", "n", b"libz.so.1", compressed=False),
    entry("pyi-contents-directory _internal", "o", b"", compressed=False),
    entry("pyi-python-flag O", "o", b"", compressed=False),
    entry("PYZ.pyz", "z", pyz_of(["kdump_agent", "kdump_agent.capture", "pyroute2", "pyroute2.iproute",
                                  "paramiko", "paramiko.client", "asyncio"]), compressed=False),
]


def modules_laid_out(executable: Path) -> list[str]:
    pyz = next(e for e in read_archive(executable).entries if e.name == "PYZ.pyz")
    return pyzarchive.module_names(pyz.content())


def frozen_binary(tmp_path: Path, entries: list[Entry] = ENTRIES) -> Path:
    """A binary laid out as PyInstaller's Linux build makes it: an ELF program with the
    archive as its `pydata` section (objcopy, which PyInstaller itself runs)."""
    archive = tmp_path / "archive"
    archive.write_bytes(write_archive(entries, 311, b"libpython3.11.so.1.0"))
    binary = tmp_path / "kdump-agent"
    subprocess.run(["objcopy", "--add-section", f"pydata={archive}", "/bin/true", str(binary)], check=True)
    return binary


def test_the_archive_written_is_the_archive_read_back(tmp_path: Path) -> None:
    archive = read_archive(frozen_binary(tmp_path))
    assert archive.entries == tuple(ENTRIES)
    assert (archive.python_version, archive.libpython.rstrip(b"\0")) == (311, b"libpython3.11.so.1.0")


def test_a_local_image_gets_the_libraries_without_ssh_and_without_the_host_side(tmp_path: Path) -> None:
    executable = lay_out(frozen_binary(tmp_path), tmp_path / "program", ssh=False, network=False)
    files = sorted(str(p.relative_to(tmp_path / "program")) for p in (tmp_path / "program").rglob("*")
                   if not p.is_dir())
    assert files == ["base_library.zip", "kdump-agent", "libpython3.11.so.1.0", "libz.so",
                     "python3.11/lib-dynload/_json.so"]
    assert (tmp_path / "program" / "libpython3.11.so.1.0").read_bytes() == b"\x7fELF libpython" * 100
    assert (tmp_path / "program" / "libz.so").readlink() == Path("libz.so.1")
    assert executable.stat().st_mode & 0o111
    assert modules_laid_out(executable) == ["kdump_agent", "kdump_agent.capture"]


def test_the_base_library_is_deflated_with_every_member_kept(tmp_path: Path) -> None:
    lay_out(frozen_binary(tmp_path), tmp_path / "program", ssh=False, network=False)
    laid_out = tmp_path / "program" / "base_library.zip"
    with zipfile.ZipFile(laid_out) as archive:
        assert {m.filename: archive.read(m) for m in archive.infolist()} == BASE_FILES
        assert {m.compress_type for m in archive.infolist()} == {zipfile.ZIP_DEFLATED}
    assert laid_out.stat().st_size < len(stored_zip(BASE_FILES)) / 4


def test_an_nfs_image_keeps_the_network_stack_but_not_paramiko(tmp_path: Path) -> None:
    executable = lay_out(frozen_binary(tmp_path), tmp_path / "program", ssh=False, network=True)
    assert modules_laid_out(executable) == ["kdump_agent", "kdump_agent.capture", "pyroute2",
                                            "pyroute2.iproute", "asyncio"]
    assert not (tmp_path / "program" / "cryptography").exists()


def test_an_ssh_image_keeps_paramikos_crypto(tmp_path: Path) -> None:
    executable = lay_out(frozen_binary(tmp_path), tmp_path / "program", ssh=True, network=False)
    assert "paramiko.client" in modules_laid_out(executable) and "pyroute2" in modules_laid_out(executable)
    program = tmp_path / "program"
    assert (program / "cryptography/hazmat/bindings/_rust.abi3.so").read_bytes() == b"rust crypto"
    assert (tmp_path / "program" / "_cffi_backend.cpython-311-x86_64-linux-gnu.so").exists()
    assert not (tmp_path / "program" / "dracut-module").exists()


def test_the_executable_keeps_only_what_python_reads_in_place_and_stays_a_valid_elf(tmp_path: Path) -> None:
    binary = frozen_binary(tmp_path)
    executable = lay_out(binary, tmp_path / "program", ssh=True, network=True)
    kept = read_archive(executable).entries
    assert [e.name for e in kept] == ["pyiboot01_bootstrap", "pyi-python-flag O", "PYZ.pyz"]
    assert not any(e.typecode in programdir.EXTRACTED for e in kept)  # the bootloader runs one-dir
    # The file is still an ELF readelf and strip accept, and it still runs.
    sections = subprocess.run(["readelf", "-S", "-W", str(executable)], capture_output=True, text=True,
                              check=True).stdout
    assert "pydata" in sections and "Warning" not in sections
    subprocess.run(["strip", "-g", "-o", str(tmp_path / "stripped"), str(executable)], check=True)
    assert read_archive(tmp_path / "stripped").entries == kept
    assert subprocess.run([str(executable)], check=False).returncode == 0  # /bin/true's code
    assert executable.stat().st_size < binary.stat().st_size


def test_a_file_that_is_no_frozen_binary_is_refused(tmp_path: Path) -> None:
    with pytest.raises(KdumpError, match="not a PyInstaller binary"):
        lay_out(Path("/bin/true"), tmp_path / "program", ssh=False, network=False)


def test_an_entry_naming_a_path_outside_the_program_is_refused(tmp_path: Path) -> None:
    binary = frozen_binary(tmp_path, [entry("../../etc/passwd", "x", b"root")])
    with pytest.raises(KdumpError, match="outside the program"):
        lay_out(binary, tmp_path / "program", ssh=False, network=False)
    assert not (tmp_path / "etc").exists()
