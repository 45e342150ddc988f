"""`make bench`: what kdump-agent costs a capture kernel, against a bare baseline, in one run.

The baseline is a lean dracut capture image (dracut's base module, virtio drivers,
makedumpfile) whose hook saves the same dump with a shell script and no agent, built here
for the same kernel and guest. Every figure of ours is compared with the baseline measured
in the same run, because this machine's timings drift from run to run.

1. Memory floor: the smallest crashkernel= (16M steps, 1 GiB guest) at which a dump
   completes, found by bisection, for the baseline and for kdump-agent (local ext4 target).
2. Time: panic -> dump saved -> reboot, median of several boots, ours vs the baseline; and
   the agent's own start-up (the initramfs hook's kernel-log line to the agent's first).
3. Footprint: binary size, initramfs compressed and unpacked, the agent's peak RSS and the
   size of its one-file unpack, MemFree when the collector starts.

Writes bench/results/latest.json (and a dated copy) and bench/results/latest.png.
"""

from __future__ import annotations

import datetime
import gzip
import hashlib
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(REPO / "tests" / "e2e"), str(REPO / "agent")]

from guest import Kernel, boot, build_panic_initrd, fetch_kernel, make_disk  # noqa: E402
from scenario import (BINARY, CAPTURE_CMDLINE, LEAN_DRACUT_ARGS, PANIC_MARK,  # noqa: E402
                      build_capture_initrd, cache_dir, dmesg_from_vmcore, find_dumps)

from kdump_agent.host.mkinitrd import overlay_dracut_dir  # noqa: E402

RESULTS = REPO / "bench" / "results"
BASELINE_MODULE = REPO / "bench" / "baseline-module" / "55kdump-baseline"
CRASHKERNEL_STEPS_MIB = list(range(64, 257, 16))
TIME_AT_MIB = 256
TIME_RUNS = int(os.environ.get("KDUMP_AGENT_BENCH_RUNS", "3"))
BOOT_TIMEOUT_S = 300
DISK_UUID = "9c8b7a6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
TARGETS = {"floor_local_mib": 144, "time_ratio": 1.05}
OURS_CONFIG = f"ext4 UUID={DISK_UUID}\npath /var/crash\n{LEAN_DRACUT_ARGS}\n"


@dataclass
class Variant:
    """One capture image under test and how to tell that its dump completed."""

    name: str
    initrd: Path
    succeeded: Callable[[str], bool]


@dataclass
class Run:
    crashkernel_mib: int
    ok: bool
    seconds_panic_to_end: float | None
    console: str
    dump_dir: Path | None


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def build_baseline(kernel: Kernel) -> Path:
    """The baseline image, made with dracut from bench/baseline-module; cached by content."""
    key = hashlib.sha256(kernel.kver.encode())
    for path in sorted(BASELINE_MODULE.iterdir()):
        key.update(path.read_bytes())
    output = cache_dir() / f"baseline-dracut-{key.hexdigest()[:16]}.img"
    if output.exists():
        return output
    with tempfile.TemporaryDirectory(prefix="kdump-bench.") as scratch:
        base = overlay_dracut_dir(Path(scratch) / "dracut", BASELINE_MODULE)
        env = {**os.environ, "dracutbasedir": str(base)}
        subprocess.run(["dracut", "--force", "--quiet", "--kver", kernel.kver, "--kmoddir",
                        str(kernel.kmoddir), "--modules", "kdump-baseline", "--no-early-microcode",
                        "--no-hostonly", "--drivers", "virtio_blk virtio_pci", "--filesystems", "ext4",
                        str(output.with_suffix(".part"))], check=True, env=env, timeout=900)
    output.with_suffix(".part").rename(output)
    return output


def capture_once(kernel: Kernel, variant: Variant, crashkernel_mib: int, workdir: Path) -> Run:
    """One panic at one reservation size; the dump counts only if it reads back."""
    workdir.mkdir(parents=True, exist_ok=True)
    panic = build_panic_initrd(kernel, variant.initrd, CAPTURE_CMDLINE,
                               cache_dir() / f"bench-panic-{variant.name}.img")
    disk = make_disk(workdir / "target.img", 256, DISK_UUID, "KDUMP")
    result = boot(kernel, panic, append=f"console=ttyS0 crashkernel={crashkernel_mib}M panic=1",
                  disks=[disk], timeout_s=BOOT_TIMEOUT_S, log_path=workdir / "console.log")
    panicked = result.at("KDUMP-TEST: panicking")
    ok = (not result.timed_out) and variant.succeeded(result.console)
    dump_dir = None
    if ok:
        subprocess.run(["e2fsck", "-y", "-E", "journal_only", str(disk)], capture_output=True, check=False)
        dumps = find_dumps(disk, workdir / "out")
        ok = bool(dumps) and (dumps[0].local_copy / "vmcore").exists() and PANIC_MARK in dmesg_from_vmcore(
            dumps[0].local_copy / "vmcore", workdir / "dmesg.txt")
        dump_dir = dumps[0].local_copy if dumps else None
    seconds = result.seconds - panicked if (ok and panicked is not None) else None
    log(f"{variant.name} at crashkernel={crashkernel_mib}M: {'dump ok' if ok else 'no dump'}"
        + (f", panic to end {seconds:.1f} s" if seconds else ""))
    return Run(crashkernel_mib, ok, seconds, result.console, dump_dir)


def memory_floor(kernel: Kernel, variant: Variant, workdir: Path) -> tuple[int | None, list[Run]]:
    """Bisect CRASHKERNEL_STEPS_MIB for the smallest reservation that still dumps."""
    runs = [capture_once(kernel, variant, CRASHKERNEL_STEPS_MIB[-1], workdir / f"floor-{CRASHKERNEL_STEPS_MIB[-1]}")]
    if not runs[0].ok:
        return None, runs
    low, high = -1, len(CRASHKERNEL_STEPS_MIB) - 1  # index `low` fails (or is below the list)
    while high - low > 1:
        middle = (low + high) // 2
        mib = CRASHKERNEL_STEPS_MIB[middle]
        run = capture_once(kernel, variant, mib, workdir / f"floor-{mib}")
        runs.append(run)
        if run.ok:
            high = middle
        else:
            low = middle
    return CRASHKERNEL_STEPS_MIB[high], runs


def kernel_log_seconds(text: str, marker: str) -> float | None:
    """The kernel timestamp of the first log line containing marker."""
    for line in text.splitlines():
        if marker in line:
            match = re.match(r"\s*\[\s*(\d+\.\d+)\]", line)
            if match:
                return float(match.group(1))
    return None


def agent_startup_seconds(dump_dir: Path) -> float | None:
    """From the hook's line to the agent's first state, in the capture kernel's own log."""
    text = (dump_dir / "kexec-dmesg.log").read_text(errors="replace")
    hook = kernel_log_seconds(text, "initramfs hook starts the agent")
    first = kernel_log_seconds(text, "kdump-agent: state START")
    return round(first - hook, 3) if hook is not None and first is not None else None


def unpacked_bytes(image: Path) -> int:
    return len(gzip.decompress(image.read_bytes()))


def median(values: list[float]) -> float | None:
    return round(statistics.median(values), 2) if values else None


def chart(report: dict[str, object], path: Path) -> None:
    """Two bar pairs: memory floor and panic-to-reboot time, baseline vs ours."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    floor = report["floor_mib"]
    timing = report["time"]
    assert isinstance(floor, dict) and isinstance(timing, dict)
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(9, 3.6))
    names = ["baseline", "kdump-agent"]
    left.bar(names, [floor["baseline"] or 0, floor["local"] or 0], color=["#999999", "#2b6cb0"])
    left.axhline(TARGETS["floor_local_mib"], color="#c05621", linestyle="--", label="target")
    left.set_ylabel("smallest crashkernel= that dumps (MiB)")
    left.legend()
    right.bar(names, [timing["baseline_s"] or 0, timing["ours_s"] or 0], color=["#999999", "#2b6cb0"])
    right.set_ylabel("panic to reboot, median (s)")
    figure.suptitle(f"kdump-agent bench, {report['date']} (1 GiB guest, QEMU TCG)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def main() -> int:
    started = time.monotonic()
    kernel = fetch_kernel()
    work = Path(tempfile.mkdtemp(prefix="kdump-bench."))
    log(f"kernel {kernel.kver}; work in {work}")
    with tempfile.TemporaryDirectory() as scratch:
        ours_image = build_capture_initrd(kernel, OURS_CONFIG, Path(scratch))
    baseline_image = build_baseline(kernel)
    baseline = Variant("baseline", baseline_image, lambda console: "BASELINE: done rc=0" in console)
    ours = Variant("kdump-agent", ours_image, lambda console: "dump saved in" in console)

    floors: dict[str, int | None] = {}
    for key, variant in (("baseline", baseline), ("local", ours)):
        floors[key], _ = memory_floor(kernel, variant, work / variant.name)

    timings: dict[str, list[Run]] = {}
    for variant in (baseline, ours):
        timings[variant.name] = [capture_once(kernel, variant, TIME_AT_MIB, work / f"time-{variant.name}-{n}")
                                 for n in range(TIME_RUNS)]
    base_s = median([r.seconds_panic_to_end for r in timings["baseline"] if r.seconds_panic_to_end])
    ours_s = median([r.seconds_panic_to_end for r in timings["kdump-agent"] if r.seconds_panic_to_end])
    good = [r for r in timings["kdump-agent"] if r.ok and r.dump_dir]
    manifest = json.loads((good[-1].dump_dir / "kdump-agent.json").read_text()) if good else {}
    startups = [s for s in (agent_startup_seconds(r.dump_dir) for r in good if r.dump_dir) if s is not None]
    baseline_free = [m.group(1) for r in timings["baseline"]
                     for m in [re.search(r"MemFree at collector start: *(\d+) kB", r.console)] if m]

    report: dict[str, object] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "kernel": kernel.kver,
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True).stdout.strip(),
        "floor_mib": {"baseline": floors["baseline"], "local": floors["local"], "ssh": None},
        "time": {"baseline_s": base_s, "ours_s": ours_s,
                 "ratio": round(ours_s / base_s, 3) if base_s and ours_s else None,
                 "runs": TIME_RUNS, "crashkernel_mib": TIME_AT_MIB,
                 "agent_startup_s": median(startups)},
        "footprint": {
            "binary_bytes": BINARY.stat().st_size,
            "initramfs_bytes": ours_image.stat().st_size,
            "initramfs_unpacked_bytes": unpacked_bytes(ours_image),
            "baseline_initramfs_bytes": baseline_image.stat().st_size,
            "baseline_initramfs_unpacked_bytes": unpacked_bytes(baseline_image),
            **(manifest.get("footprint") or {}),
            "baseline_memfree_at_collect_kib": int(baseline_free[-1]) if baseline_free else None,
        },
        "ssh": None,
        "targets": TARGETS,
        "bench_seconds": round(time.monotonic() - started),
    }
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / f"bench-{report['date']}.json".replace(":", "")).write_text(text)
    chart(report, RESULTS / "latest.png")
    print_table(report)
    return 0


def print_table(report: dict[str, object]) -> None:
    floor, timing, footprint = report["floor_mib"], report["time"], report["footprint"]
    assert isinstance(floor, dict) and isinstance(timing, dict) and isinstance(footprint, dict)
    rows = [
        ("memory floor, baseline", f"{floor['baseline']} MiB"),
        ("memory floor, kdump-agent (local)", f"{floor['local']} MiB (target <= {TARGETS['floor_local_mib']})"),
        ("panic to reboot, baseline", f"{timing['baseline_s']} s"),
        ("panic to reboot, kdump-agent", f"{timing['ours_s']} s (ratio {timing['ratio']}, target <= "
                                         f"{TARGETS['time_ratio']})"),
        ("agent start-up (hook to first state)", f"{timing['agent_startup_s']} s"),
        ("binary", f"{footprint['binary_bytes'] / 1e6:.1f} MB"),
        ("initramfs ours / baseline", f"{footprint['initramfs_bytes'] / 1e6:.1f} / "
                                      f"{footprint['baseline_initramfs_bytes'] / 1e6:.1f} MB compressed, "
                                      f"{footprint['initramfs_unpacked_bytes'] / 1e6:.1f} / "
                                      f"{footprint['baseline_initramfs_unpacked_bytes'] / 1e6:.1f} MB unpacked"),
        ("agent peak RSS, one-file unpack", f"{footprint.get('agent_peak_rss_kib')} KiB, "
                                            f"{footprint.get('agent_unpacked_bytes')} bytes"),
        ("MemFree at collector start (256M) ours / baseline",
         f"{footprint.get('memfree_at_collect_kib')} / {footprint.get('baseline_memfree_at_collect_kib')} KiB"),
    ]
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"\nwritten: {RESULTS / 'latest.json'}, {RESULTS / 'latest.png'} "
          f"({report['bench_seconds']} s)")


if __name__ == "__main__":
    sys.exit(main())
