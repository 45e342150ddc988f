"""debug_mem_level's line, on fixed /proc text and on a fake /proc tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdump_agent.memory import parse_meminfo, report, snapshot

# A capture kernel at crashkernel=128M, a few seconds into the dump.
MEMINFO = """\
MemTotal:          97324 kB
MemFree:           25700 kB
MemAvailable:      41984 kB
Buffers:               0 kB
Cached:            52224 kB
Shmem:             46080 kB
Slab:               9216 kB
SUnreclaim:         5120 kB
KernelStack:        1056 kB
PageTables:          512 kB
HugePages_Total:       0
Hugepagesize:       2048 kB
"""

AGENT_STATUS = """\
Name:\tkdump-agent
Umask:\t0077
State:\tR (running)
Pid:\t200
VmPeak:\t   61440 kB
VmHWM:\t   32768 kB
VmRSS:\t   30720 kB
Threads:\t3
"""

COLLECTOR_STATUS = """\
Name:\tmakedumpfile
Pid:\t300
VmHWM:\t   20480 kB
VmRSS:\t   18432 kB
"""

KTHREAD_STATUS = "Name:\tkworker/0:1\nPid:\t2\nThreads:\t1\n"

PROCESSES = [("sh[1]", 1024), ("kdump-agent[200]", 30720), ("kdump-agent[199]", 2048),
             ("makedumpfile[300]", 18432), ("udevd[90]", 3072), ("systemd-journal[80]", 512)]

LEVEL_1 = "memory (MiB): MemFree 25.1, MemAvailable 41.0; agent VmRSS 30.0, VmHWM 32.0"
LEVEL_2 = ("memory (MiB): MemFree 25.1, MemAvailable 41.0, Buffers 0.0, Cached 51.0, Shmem 45.0; "
           "agent VmRSS 30.0, VmHWM 32.0; collector makedumpfile VmRSS 18.0, VmHWM 20.0")
LEVEL_3 = ("memory (MiB): MemFree 25.1, MemAvailable 41.0, Buffers 0.0, Cached 51.0, Shmem 45.0, "
           "Slab 9.0, SUnreclaim 5.0, KernelStack 1.0, PageTables 0.5; "
           "agent VmRSS 30.0, VmHWM 32.0; collector makedumpfile VmRSS 18.0, VmHWM 20.0; "
           "largest VmRSS kdump-agent[200] 30.0, makedumpfile[300] 18.0, udevd[90] 3.0, "
           "kdump-agent[199] 2.0, sh[1] 1.0")


def test_parse_meminfo_reads_sizes_in_kib_and_leaves_counts_out() -> None:
    values = parse_meminfo(MEMINFO)
    assert values["MemFree"] == 25700
    assert values["Hugepagesize"] == 2048
    assert "HugePages_Total" not in values


def test_parse_meminfo_reads_a_process_status_too() -> None:
    assert parse_meminfo(AGENT_STATUS) == {"VmPeak": 61440, "VmHWM": 32768, "VmRSS": 30720}


def test_level_0_reports_nothing(tmp_path: Path) -> None:
    assert report(0, MEMINFO, AGENT_STATUS, PROCESSES, COLLECTOR_STATUS) is None
    assert snapshot(0, str(tmp_path / "no-proc")) is None


def test_level_1_shows_free_memory_and_the_agent_only() -> None:
    assert report(1, MEMINFO, AGENT_STATUS, PROCESSES, COLLECTOR_STATUS) == LEVEL_1


def test_level_2_adds_page_cache_shmem_and_the_collector() -> None:
    assert report(2, MEMINFO, AGENT_STATUS, PROCESSES, COLLECTOR_STATUS) == LEVEL_2


def test_level_2_without_a_collector_leaves_it_out() -> None:
    assert report(2, MEMINFO, AGENT_STATUS, None) == LEVEL_2.split("; collector")[0]


def test_level_3_adds_kernel_memory_and_the_five_largest_processes() -> None:
    assert report(3, MEMINFO, AGENT_STATUS, PROCESSES, COLLECTOR_STATUS) == LEVEL_3


def test_fields_the_kernel_does_not_report_are_left_out() -> None:
    old_kernel = MEMINFO.replace("MemAvailable:      41984 kB\n", "")
    assert report(1, old_kernel, KTHREAD_STATUS, None) == "memory (MiB): MemFree 25.1"


def fake_proc(root: Path, statuses: dict[str, str]) -> Path:
    """A /proc with meminfo, the given <pid>/status files and self/status (the agent)."""
    root.mkdir()
    (root / "meminfo").write_text(MEMINFO)
    (root / "sys").mkdir()  # not a process
    for pid, text in {"self": AGENT_STATUS, **statuses}.items():
        (root / pid).mkdir()
        (root / pid / "status").write_text(text)
    return root


def test_snapshot_reads_a_proc_tree(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {"1": "Name:\tsh\nVmRSS:\t1024 kB\n", "2": KTHREAD_STATUS,
                                         "200": AGENT_STATUS, "300": COLLECTOR_STATUS})
    (proc / "77").mkdir()  # a process that exited while we listed /proc
    assert snapshot(3, str(proc), collector_pid=300) == LEVEL_3.replace(
        "udevd[90] 3.0, kdump-agent[199] 2.0, sh[1] 1.0", "sh[1] 1.0")


def test_snapshot_leaves_out_a_collector_that_has_exited(tmp_path: Path) -> None:
    proc = fake_proc(tmp_path / "proc", {})
    assert snapshot(2, str(proc), collector_pid=300) == LEVEL_2.split("; collector")[0]


def test_snapshot_without_proc_says_so_instead_of_raising(tmp_path: Path) -> None:
    missing = tmp_path / "no-proc"
    assert snapshot(1, str(missing)) == f"memory: cannot read {missing}/meminfo: No such file or directory"


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs Linux /proc")
def test_snapshot_of_this_machine_names_the_fields() -> None:
    line = snapshot(3)
    assert line is not None and line.startswith("memory (MiB): MemFree ")
    assert "; agent VmRSS " in line and "; largest VmRSS " in line
