"""restore-raw with real makedumpfile: a flattened dump on a fake raw device (an image file)
is rebuilt byte for byte as `makedumpfile -R` rebuilds it, and the device is cleared only
when the dump is whole."""

from __future__ import annotations

import errno
import hashlib
import json
import os
import random
import re
import stat
import struct
import subprocess
import time
from pathlib import Path

import pytest

from kdump_agent.errors import KdumpError
from kdump_agent.flat import END_MARKER, HEADER_SIZE, reassemble_to_file
from kdump_agent.host.restore_raw import PARTIAL_DIR_NAME, Outcome, restore_raw

CRASH_TIME = time.localtime(1_700_000_000)
DUMP_DIR_NAME = f"127.0.0.1-{time.strftime('%Y-%m-%d-%H:%M:%S', CRASH_TIME)}"
DEVICE_SIZE = 128 << 20


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as data:
        while chunk := data.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


def fake_device(path: Path, stream: bytes) -> Path:
    """A sparse image that held an older dump's random bytes, the new stream written over its start."""
    with open(path, "wb") as device:
        device.truncate(DEVICE_SIZE)
        device.write(random.Random(7).randbytes(len(stream) + (4 << 20)))
        device.seek(0)
        device.write(stream)
    return path


def restore(device: Path, dump_root: Path) -> tuple[Outcome, Path | None]:
    result = restore_raw(str(device), str(dump_root), clock=lambda: CRASH_TIME)
    return result.outcome, result.restored


def flat_header() -> bytes:
    return struct.pack(">16sqq", b"makedumpfile", 1, 1).ljust(HEADER_SIZE, b"\0")


def synthetic_stream(payload: bytes, *, complete: bool = True) -> bytes:
    """A flattened stream of one record; without its end marker when not complete."""
    return flat_header() + struct.pack(">qq", 0, len(payload)) + payload + (END_MARKER if complete else b"")


@pytest.fixture(scope="module")
def flat_dump(elf_vmcore: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """makedumpfile -F of the real vmcore, and what makedumpfile -R makes of it."""
    work = tmp_path_factory.mktemp("flat")
    stream, rebuilt = work / "vmcore.flat", work / "vmcore.R"
    with open(stream, "wb") as out:
        subprocess.run(["makedumpfile", "-F", "-l", "-d", "31", str(elf_vmcore)], stdout=out,
                       stderr=subprocess.DEVNULL, check=True)
    with open(stream, "rb") as source:
        subprocess.run(["makedumpfile", "-R", str(rebuilt)], stdin=source, stdout=subprocess.DEVNULL,
                       check=True)
    return stream, rebuilt


@pytest.mark.qemu
def test_reassembly_is_byte_identical_to_makedumpfile_R(tmp_path: Path, flat_dump: tuple[Path, Path]) -> None:
    stream, rebuilt = flat_dump
    with open(stream, "rb") as source:
        summary = reassemble_to_file(source, tmp_path / "vmcore")
    assert summary.end == rebuilt.stat().st_size
    assert summary.stream_bytes == stream.stat().st_size
    assert sha256(tmp_path / "vmcore") == sha256(rebuilt)


@pytest.mark.qemu
def test_restore_raw_rebuilds_the_vmcore_then_clears_the_device(
        tmp_path: Path, flat_dump: tuple[Path, Path]) -> None:
    stream, rebuilt = flat_dump
    device = fake_device(tmp_path / "raw.img", stream.read_bytes())
    after_stream = device.read_bytes()[stream.stat().st_size:]
    outcome, dump_dir = restore(device, tmp_path / "crash")

    assert outcome is Outcome.RESTORED
    assert dump_dir == tmp_path / "crash" / DUMP_DIR_NAME
    vmcore = dump_dir / "vmcore"
    assert sha256(vmcore) == sha256(rebuilt)
    dmesg = tmp_path / "dmesg.txt"
    subprocess.run(["makedumpfile", "--dump-dmesg", str(vmcore), str(dmesg)], check=True,
                   stdout=subprocess.DEVNULL)
    assert "sysrq: Trigger a crash" in dmesg.read_text(errors="replace")
    assert "sysrq: Trigger a crash" in (dump_dir / "vmcore-dmesg.txt").read_text(errors="replace")
    assert stat.S_IMODE(dump_dir.stat().st_mode) == 0o700
    assert sorted(p.name for p in dump_dir.iterdir()) == ["kdump-agent.json", "vmcore", "vmcore-dmesg.txt"]
    assert {stat.S_IMODE(p.stat().st_mode) for p in dump_dir.iterdir()} == {0o600}
    manifest = json.loads((dump_dir / "kdump-agent.json").read_text())
    assert manifest["result"] == "success" and manifest["restored_from"] == str(device)
    assert manifest["size"] == vmcore.stat().st_size and manifest["records"] > 0
    assert {f["name"]: f["sha256"] for f in manifest["files"]}["vmcore"] == sha256(rebuilt)

    cleared = device.read_bytes()
    assert len(cleared) == DEVICE_SIZE
    assert cleared[:HEADER_SIZE] == bytes(HEADER_SIZE)
    end_marker_at = stream.stat().st_size - len(END_MARKER)
    assert cleared[end_marker_at:end_marker_at + len(END_MARKER)] == bytes(len(END_MARKER))
    assert cleared[stream.stat().st_size:] == after_stream  # nothing else was touched
    assert restore(device, tmp_path / "crash") == (Outcome.NOTHING, None)
    assert list((tmp_path / "crash").iterdir()) == [dump_dir]


@pytest.mark.qemu
def test_a_stream_cut_in_the_middle_is_kept_as_incomplete_and_the_device_left_alone(
        tmp_path: Path, flat_dump: tuple[Path, Path]) -> None:
    stream, _ = flat_dump
    data = stream.read_bytes()
    device = fake_device(tmp_path / "raw.img", data[: len(data) // 2])
    before = sha256(device)
    outcome, dump_dir = restore(device, tmp_path / "crash")

    assert outcome is Outcome.INCOMPLETE
    assert dump_dir is not None
    assert sorted(p.name for p in dump_dir.iterdir()) == ["kdump-agent.json", "vmcore-incomplete"]
    assert (dump_dir / "vmcore-incomplete").stat().st_size > 0
    manifest = json.loads((dump_dir / "kdump-agent.json").read_text())
    assert manifest["result"] == "incomplete"
    assert "the dump is incomplete" in manifest["failure"]["reason"]
    assert sha256(device) == before


def test_a_device_holding_a_file_system_is_refused_and_left_untouched(tmp_path: Path) -> None:
    device = tmp_path / "ext4.img"
    with open(device, "wb") as image:
        image.truncate(32 << 20)
    subprocess.run(["mkfs.ext4", "-F", "-q", str(device)], check=True)
    before = sha256(device)
    refusal = f"{device} holds ext4 (blkid), not a raw dump: refusing to touch it"
    with pytest.raises(KdumpError, match=f"^{re.escape(refusal)}$"):
        restore(device, tmp_path / "crash")
    assert sha256(device) == before
    assert not (tmp_path / "crash").exists()


def test_a_cleared_device_has_nothing_to_restore(tmp_path: Path) -> None:
    device = tmp_path / "raw.img"
    with open(device, "wb") as image:
        image.truncate(8 << 20)
    assert restore(device, tmp_path / "crash") == (Outcome.NOTHING, None)
    assert not (tmp_path / "crash").exists()


def test_a_flattened_header_of_another_version_is_refused_before_anything_is_made(tmp_path: Path) -> None:
    device = tmp_path / "raw.img"
    device.write_bytes(struct.pack(">16sqq", b"makedumpfile", 1, 2).ljust(HEADER_SIZE, b"\0"))
    with pytest.raises(KdumpError, match="has version 2, expected 1"):
        restore(device, tmp_path / "crash")
    assert not (tmp_path / "crash").exists()


def test_an_unreadable_dump_log_is_a_note_and_an_earlier_dump_is_never_overwritten(tmp_path: Path) -> None:
    earlier = tmp_path / "crash" / DUMP_DIR_NAME
    earlier.mkdir(parents=True)
    (earlier / "vmcore").write_bytes(b"the earlier dump")
    device = fake_device(tmp_path / "raw.img", flat_header() + struct.pack(">qq", 0, 6) + b"no elf"
                         + END_MARKER)

    outcome, dump_dir = restore(device, tmp_path / "crash")

    assert outcome is Outcome.RESTORED
    assert dump_dir == tmp_path / "crash" / f"{DUMP_DIR_NAME}-2"
    assert (earlier / "vmcore").read_bytes() == b"the earlier dump"
    assert (dump_dir / "vmcore").read_bytes() == b"no elf"
    manifest = json.loads((dump_dir / "kdump-agent.json").read_text())
    assert manifest["result"] == "success"
    assert manifest["notes"][0].startswith("vmcore-dmesg.txt not saved: makedumpfile exited")
    assert device.read_bytes()[:HEADER_SIZE] == bytes(HEADER_SIZE)


def test_a_partition_table_is_refused_like_a_file_system(tmp_path: Path) -> None:
    device = tmp_path / "disk.img"
    mbr = bytearray(512)
    mbr[446:462] = struct.pack("<B3sB3sII", 0, b"\x00\x02\x00", 0x83, b"\x00\x00\x00", 2048, 8192)
    mbr[510:512] = b"\x55\xaa"
    with open(device, "wb") as image:
        image.truncate(8 << 20)
        image.write(mbr)
    before = sha256(device)
    with pytest.raises(KdumpError, match="holds dos partition table .*refusing to touch it"):
        restore(device, tmp_path / "crash")
    assert sha256(device) == before


def test_a_dump_larger_than_the_free_space_is_refused_before_anything_is_written(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    payload = random.Random(1).randbytes(3 << 20)
    device = fake_device(tmp_path / "raw.img", synthetic_stream(payload))
    before = sha256(device)
    real_statvfs = os.statvfs
    monkeypatch.setattr(os, "statvfs", lambda path: os.statvfs_result(
        (*tuple(real_statvfs(path))[:4], 512, *tuple(real_statvfs(path))[5:])))  # 512 blocks free
    free = 512 * real_statvfs(tmp_path).f_frsize
    with pytest.raises(KdumpError) as caught:
        restore(device, tmp_path / "crash")
    message = str(caught.value)
    assert message.startswith(f"the dump on {device} needs 19 MiB in {tmp_path / 'crash'}, which has "
                              f"{-(-free // (1 << 20))} MiB free: make room there")
    assert message.endswith(f"{device} is left as it was")
    assert sha256(device) == before
    assert not (tmp_path / "crash").exists()


def test_a_disk_that_fills_up_midway_leaves_the_device_and_no_directory_however_often_tried(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    device = fake_device(tmp_path / "raw.img", synthetic_stream(random.Random(2).randbytes(1 << 20)))
    before = sha256(device)

    def full(fd: int, data: bytes, offset: int) -> int:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    with monkeypatch.context() as full_disk:
        full_disk.setattr(os, "pwrite", full)
        for _ in range(2):  # two boots
            with pytest.raises(KdumpError, match="No space left on device; .* is left as it was"):
                restore(device, tmp_path / "crash")
            assert sha256(device) == before
            assert list((tmp_path / "crash").iterdir()) == []
    outcome, dump_dir = restore(device, tmp_path / "crash")  # room again: restored once, cleared
    assert outcome is Outcome.RESTORED and dump_dir == tmp_path / "crash" / DUMP_DIR_NAME
    assert list((tmp_path / "crash").iterdir()) == [dump_dir]


def test_an_incomplete_dump_tried_at_every_boot_keeps_one_partial_directory(tmp_path: Path) -> None:
    payload = random.Random(3).randbytes(1 << 20)
    device = tmp_path / "raw.img"  # zeros after the cut, as on a device that held nothing before
    with open(device, "wb") as image:
        image.truncate(DEVICE_SIZE)
        image.write(synthetic_stream(payload, complete=False))
    before = sha256(device)
    for _ in range(3):  # three boots
        outcome, dump_dir = restore(device, tmp_path / "crash")
        assert outcome is Outcome.INCOMPLETE
        assert list((tmp_path / "crash").iterdir()) == [tmp_path / "crash" / PARTIAL_DIR_NAME] == [dump_dir]
        assert (dump_dir / "vmcore-incomplete").read_bytes() == payload
        assert sorted(p.name for p in dump_dir.iterdir()) == ["kdump-agent.json", "vmcore-incomplete"]
    assert sha256(device) == before
