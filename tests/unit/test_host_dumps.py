"""`kdump-agent dumps`, status's last dump and the boot line, over dump directories made here.

The directories are laid out as the capture leaves them (layout.py's names, the record's
keys); the real ones, made by real makedumpfile and sent through a real sshd, are in
tests/integration/test_dumps_listing.py.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any

import pytest

from kdump_agent import cli, system
from kdump_agent.config import parse
from kdump_agent.errors import KdumpError, MountError
from kdump_agent.host import dumps, service, status
from kdump_agent.host.dumpstore import LocalStore, nfs_read_only_options, open_store
from kdump_agent.host.hostpaths import HostPaths
from kdump_agent.host.lastboot import previous_boot_start
from kdump_agent.layout import DumpDirName, parse_dump_dir_name

SYSRQ = {"message": "sysrq triggered crash", "kind": "sysrq", "header": None,
         "function": "sysrq_handle_crash+0x16/0x20",
         "frames": ["__handle_sysrq+0x8b/0xe0"], "taint": None, "task": {"comm": "sh", "pid": 1},
         "kernel": "6.1.0", "signature": "5d0c1a9e2b7f"}
OOPS = {**SYSRQ, "message": "Fatal exception", "kind": "oops",
        "header": "BUG: kernel NULL pointer dereference", "signature": "77aa0b3c9d10"}


def make_dump(root: Path, name: str, *, vmcore: bytes | None = b"KDUMP   data",
              result: str | None = "success",
              panic: dict[str, Any] | None = None, started: str | None = None, hashed: bool = True,
              final: bool = True, record: bytes | None = None) -> Path:
    """A dump directory as the capture leaves it: vmcore (or vmcore-incomplete) and the record."""
    directory = root / name
    directory.mkdir(parents=True)
    (directory / "vmcore-dmesg.txt").write_text("sysrq: Trigger a crash\n")
    files = [{"name": "vmcore-dmesg.txt", "size": 23, "sha256": "0" * 64}]
    if vmcore is not None:
        file_name = "vmcore" if final else "vmcore-incomplete"
        (directory / file_name).write_bytes(vmcore)
        if final:
            files.append({"name": "vmcore", "size": len(vmcore),
                          "sha256": hashlib.sha256(vmcore).hexdigest() if hashed else None})
    if record is None and result is not None:
        manifest: dict[str, Any] = {"format": 1, "result": result, "files": files,
                                    "started": started or "2024-05-01T10:00:00+0000"}
        if panic is not None:
            manifest["panic"] = panic
        record = json.dumps(manifest).encode()
    if record is not None:
        (directory / "kdump-agent.json").write_bytes(record)
    return directory


def test_only_our_directory_names_are_dumps() -> None:
    when = "2024-05-01-10:22:33"
    assert parse_dump_dir_name(f"10.0.2.15-{when}") == DumpDirName("10.0.2.15", when, 1)
    assert parse_dump_dir_name(f"127.0.0.1-{when}-3") == DumpDirName("127.0.0.1", when, 3)
    assert parse_dump_dir_name(f"fd00::15-{when}") == DumpDirName("fd00::15", when, 1)
    for foreign in ("restore-raw.partial", "lost+found", "old-dumps", "127.0.0.1-2024-05-01",
                    "127.0.0.1-2024-13-01-10:22:33", "999.0.0.1-2024-05-01-10:22:33",
                    f"127.0.0.1-{when}-1", f"127.0.0.1-{when}.bak", f"host-{when}"):
        assert parse_dump_dir_name(foreign) is None, foreign


def test_the_listing_is_newest_first_skips_what_is_not_ours_and_groups_repeats(tmp_path: Path) -> None:
    make_dump(tmp_path, "127.0.0.1-2024-05-01-10:00:00", panic=SYSRQ)
    make_dump(tmp_path, "127.0.0.1-2024-05-02-10:00:00", panic=OOPS)
    make_dump(tmp_path, "10.0.2.15-2024-05-03-10:00:00", panic=SYSRQ)
    make_dump(tmp_path, "127.0.0.1-2024-05-03-10:00:00-2", panic=SYSRQ)
    make_dump(tmp_path, "127.0.0.1-2024-04-30-09:00:00", panic=None)  # before the panic object
    make_dump(tmp_path, "restore-raw.partial", final=False, result="incomplete")
    make_dump(tmp_path, "my-notes", panic=SYSRQ)
    (tmp_path / "127.0.0.1-2024-05-04-10:00:00").write_text("a file, not a directory")

    listed = dumps.list_dumps(LocalStore(tmp_path))

    assert [d.directory for d in listed] == [
        "127.0.0.1-2024-05-03-10:00:00-2", "10.0.2.15-2024-05-03-10:00:00", "127.0.0.1-2024-05-02-10:00:00",
        "127.0.0.1-2024-05-01-10:00:00", "127.0.0.1-2024-04-30-09:00:00"]
    assert [d.repeats for d in listed] == [2, 1, 0, 0, 0]
    lines = [dumps.line(d) for d in listed]
    assert lines[0] == ('2024-05-03 10:00:00 #2 127.0.0.1       complete         12 B  '
                        'sysrq: "sysrq triggered crash" signature 5d0c1a9e2b7f; '
                        'same signature as 2 earlier dumps')
    assert lines[1].startswith("2024-05-03 10:00:00    10.0.2.15       complete         12 B  sysrq:")
    assert lines[2].endswith('oops: "Fatal exception" signature 77aa0b3c9d10')
    assert lines[4].endswith("complete         12 B  panic unknown")


def test_an_incomplete_or_unrecorded_dump_is_listed_for_what_it_is(tmp_path: Path) -> None:
    make_dump(tmp_path, "127.0.0.1-2024-05-01-10:00:00", final=False, result="failure", panic=SYSRQ,
              vmcore=b"x" * 3 * (1 << 20))
    make_dump(tmp_path, "127.0.0.1-2024-05-02-10:00:00", vmcore=None, result="failure")
    # the record's reserved space, never written; then no record at all: the vmcore's name says
    make_dump(tmp_path, "127.0.0.1-2024-05-03-10:00:00", result=None, record=b"\0" * 4096)
    make_dump(tmp_path, "127.0.0.1-2024-05-04-10:00:00", result=None)

    by_name = {d.directory: d for d in dumps.list_dumps(LocalStore(tmp_path))}

    cut = by_name["127.0.0.1-2024-05-01-10:00:00"]
    assert (cut.complete, cut.vmcore, dumps.human_size(cut.size)) == (False, "vmcore-incomplete", "3.0 MiB")
    assert "incomplete    3.0 MiB  sysrq:" in dumps.line(cut)
    assert dumps.line(by_name["127.0.0.1-2024-05-02-10:00:00"]).endswith(
        "incomplete  no vmcore  panic unknown")
    reserved = by_name["127.0.0.1-2024-05-03-10:00:00"]
    assert reserved.complete  # the vmcore has its final name: it is whole
    assert dumps.line(reserved).endswith("panic unknown; no record written")
    (tmp_path / "127.0.0.1-2024-05-03-10:00:00" / "kdump-agent.json").write_text('{"result": "succ')
    garbled = dumps.list_dumps(LocalStore(tmp_path))[1]
    assert (garbled.complete, garbled.problem) == (
        True, "record unreadable: Unterminated string starting at: line 1 column 12 (char 11)")
    assert by_name["127.0.0.1-2024-05-04-10:00:00"].complete


def test_verify_recomputes_each_vmcore_sha256_against_its_record(tmp_path: Path) -> None:
    make_dump(tmp_path, "127.0.0.1-2024-05-01-10:00:00")
    bad = make_dump(tmp_path, "127.0.0.1-2024-05-02-10:00:00")
    make_dump(tmp_path, "127.0.0.1-2024-05-03-10:00:00", hashed=False)  # an SFTP dump: not hashed
    make_dump(tmp_path, "127.0.0.1-2024-05-04-10:00:00", final=False, result="failure")
    (bad / "vmcore").write_bytes(b"KDUMP   dat4")
    store = LocalStore(tmp_path)

    verdicts = [dumps.verify(store, d).verdict for d in dumps.list_dumps(store)]

    assert verdicts == [dumps.Verdict.NOT_HASHED, dumps.Verdict.NOT_HASHED, dumps.Verdict.MISMATCH,
                        dumps.Verdict.OK]


def test_the_dumps_command_lists_prints_json_and_fails_a_verify_on_a_mismatch(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_dump(tmp_path, "127.0.0.1-2024-05-01-10:00:00", panic=SYSRQ)
    newest = make_dump(tmp_path, "127.0.0.1-2024-05-02-10:00:00", panic=SYSRQ)

    assert cli.main(["dumps", "--path", str(tmp_path)]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"{tmp_path}: 2 dumps, newest first"
    assert out[1].endswith("same signature as 1 earlier dump")

    assert cli.main(["dumps", "--path", str(tmp_path), "--json", "--verify"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert [(d["directory"], d["complete"], d["verify"], d["signature"], d["same_signature_as"])
            for d in listed] == [
        (str(newest), True, "OK", "5d0c1a9e2b7f", 1),
        (str(tmp_path / "127.0.0.1-2024-05-01-10:00:00"), True, "OK", "5d0c1a9e2b7f", 0)]
    assert listed[0]["panic"] == SYSRQ

    (newest / "vmcore").write_bytes(b"tampered")
    assert cli.main(["dumps", "--path", str(tmp_path), "--verify"]) == 1
    assert "sha256 MISMATCH" in capsys.readouterr().out


def test_without_a_target_the_dumps_are_in_path_on_this_machine(tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    crash = tmp_path / "crash"
    make_dump(crash, "127.0.0.1-2024-05-01-10:00:00", panic=OOPS)
    conf = tmp_path / "kdump.conf"
    conf.write_text(f"path {crash}\n")
    assert cli.main(["dumps", "-c", str(conf)]) == 0
    assert 'oops: "Fatal exception"' in capsys.readouterr().out
    (crash / "127.0.0.1-2024-05-01-10:00:00" / "vmcore").unlink()
    (crash / "127.0.0.1-2024-05-01-10:00:00" / "kdump-agent.json").unlink()
    (crash / "127.0.0.1-2024-05-01-10:00:00" / "vmcore-dmesg.txt").unlink()
    (crash / "127.0.0.1-2024-05-01-10:00:00").rmdir()
    assert cli.main(["dumps", "-c", str(conf)]) == 0
    assert capsys.readouterr().out == f"{crash}: no dumps\n"


def test_a_local_file_system_is_listed_where_this_host_mounted_it(tmp_path: Path) -> None:
    mounted = tmp_path / "mnt"
    make_dump(mounted / "var" / "crash", "127.0.0.1-2024-05-01-10:00:00")
    (mounted / "srv").symlink_to("/var")  # `path` resolved inside the file system, as the capture does
    null = os.stat("/dev/null").st_rdev
    mountinfo = tmp_path / "mountinfo"
    mountinfo.write_text(f"36 25 {os.major(null)}:{os.minor(null)} / {mounted} rw,relatime shared:1 - ext4 "
                         "/dev/null rw\n")
    config = parse("ext4 /dev/null\npath /srv/crash\n", "kdump.conf")
    with open_store(config, mountinfo=str(mountinfo)) as store:
        assert [d.directory for d in dumps.list_dumps(store)] == ["127.0.0.1-2024-05-01-10:00:00"]
        assert store.where == f"/dev/null:/srv/crash (on {mounted})"
    mountinfo.write_text(f"36 25 {os.major(null)}:{os.minor(null)} /sub {mounted} rw - ext4 /dev/null rw\n")
    with pytest.raises(KdumpError, match=r"/dev/null \(ext4\) is not mounted on this host"), \
            open_store(config, mountinfo=str(mountinfo)):
        pass


def test_an_nfs_export_is_mounted_read_only_and_unmounted_after(tmp_path: Path, mocker: Any) -> None:
    assert nfs_read_only_options("4", "192.0.2.7") == (
        "nfs4", "ro,vers=4,soft,timeo=50,retrans=2,addr=192.0.2.7")
    fstype, options = nfs_read_only_options("3", "192.0.2.7")
    assert (fstype, options.split(",")[:3]) == ("nfs", ["ro", "vers=3", "nolock"])
    calls: list[tuple[str, ...]] = []

    def mount(source: str, target: str, fstype: str, options: str = "") -> None:
        calls.append(("mount", source, fstype, options))
        if fstype == "nfs4":
            raise MountError("Protocol not supported")
        make_dump(Path(target) / "crash", "10.0.2.15-2024-05-01-10:00:00")

    mocker.patch.object(system, "mount", side_effect=mount)
    umount = mocker.patch.object(system, "umount",
                                 side_effect=lambda target, force=False: calls.append(("umount",)))
    config = parse("nfs 192.0.2.7:/exports\npath /crash\n", "kdump.conf")
    with open_store(config) as store:
        assert [d.directory for d in dumps.list_dumps(store)] == ["10.0.2.15-2024-05-01-10:00:00"]
        assert store.where == "192.0.2.7:/exports:/crash"
        assert not umount.called
    assert [call[0] for call in calls] == ["mount", "mount", "umount"]
    assert calls[1][1:3] == ("192.0.2.7:/exports", "nfs") and calls[1][3].startswith("ro,vers=3,")


def status_paths(tmp_path: Path) -> HostPaths:
    return HostPaths(mountinfo=str(tmp_path / "mountinfo"))


def test_status_shows_the_last_dump_in_one_advisory_line(tmp_path: Path) -> None:
    crash = tmp_path / "crash"
    config = parse(f"path {crash}\n", "kdump.conf")
    check = status.check_last_dump(config, status_paths(tmp_path))
    assert check.detail == f"none: {crash} does not exist yet"
    make_dump(crash, "127.0.0.1-2024-05-01-10:00:00", panic=SYSRQ)
    check = status.check_last_dump(config, status_paths(tmp_path))
    assert (check.ok, check.blocking) == (True, False)
    assert check.detail == (f'2024-05-01 10:00:00, {crash}/127.0.0.1-2024-05-01-10:00:00 (complete): '
                            'sysrq: "sysrq triggered crash" signature 5d0c1a9e2b7f')
    make_dump(crash, "127.0.0.1-2024-05-02-10:00:00", final=False, result="failure")
    check = status.check_last_dump(config, status_paths(tmp_path))
    assert (check.ok, check.blocking) == (False, False)
    assert "(incomplete): panic unknown" in check.detail
    assert status.report([check])[-1] == "ready to dump (advisory: last dump)"
    remote = status.check_last_dump(parse("ssh kdump@dumps.example\n", "kdump.conf"), status_paths(tmp_path))
    assert remote.ok and "not looked for on a network target" in remote.detail


def boot(tmp_path: Path, boot_id: str, btime: int) -> HostPaths:
    (tmp_path / "boot_id").write_text(boot_id + "\n")
    (tmp_path / "stat").write_text(f"cpu  1 2 3\nbtime {btime}\nprocesses 9\n")
    return HostPaths(boot_id=str(tmp_path / "boot_id"), stat=str(tmp_path / "stat"),
                     state_dir=str(tmp_path / "state"), mountinfo=str(tmp_path / "mountinfo"))


def test_the_previous_boot_start_is_remembered_across_boots_and_restarts(tmp_path: Path) -> None:
    assert previous_boot_start(boot(tmp_path, "first", 1000)) is None  # nothing recorded yet
    assert previous_boot_start(boot(tmp_path, "first", 1000)) is None  # a restart in the same boot
    assert previous_boot_start(boot(tmp_path, "second", 5000)) == 1000
    assert previous_boot_start(boot(tmp_path, "second", 5001)) == 1000  # the clock stepped: same boot
    assert previous_boot_start(boot(tmp_path, "third", 9000)) == 5001


def test_start_logs_one_line_for_a_dump_taken_since_the_last_boot(tmp_path: Path,
                                                                 caplog: pytest.LogCaptureFixture) -> None:
    crash = tmp_path / "crash"
    config = parse(f"path {crash}\n", "kdump.conf")
    make_dump(crash, "127.0.0.1-2024-05-01-10:00:00", panic=OOPS, started="2024-05-01T10:00:00+0000")
    make_dump(crash, "127.0.0.1-2024-05-02-10:00:00", panic=SYSRQ, started="2024-05-02T12:00:00+0200")
    assert service.log_dumps_since_last_boot(config, boot(tmp_path, "crashed", 1714600000)) == []
    with caplog.at_level(logging.WARNING, logger="kdump-agent"):
        lines = service.log_dumps_since_last_boot(config, boot(tmp_path, "after", 1714700000))
    assert lines == [(f'dump taken since the last boot: {crash}/127.0.0.1-2024-05-02-10:00:00 (complete): '
                     'sysrq: "sysrq triggered crash" signature 5d0c1a9e2b7f')]
    assert caplog.messages == lines


def test_the_boot_line_never_stops_start(tmp_path: Path, mocker: Any,
                                        caplog: pytest.LogCaptureFixture) -> None:
    config = parse(f"path {tmp_path / 'crash'}\n", "kdump.conf")
    boot(tmp_path, "crashed", 1000)
    previous_boot_start(boot(tmp_path, "crashed", 1000))
    mocker.patch.object(service, "list_dumps", side_effect=RuntimeError("disk on fire"))
    assert service.log_dumps_since_last_boot(config, boot(tmp_path, "after", 2000)) == []
    assert caplog.messages == ["could not look for dumps since the last boot: RuntimeError: disk on fire"]
    ssh = parse("ssh kdump@dumps.example\n", "kdump.conf")
    assert service.log_dumps_since_last_boot(ssh, boot(tmp_path, "later", 3000)) == []  # no server at boot
