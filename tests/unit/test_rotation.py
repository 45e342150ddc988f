"""Which old dumps go (rotation.py) and how kdump.conf names the rules (config.py)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from kdump_agent import config as kdump_config
from kdump_agent import deadlines, rotation
from kdump_agent.context import Capture, Paths
from kdump_agent.layout import DumpDirName, parse_dump_dir_name
from kdump_agent.machine import State
from kdump_agent.rotation import MIB, Entry, ExistingDump
from kdump_agent.runner import Journal

HOST = "127.0.0.1"
NOW = "2025-06-01-12:00:00"
VMCORE = Entry("vmcore", 100 * MIB, True)
DMESG = Entry("vmcore-dmesg.txt", 100_000, True)


def dump(name: str, *entries: Entry, manifest: bytes | None = None) -> ExistingDump:
    found = rotation.examine(name, list(entries) or [VMCORE, DMESG], manifest)
    assert found is not None, name
    return found


def test_a_dump_directory_of_ours_is_named_by_the_layout_and_holds_only_its_files() -> None:
    assert rotation.examine(f"{HOST}-2024-01-01-00:00:00", [VMCORE, DMESG], None) is not None
    assert rotation.examine(f"{HOST}-2024-01-01-00:00:00", [], None) is not None  # made, then the crash
    # An admin's file, a subdirectory or a link inside: someone's work, never ours to delete.
    notes = Entry("notes.txt", 10, True)
    assert rotation.examine(f"{HOST}-2024-01-01-00:00:00", [VMCORE, notes], None) is None
    assert rotation.examine(f"{HOST}-2024-01-01-00:00:00", [Entry("vmcore", 0, False)], None) is None
    for name in ("keep-me", f"{HOST}-2024-13-01-00:00:00", f"{HOST}-2024-01-01",
                 f"{HOST}-2024-01-01-00:00:00-1", f"{HOST}-2024-01-01-00:00:00-x", "lost+found"):
        assert rotation.examine(name, [VMCORE], None) is None, name


def test_the_layout_reads_back_the_names_it_makes() -> None:
    assert parse_dump_dir_name("10.0.2.15-2024-05-06-07:08:09") == DumpDirName(
        "10.0.2.15", "2024-05-06-07:08:09", 1)
    assert parse_dump_dir_name("fd00::2-2024-05-06-07:08:09-3") == DumpDirName(
        "fd00::2", "2024-05-06-07:08:09", 3)


def test_complete_means_a_vmcore_under_its_final_name() -> None:
    assert dump(f"{HOST}-2024-01-01-00:00:00").complete
    assert dump(f"{HOST}-2024-01-01-00:00:00", Entry("vmcore.flat", 5, True)).complete
    partial = dump(f"{HOST}-2024-01-01-00:00:00", Entry("vmcore-incomplete", 5, True), DMESG)
    assert not partial.complete and partial.size == 5 + DMESG.size and partial.vmcore_size is None


def test_keep_old_dumps_deletes_incomplete_then_oldest_and_only_this_hosts() -> None:
    dumps = [
        dump(f"{HOST}-2024-03-01-00:00:00"),
        dump(f"{HOST}-2024-01-01-00:00:00"),
        dump(f"{HOST}-2024-04-01-00:00:00", Entry("vmcore-incomplete", 1, True)),
        dump(f"{HOST}-2024-01-01-00:00:00-2"),
        dump("10.0.0.7-2020-01-01-00:00:00"),
    ]
    names = [d.name for d in rotation.over_count(dumps, HOST, NOW, keep=2)]
    # keep 2: one old dump stays beside the new one, the newest complete one.
    assert names == [f"{HOST}-2024-04-01-00:00:00", f"{HOST}-2024-01-01-00:00:00",
                     f"{HOST}-2024-01-01-00:00:00-2"]
    assert rotation.over_count(dumps, HOST, NOW, keep=0) == []
    assert len(rotation.over_count(dumps, HOST, NOW, keep=1)) == 4
    assert rotation.over_count(dumps, HOST, NOW, keep=5) == []


def test_the_dump_being_made_and_its_second_attempt_are_never_candidates() -> None:
    dumps = [dump(f"{HOST}-{NOW}"), dump(f"{HOST}-{NOW}-2"), dump(f"{HOST}-2024-01-01-00:00:00")]
    doomed = rotation.over_count(dumps, HOST, NOW, keep=1)
    assert [d.name for d in doomed] == [f"{HOST}-2024-01-01-00:00:00"]
    assert rotation.plan_space(dumps, HOST, NOW, free=0, keep_free=0, needs=150 * MIB) is None


def test_free_disk_size_deletes_as_few_as_needed_oldest_first() -> None:
    dumps = [dump(f"{HOST}-2024-0{month}-01-00:00:00") for month in (3, 1, 2)]
    other = dump("10.0.0.7-2020-01-01-00:00:00")
    plan = rotation.plan_space([*dumps, other], HOST, NOW, free=50 * MIB, keep_free=100 * MIB,
                               needs=120 * MIB)
    assert plan is not None
    # 50 free + 2 x ~100 deleted - 120 for the dump >= 100 to keep free.
    assert [d.name for d in plan] == [f"{HOST}-2024-01-01-00:00:00", f"{HOST}-2024-02-01-00:00:00"]
    assert rotation.plan_space(dumps, HOST, NOW, free=500 * MIB, keep_free=100 * MIB, needs=120 * MIB) == []
    # Even all three would not do: none is deleted (the caller then tries a higher dump level).
    assert rotation.plan_space(dumps, HOST, NOW, free=0, keep_free=300 * MIB, needs=120 * MIB) is None


def test_dump_level_is_read_from_the_collector_and_the_record() -> None:
    assert rotation.dump_level(["makedumpfile", "-l", "-d", "31"]) == 31
    assert rotation.dump_level(["/usr/sbin/makedumpfile", "-d1"]) == 1
    assert rotation.dump_level(["makedumpfile", "-c", "-d", "11,31"]) == 11
    assert rotation.dump_level(["makedumpfile", "-l"]) == 0
    assert rotation.dump_level(["cp", "--sparse=always"]) is None
    record = json.dumps({"collector": {"argv": ["makedumpfile", "-d", "17", "/proc/vmcore", "x"]}}).encode()
    assert rotation.recorded_dump_level(record) == 17
    assert rotation.recorded_dump_level(b"{not json") is None
    assert rotation.recorded_dump_level(b'{"collector": {"argv": [1]}}') is None


def test_a_higher_dump_level_replaces_the_configured_one() -> None:
    assert rotation.with_dump_level(("makedumpfile", "-l", "-d", "1", "--message-level", "7"), 31) == (
        "makedumpfile", "-l", "--message-level", "7", "-d", "31")
    assert rotation.with_dump_level(("makedumpfile", "-c", "-d11,31"), 31) == (
        "makedumpfile", "-c", "-d", "31")
    assert rotation.with_dump_level(("makedumpfile", "-l"), 31) == ("makedumpfile", "-l", "-d", "31")


def test_earlier_dumps_estimate_the_size_at_their_dump_level() -> None:
    def at(name: str, size: int, level: int) -> ExistingDump:
        record = json.dumps({"collector": {"argv": ["makedumpfile", "-d", str(level)]}}).encode()
        return dump(name, Entry("vmcore", size, True), Entry("kdump-agent.json", 10, True), manifest=record)

    dumps = [at(f"{HOST}-2024-01-01-00:00:00", 10, 1), at(f"{HOST}-2024-02-01-00:00:00", 30, 1),
             at(f"{HOST}-2024-03-01-00:00:00", 5, 31), at("10.0.0.7-2024-01-01-00:00:00", 99, 1)]
    assert rotation.earlier_size(dumps, HOST, 1) == 30
    assert rotation.earlier_size(dumps, HOST, 31) == 30  # any level bounds level 31 from above
    assert rotation.earlier_size(dumps, HOST, 17) is None


def test_makedumpfiles_report_gives_the_size_it_would_write() -> None:
    report = "Original pages  : 0x00000000000327ab\nTotal pages     : 0x3ffdd\nWrite bytes     : 41130632\n"
    assert rotation.written_bytes(report) == 41130632
    assert rotation.written_bytes("makedumpfile Completed.\n") is None


def test_deletion_starts_with_the_vmcore_and_ends_with_the_record() -> None:
    order = rotation.removal_order(["kdump-agent.json", "vmcore-dmesg.txt", "vmcore-incomplete",
                                    "kexec-dmesg.log"])
    assert order[0] == "vmcore-incomplete" and order[-1] == "kdump-agent.json"


def test_kdump_conf_takes_keep_old_dumps_and_free_disk_size() -> None:
    parsed = kdump_config.parse("path /var/crash\nkeep_old_dumps 3\nfree_disk_size 2048\n", "k.conf")
    assert (parsed.keep_old_dumps, parsed.free_disk_size) == (3, 2048)
    assert "keep_old_dumps: 3" in parsed.summary() and "free_disk_size: 2048" in parsed.summary()
    default = kdump_config.parse("path /var/crash\n", "k.conf")
    assert (default.keep_old_dumps, default.free_disk_size) == (0, 0)


@pytest.mark.parametrize("line", ["keep_old_dumps -1", "keep_old_dumps three", "free_disk_size 1.5",
                                  "free_disk_size 2G", "keep_old_dumps 1 2"])
def test_kdump_conf_refuses_what_is_not_a_count(line: str) -> None:
    with pytest.raises(kdump_config.ConfigErrors) as raised:
        kdump_config.parse(f"{line}\n", "k.conf")
    assert raised.value.errors[0].line == 1
    assert line.split()[0] in str(raised.value.errors[0])


def test_a_raw_target_has_nothing_to_rotate_and_check_config_says_so() -> None:
    parsed = kdump_config.parse("raw /dev/vdb\nkeep_old_dumps 2\nfree_disk_size 10\n", "k.conf")
    assert [n.line for n in parsed.notices] == [2, 3]
    assert "ignored with a raw target" in parsed.notices[0].message


def test_rotation_gets_its_time_on_top_of_the_states_deadline(tmp_path: Path) -> None:
    vmcore = tmp_path / "vmcore"
    vmcore.write_bytes(b"")
    capture = Capture(paths=Paths(vmcore=str(vmcore)), journal=Journal())
    capture.config = kdump_config.parse("path /var/crash\n", "k.conf")
    plain = [deadlines.deadline_for(capture, state) for state in (State.PREPARE_DIR, State.COLLECT)]
    capture.config = kdump_config.parse("keep_old_dumps 2\nfree_disk_size 10\n", "k.conf")
    assert deadlines.deadline_for(capture, State.PREPARE_DIR) == plain[0] + deadlines.ROTATION_SECONDS
    assert deadlines.deadline_for(capture, State.COLLECT) == (
        plain[1] * (1 + deadlines.ESTIMATE_SHARE) + deadlines.ROTATION_SECONDS)
