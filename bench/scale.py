"""Cost as the work grows: guests of 1, 4 and 8 GiB, the capture kernel's CPUs, compression.

Every guest here has most of its free memory filled with random data before the panic
(harness.panic_initrd's `fill`), so /proc/vmcore holds real work: the default collector
(`-d 31`) scans every page and leaves the filled ones out (tmpfs pages are page cache),
`-d 1` copies them, and the difference between the two is the copying.

- `scale`: per guest size, our memory floor (a local ext4 dump, the default collector),
  `kdump-agent estimate`'s recommendation for that guest (host/sizing.estimate_here fed the
  guest's own RAM map), and COLLECT's time and input rate (MiB/s of /proc/vmcore) at
  TIME_MIB, with `-d 31` (a whole capture, read back and judged) and with `-d 1` (the guest
  stopped when COLLECT ends: collect_only). The 1 GiB floor is bisected in 16M steps, then
  8M below (or, in the full run, walked up from 8M below the unfilled guest's floor); each
  larger guest's is walked up in 8M steps from the floor below it, as more RAM only adds work.
- `threads`: a THREADS_GIB guest, one CPU against THREADS_CPUS (`-smp`, `nr_cpus=` on the
  capture line): COLLECT of the `-d 1` dump with makedumpfile's `--num-threads`, and
  MemFree when the collector of a `-d 31` dump starts, which is what the CPUs cost the
  reservation.
- `compression`: makedumpfile `-l` (lzo) against `-c` (zlib) on the cached real vmcore at
  the default dump level, on this host.

The guests run under TCG and an 8 GiB one takes minutes, so every figure is one run.
"""

from __future__ import annotations

import json
import re
import shutil
import statistics
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from run import (
    MIB,
    OURS_CONFIG,
    LocalDisk,
    Run,
    Variant,
    capture_once,
    find_vmcore,
    log,
    memfree_at_collect,
    panic_once,
    state_seconds,
    why_failed,
)

from harness.cache import cache_dir
from harness.kernels import Kernel
from harness.scenario import CAPTURE_CMDLINE, CAPTURE_IMAGES, with_config_overlay
from kdump_agent import config as kdump_config
from kdump_agent.config import DEFAULT_COLLECTOR
from kdump_agent.host.hostpaths import HostPaths
from kdump_agent.host.sizing import estimate_here

SCALE_GIB = (1, 4, 8)
THREADS_GIB = 1  # the -d 1 dump with threads takes ~7x one CPU's under TCG: 502 s at 4 GiB
THREADS_CPUS = 2
TIME_MIB = 256  # the reservation COLLECT is timed at: RHEL's default for 4-64 GiB
FLOOR_STEPS_MIB = list(range(64, 257, 16))  # the 1 GiB bisection
FINE_STEP_MIB = 8
FLOOR_TOP_MIB = 320  # the larger guests' upward walk stops here
COMPRESSION_RUNS = 3
# A boot of the largest guest: filling 8 GiB, then its -d 1 COLLECT (two minutes under TCG).
BIG_BOOT_TIMEOUT_S = 1200
SAVED = "dump saved in"


def collector_at(level: int, threads: int = 0) -> tuple[str, ...]:
    """The default core_collector with its dump level changed (and --num-threads, if any)."""
    argv = list(DEFAULT_COLLECTOR)
    argv[argv.index("-d") + 1] = str(level)
    return (*argv, *([f"--num-threads={threads}"] if threads else []))


def collector_overlay(ours_image: Path, level: int, threads: int = 0) -> Path:
    """Our image with another core_collector laid over its kdump.conf: the collector is read
    at capture time, and the same makedumpfile is packed either way."""
    config = f"{OURS_CONFIG}core_collector {' '.join(collector_at(level, threads))}\n"
    name = f"bench-scale-d{level}" + (f"-threads{threads}" if threads else "")
    return with_config_overlay(ours_image, config, cache_dir(CAPTURE_IMAGES) / f"{name}.img")


def variant(name: str, image: Path, gib: int, *, cpus: int = 1, cmdline: str = CAPTURE_CMDLINE) -> Variant:
    """Ours to a local ext4 disk large enough for a -d 1 dump, in a filled guest of `gib`."""
    return Variant(name, image, lambda console: SAVED in console, LocalDisk(gib * 1024 + 512),
                   capture_cmdline=cmdline, memory_mib=gib * 1024, cpus=cpus, fill=True,
                   timeout_s=BIG_BOOT_TIMEOUT_S)


# --- what a run leaves ------------------------------------------------------------------------

_E820 = re.compile(r"BIOS-e820: \[mem 0x([0-9a-f]+)-0x([0-9a-f]+)\] usable")


def guest_ram(console: str) -> list[tuple[int, int]]:
    """The first kernel's usable RAM ranges (its e820 map: the "System RAM" of its
    /proc/iomem), from its part of the console; the capture kernel prints a map of its own."""
    first = console.split("KDUMP-TEST:", 1)[0]
    ranges = sorted({(int(start, 16), int(end, 16)) for start, end in _E820.findall(first)})
    if not ranges:
        raise RuntimeError("no BIOS-e820 usable ranges on the first kernel's console")
    return ranges


def iomem_text(console: str) -> str:
    """The guest's RAM as /proc/iomem shows it, for host/hostpaths.system_ram."""
    return "".join(f"{start:08x}-{end:08x} : System RAM\n" for start, end in guest_ram(console))


def vmcore_bytes(console: str, crashkernel_mib: int) -> int:
    """/proc/vmcore's size in the capture kernel: the crashed kernel's RAM, less the
    reservation, which kexec leaves out of the ELF headers (a few KiB of headers aside)."""
    return sum(end - start + 1 for start, end in guest_ram(console)) - crashkernel_mib * MIB


def capture_figures(run: Run) -> dict[str, Any]:
    """From one whole capture: COLLECT's seconds and input rate, the dump's size, the
    memory when the collector started and the collector's own peak."""
    if not run.ok:
        return {"collect_s": None, "input_mib_s": None, "why": run.why}
    seconds = state_seconds(run.manifest, "COLLECT")
    files = {f.get("name"): f.get("size") for f in run.manifest.get("files") or []}
    filled = re.search(r"KDUMP-TEST: filled (\d+) MiB", run.console)
    footprint = run.manifest.get("footprint") or {}
    return {"collect_s": seconds, "input_mib_s": input_rate(run.console, run.crashkernel_mib, seconds),
            "vmcore_mib": round(vmcore_bytes(run.console, run.crashkernel_mib) / MIB),
            "filled_mib": int(filled.group(1)) if filled else None,
            "dump_mib": round(files["vmcore"] / MIB, 1) if files.get("vmcore") else None,
            "memfree_at_collect_kib": memfree_at_collect(run.manifest),
            "collector_peak_rss_kib": footprint.get("collector_peak_rss_kib"),
            "collector_argv": (run.manifest.get("collector") or {}).get("argv")}


def forget_dump(workdir: Path) -> None:
    """A -d 1 dump of a filled guest is GiBs: keep the console, not the disk and its copy."""
    for leftover in (workdir / "target.img", workdir / "out"):
        if leftover.is_dir():
            shutil.rmtree(leftover, ignore_errors=True)
        else:
            leftover.unlink(missing_ok=True)


def capture(kernel: Kernel, chosen: Variant, crashkernel_mib: int, workdir: Path) -> Run:
    """A whole capture, read back and judged (run.capture_once); the disk then dropped."""
    run = capture_once(kernel, chosen, crashkernel_mib, workdir)
    forget_dump(workdir)
    return run


@dataclass
class Collected:
    """A capture stopped as its COLLECT state ended: what the console said of it."""

    crashkernel_mib: int
    console: str
    seconds: float | None  # COLLECT's, as the agent timed it; None when it did not succeed
    why: str = ""


_COLLECT_DONE = re.compile(r"kdump-agent: state COLLECT: done in ([0-9.]+) s")


def collect_only(kernel: Kernel, chosen: Variant, crashkernel_mib: int, workdir: Path) -> Collected:
    """Time the collector alone: the guest is stopped when the agent reports COLLECT's end.

    For the -d 1 dumps of filled guests, whose FINALIZE (the sha256 read back) takes three
    times as long as COLLECT, and whose dump would then be GiBs to copy out and check; the
    -d 31 dumps of the same guests are read back and judged in full (capture)."""
    result, _ = panic_once(kernel, chosen, crashkernel_mib, workdir,
                           until=lambda line: "kdump-agent: state COLLECT:" in line)
    forget_dump(workdir)
    done = _COLLECT_DONE.search(result.console)
    seconds = float(done.group(1)) if done else None
    why = "" if done else why_failed(result.console, result.timed_out)
    log(f"{chosen.name} at crashkernel={crashkernel_mib}M: "
        + (f"COLLECT {seconds:.1f} s" if seconds is not None else f"no COLLECT ({why})"))
    return Collected(crashkernel_mib, result.console, seconds, why)


def input_rate(console: str, crashkernel_mib: int, seconds: float | None) -> float | None:
    """MiB/s of /proc/vmcore the collector went through."""
    return round(vmcore_bytes(console, crashkernel_mib) / MIB / seconds, 1) if seconds else None


def capture_kernel_cpus(console: str) -> int | None:
    """How many CPUs the capture kernel brought up (its own "smp: Brought up" line)."""
    found = re.search(r"smp: Brought up \d+ nodes?, (\d+) CPUs?", console.split("KDUMP-TEST: panicking")[-1])
    return int(found.group(1)) if found else None


# --- the memory floor --------------------------------------------------------------------------

def floor_1gib(kernel: Kernel, chosen: Variant, work: Path) -> tuple[int | None, list[Run]]:
    """16M bisection of FLOOR_STEPS_MIB (its first run at the top, TIME_MIB), then one 8M
    step below what it found."""
    def at(mib: int) -> Run:
        return capture(kernel, chosen, mib, work / f"floor-{mib}")

    runs = [at(FLOOR_STEPS_MIB[-1])]
    if not runs[0].ok:
        return None, runs
    low, high = -1, len(FLOOR_STEPS_MIB) - 1  # index `low` fails (or is below the list)
    while high - low > 1:
        middle = (low + high) // 2
        runs.append(at(FLOOR_STEPS_MIB[middle]))
        low, high = (low, middle) if runs[-1].ok else (middle, high)
    floor = FLOOR_STEPS_MIB[high]
    if low >= 0:  # 16M below failed: the 8M between decides
        runs.append(at(floor - FINE_STEP_MIB))
        if runs[-1].ok:
            floor -= FINE_STEP_MIB
    return floor, runs


def floor_upward(kernel: Kernel, chosen: Variant, start_mib: int, work: Path) -> tuple[int | None, list[Run]]:
    """The smallest reservation from start_mib upward, in 8M steps, that dumps: a larger
    guest only adds work, so its floor is not below a smaller one's."""
    runs: list[Run] = []
    for mib in range(start_mib, FLOOR_TOP_MIB + 1, FINE_STEP_MIB):
        runs.append(capture(kernel, chosen, mib, work / f"floor-{mib}"))
        if runs[-1].ok:
            return mib, runs
    return None, runs


def floor_runs(runs: list[Run]) -> list[dict[str, Any]]:
    return [{"crashkernel_mib": r.crashkernel_mib, "ok": r.ok, "why": r.why or None,
             "memfree_at_collect_kib": memfree_at_collect(r.manifest)} for r in runs]


# --- estimate -----------------------------------------------------------------------------------

def estimate_mib(kernel: Kernel, ours_image: Path, console: str, work: Path) -> int:
    """What `kdump-agent estimate` recommends for the guest, by the code the command runs
    (host/sizing.estimate_here): the bench's kdump.conf, the capture kernel and image, and
    the guest's own RAM map in place of this host's /proc/iomem."""
    work.mkdir(parents=True, exist_ok=True)
    (work / "kdump.conf").write_text(OURS_CONFIG)
    (work / "iomem").write_text(iomem_text(console))
    paths = HostPaths(iomem=str(work / "iomem"), meminfo=str(work / "no-meminfo"),
                      crash_size=str(work / "no-crash-size"))
    estimate = estimate_here(kdump_config.load(str(work / "kdump.conf")), paths,
                             kernel=str(kernel.vmlinuz), image=str(ours_image))
    return estimate.recommended // MIB


# --- the three measurements ---------------------------------------------------------------------

@dataclass
class Scaled:
    """scale's rows, and the runs `threads` compares its own with (one CPU, THREADS_GIB)."""

    rows: list[dict[str, Any]]
    full: dict[int, Run]  # -d 31, whole captures at TIME_MIB, by GiB
    d1: dict[int, Collected]  # -d 1, COLLECT alone at TIME_MIB, by GiB


def scale(kernel: Kernel, ours_image: Path, work: Path, unfilled_floor_mib: int | None = None) -> Scaled:
    """Per guest size: floor, estimate, COLLECT with -d 31 and with -d 1.

    The smallest guest's floor is bisected, or, when the run has measured the floor of the
    same image in an unfilled guest of that size, found from 8M below that one upward."""
    d1_image = collector_overlay(ours_image, 1)
    result = Scaled([], {}, {})
    floor: int | None = None
    for gib in SCALE_GIB:
        started = time.monotonic()
        base = work / f"{gib}gib"
        default = variant(f"kdump-agent-{gib}gib", ours_image, gib)
        runs: list[Run] = []
        if gib != SCALE_GIB[0]:
            if floor is not None:
                floor, runs = floor_upward(kernel, default, floor, base)
        elif unfilled_floor_mib is None:
            floor, runs = floor_1gib(kernel, default, base)
        else:
            floor, runs = floor_upward(kernel, default, unfilled_floor_mib - FINE_STEP_MIB, base)
        timed = next((r for r in runs if r.crashkernel_mib == TIME_MIB), None) \
            or capture(kernel, default, TIME_MIB, base / f"d31-{TIME_MIB}")
        d1 = collect_only(kernel, variant(f"kdump-agent-{gib}gib-d1", d1_image, gib), TIME_MIB,
                          base / f"d1-{TIME_MIB}")
        result.full[gib], result.d1[gib] = timed, d1
        figures = capture_figures(timed)
        result.rows.append({
            "ram_gib": gib, "floor_mib": floor,
            "estimate_mib": estimate_mib(kernel, ours_image, timed.console, base / "estimate"),
            "collect_s": figures["collect_s"], "input_mib_s": figures["input_mib_s"],
            "d1_collect_s": d1.seconds, "d1_input_mib_s": input_rate(d1.console, TIME_MIB, d1.seconds),
            **{key: figures.get(key) for key in ("vmcore_mib", "filled_mib", "dump_mib",
                                                  "memfree_at_collect_kib")},
            "floor_runs": floor_runs(runs), "seconds": round(time.monotonic() - started)})
        shown = {key: value for key, value in result.rows[-1].items() if key != "floor_runs"}
        log(f"scale, {gib} GiB: {json.dumps(shown)}")
    return result


def threads(kernel: Kernel, ours_image: Path, work: Path, scaled: Scaled | None = None) -> dict[str, Any]:
    """A THREADS_GIB guest, one CPU against THREADS_CPUS (-smp for QEMU, nr_cpus= on the
    capture line): COLLECT of the -d 1 dump with --num-threads; and a whole -d 31 capture
    with the default collector (no threads), for MemFree when the collector starts (what
    the CPUs cost the reservation) and COLLECT on the CPUs alone. One CPU's runs are
    scale's, when given."""
    gib, cpus = THREADS_GIB, THREADS_CPUS
    if scaled is not None and gib in scaled.full:
        one_full, one_d1 = scaled.full[gib], scaled.d1[gib]
    else:
        one_full = capture(kernel, variant(f"kdump-agent-{gib}gib", ours_image, gib), TIME_MIB,
                           work / "threads-1-d31")
        d1_image = collector_overlay(ours_image, 1)
        one_d1 = collect_only(kernel, variant(f"kdump-agent-{gib}gib-d1", d1_image, gib), TIME_MIB,
                              work / "threads-1-d1")
    line = CAPTURE_CMDLINE.replace("nr_cpus=1", f"nr_cpus={cpus}")
    many_full = capture(kernel, variant(f"kdump-agent-{gib}gib-smp{cpus}", ours_image, gib, cpus=cpus,
                                        cmdline=line), TIME_MIB, work / f"threads-{cpus}-d31")
    threaded = collector_overlay(ours_image, 1, threads=cpus)
    many_d1 = collect_only(kernel, variant(f"kdump-agent-{gib}gib-d1-smp{cpus}", threaded, gib, cpus=cpus,
                                           cmdline=line), TIME_MIB, work / f"threads-{cpus}-d1")
    one, many = capture_figures(one_full), capture_figures(many_full)
    result = {
        "cpus": cpus, "ram_gib": gib, "crashkernel_mib": TIME_MIB,
        "collector_n": " ".join(collector_at(1, threads=cpus)),
        "collect_s_1": one_d1.seconds, "collect_s_n": many_d1.seconds,
        "speedup": round(one_d1.seconds / many_d1.seconds, 2) if one_d1.seconds and many_d1.seconds else None,
        "capture_kernel_cpus": capture_kernel_cpus(many_d1.console),
        "memfree_at_collect_kib_1": one.get("memfree_at_collect_kib"),
        "memfree_at_collect_kib_n": many.get("memfree_at_collect_kib"),
        "d31_collect_s_1": one.get("collect_s"), "d31_collect_s_n_no_threads": many.get("collect_s"),
        "why_n": many_d1.why or many.get("why") or None}
    log(f"threads: {json.dumps(result)}")
    return result


def compression(kernel: Kernel, work: Path) -> dict[str, Any]:
    """makedumpfile -l (lzo) against -c (zlib) at the default dump level, on the cached real
    vmcore, on this host: the median of COMPRESSION_RUNS each, and the dump's size."""
    vmcore = find_vmcore(kernel)
    work.mkdir(parents=True, exist_ok=True)
    level = DEFAULT_COLLECTOR[DEFAULT_COLLECTOR.index("-d") + 1]
    result: dict[str, Any] = {"vmcore_bytes": vmcore.stat().st_size, "dump_level": int(level),
                              "runs": COMPRESSION_RUNS}
    for name, flag in (("lzo", "-l"), ("zlib", "-c")):
        out = work / f"dump-{name}"
        seconds = []
        for _ in range(COMPRESSION_RUNS):
            out.unlink(missing_ok=True)
            started = time.monotonic()
            subprocess.run(["makedumpfile", flag, "-d", level, str(vmcore), str(out)], check=True,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=600)
            seconds.append(time.monotonic() - started)
        result[name] = {"seconds": round(statistics.median(seconds), 3), "bytes": out.stat().st_size}
        out.unlink()
    result["default"] = "lzo" if "-l" in DEFAULT_COLLECTOR else "zlib" if "-c" in DEFAULT_COLLECTOR else None
    log(f"compression: {json.dumps(result)}")
    return result
