"""How core_collector becomes an argv (RHEL's rules for file targets)."""

from kdump_agent.steps.collect import collector_argv


def test_makedumpfile_gets_source_and_destination() -> None:
    argv, to_stdout = collector_argv(("makedumpfile", "-l", "--message-level", "7", "-d", "31"),
                                     "/proc/vmcore", "/t/vmcore-incomplete")
    assert argv == ["makedumpfile", "-l", "--message-level", "7", "-d", "31",
                    "/proc/vmcore", "/t/vmcore-incomplete"]
    assert not to_stdout


def test_flattened_flag_is_dropped_for_file_targets() -> None:
    argv, _ = collector_argv(("makedumpfile", "-F", "-c", "-d", "1"), "/proc/vmcore", "/t/v")
    assert "-F" not in argv


def test_cat_writes_the_dump_to_its_standard_output() -> None:
    argv, to_stdout = collector_argv(("cat",), "/proc/vmcore", "/t/v")
    assert argv == ["cat", "/proc/vmcore"]
    assert to_stdout


def test_cp_copies_to_the_destination() -> None:
    argv, to_stdout = collector_argv(("cp", "--sparse=always"), "/proc/vmcore", "/t/v")
    assert argv == ["cp", "--sparse=always", "/proc/vmcore", "/t/v"]
    assert not to_stdout


def test_stream_target_gets_flattened_output_on_stdout() -> None:
    argv, to_stdout = collector_argv(("makedumpfile", "-l", "-d", "31"), "/proc/vmcore", None)
    assert argv == ["makedumpfile", "-l", "-d", "31", "-F", "/proc/vmcore"]
    assert to_stdout


def test_flattened_flag_is_not_doubled_for_streams() -> None:
    argv, _ = collector_argv(("makedumpfile", "-F", "-d", "31"), "/proc/vmcore", None)
    assert argv.count("-F") == 1


def test_threads_only_as_the_admin_wrote_them() -> None:
    # --num-threads made Debian 12's makedumpfile slower and could abort it (collector_argv).
    argv, _ = collector_argv(("makedumpfile", "-d", "31"), "/proc/vmcore", "/t/v")
    assert not any(a.startswith("--num-threads") for a in argv)
    argv, _ = collector_argv(("makedumpfile", "--num-threads=2", "-d", "31"), "/proc/vmcore", "/t/v")
    assert argv == ["makedumpfile", "--num-threads=2", "-d", "31", "/proc/vmcore", "/t/v"]


def test_dump_level_list_is_passed_for_makedumpfile_to_fall_back_through() -> None:
    # makedumpfile retries with the next level of "-d 11,31" when the disk is full.
    argv, _ = collector_argv(("makedumpfile", "-c", "-d", "11,31"), "/proc/vmcore", "/t/v")
    assert argv[:4] == ["makedumpfile", "-c", "-d", "11,31"]
