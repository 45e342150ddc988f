"""The distribution's own kdump beside ours, both as full Debian systems, in one bench run.

What an admin would install instead of us on Debian 12 is its `kdump-tools`: its capture
initrd comes from initramfs-tools, and the capture kernel mounts the real root and starts
systemd to run `makedumpfile -F -c -d 31`. So the peer is measured as a whole system
(harness.peer_system: the debootstrapped Debian of the full-system tests, kdump-tools
installed and enabled, `crashkernel=` on the command line), and beside it ours the same way
(`ours_full`: the same system with our .deb and our service, as
tests/e2e/test_full_system.py boots it). Both boot the system's own kernel in a 1 GiB
guest, on the same disk, and are panicked alike (sysrq-c once their service has loaded
the capture kernel, peer_guest.sh).

For each: the memory floor, the smallest crashkernel= at which it dumps in CONFIRM_RUNS of
CONFIRM_RUNS boots (16M steps from a start near earlier figures, then 8M, then the
confirmation); the time from the panic to the machine's reboot with the dump complete
(median of TIME_RUNS at TIME_AT_MIB, the two systems taking turns); the dump's size.
Every boot is recorded, with why it failed read from the console. The peer's dump is
flattened (`-F`): whether `makedumpfile --dump-dmesg` opens it as saved, and after
`makedumpfile -R`.
"""

from __future__ import annotations

import re
import statistics
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import floors

from harness.cache import cache_dir
from harness.debian_system import DebianSystem
from harness.disks import extract, list_dir, replay_journal
from harness.dumps import PANIC_MARK, dump_in_image, dump_problems
from harness.peer_system import FullSystem, fresh_copy, ours_system, peer_system
from harness.scenario import BINARY, REPO
from kdump_agent.layout import VMCORE

PEER_START_MIB = 112  # where each search starts: near what was measured before
OURS_FULL_START_MIB = 144
COARSE_STEP_MIB = 16
LOWEST_MIB, HIGHEST_MIB = 64, 512
TIME_AT_MIB = 384  # generous for both: the time is not taken at the edge of memory
TIME_RUNS = 3
BOOT_TIMEOUT_S = 600  # a full system's boot, the capture and the reboot, under TCG
PANIC_LINE = "Kernel panic - not syncing: sysrq triggered crash"
PEER_SAVED = "saved vmcore in"  # kdump-tools' line once the dump file has its final name
OURS_SAVED = "dump saved in"
PEER_DUMP_DIR = re.compile(r"^\d{12}$")  # kdump-tools' $(date +%Y%m%d%H%M) under /var/crash
OURS_DUMP_DIR = re.compile(r"^127\.0\.0\.1-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d$")
KERNEL_TIME = re.compile(r"^\s*\[\s*\d+\.\d+\]\s*")
# What went wrong, read from the console after the deliberate panic, in the order seen.
FAILURE_SIGNS = [
    ("initramfs unpack failed", re.compile(r"Initramfs unpacking failed")),
    ("out of memory", re.compile(r"Out of memory|invoked oom-killer|oom-kill")),
    ("no init", re.compile(r"No working init found|Attempted to kill init")),
    ("capture kernel panic", re.compile(r"Kernel panic - not syncing")),
    ("makedumpfile failed", re.compile(r"makedumpfile failed|failed to save vmcore|makedumpfile: .*[Ff]ail")),
    ("agent failed", re.compile(r"kdump-agent: .*(failed|status [1-9])|failure action")),
    ("emergency shell", re.compile(r"emergency mode|Dropping to a shell|Give root password")),
]


@dataclass
class PanicRun:
    """One boot of a full system: armed, panicked, its capture, its reboot."""

    purpose: str  # "floor" or "time"
    crashkernel_mib: int
    ok: bool
    why: str | None  # what went wrong, when not ok
    time_s: float | None  # panic to the machine's reboot, the dump complete
    saved_s: float | None  # panic to the capture's line that the dump is saved
    dump_bytes: int | None
    console: str  # the log's path
    details: dict[str, Any]  # what the flavour's read_dump keeps about the dump


@dataclass
class Flavour:
    """One full system under test and how to read its dump back from its disk."""

    name: str
    full: FullSystem
    saved_marker: str
    # The dump on the disk after a boot: its file (None for none), its problems, and what
    # else the report keeps about it.
    read_dump: Callable[[Path, Path], tuple[Path | None, list[str], dict[str, Any]]]


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def why_failed(console: str, timed_out: bool, problems: list[str]) -> str:
    """The telling lines after the deliberate panic (each kind once, in order), or the
    read-back's problems when the console shows nothing wrong."""
    if "KDUMP-TEST: not loaded" in console:
        lines = [line for line in console.splitlines() if re.search(r"kexec|KDUMP-TEST|kdump", line)]
        return "kdump not loaded at boot: " + " | ".join(lines[-4:])[:400]
    after = console.split(PANIC_LINE, 1)[1] if PANIC_LINE in console else ""
    seen: list[str] = []
    unpacked = False  # the kernel has unpacked the initramfs and freed the image
    for line in after.splitlines():
        unpacked = unpacked or "Freeing initrd memory" in line
        for kind, pattern in FAILURE_SIGNS:
            if pattern.search(line) and not any(s.startswith(kind) for s in seen):
                when = " (unpacking the initramfs)" if kind == "out of memory" and not unpacked else ""
                seen.append(f"{kind}{when}: {KERNEL_TIME.sub('', line).strip()[:160]}")
    if PANIC_LINE not in console:
        seen.insert(0, "never panicked")
    if not seen:
        seen = problems or ["no dump (nothing telling on the console)"]
    return "; ".join(seen[:3]) + (" (then timed out)" if timed_out else "")


def read_peer_dump(disk: Path, workdir: Path) -> tuple[Path | None, list[str], dict[str, Any]]:
    """kdump-tools' dump: /var/crash/<stamp>/dump.<stamp> beside dmesg.<stamp>, no
    dump-incomplete left; the crashed kernel's log must read back, at least after
    `makedumpfile -R` (kept: whether it does as saved too)."""
    stamps = sorted(name for name in list_dir(disk, "/var/crash") if PEER_DUMP_DIR.match(name))
    if not stamps:
        return None, ["no dump directory in /var/crash"], {}
    directory, name = f"/var/crash/{stamps[-1]}", f"dump.{stamps[-1]}"
    names = sorted(list_dir(disk, directory))
    if name not in names:
        return None, [f"{directory} holds {names}, no {name}"], {}
    problems = [f"{entry} is left in {directory}" for entry in names if "incomplete" in entry]
    dump = extract(disk, f"{directory}/{name}", workdir / "dump")
    opens = dmesg_opens(dump, workdir)
    if not opens["dump_dmesg_opens_after_makedumpfile_R"]:
        problems.append(f"the log read back after makedumpfile -R does not show {PANIC_MARK!r}")
    return dump, problems, opens


def read_ours_dump(disk: Path, workdir: Path) -> tuple[Path | None, list[str], dict[str, Any]]:
    """Our dump in /var/crash on the root, judged as every other dump of ours (harness.dumps)."""
    names = sorted(name for name in list_dir(disk, "/var/crash") if OURS_DUMP_DIR.match(name))
    if not names:
        return None, ["no dump directory in /var/crash"], {}
    dump = dump_in_image(disk, f"/var/crash/{names[-1]}", workdir / "dump")
    vmcore = dump.local_copy / VMCORE
    return (vmcore if vmcore.is_file() else None), dump_problems(dump, workdir), {}


def dmesg_opens(dump: Path, workdir: Path) -> dict[str, bool]:
    """Whether `makedumpfile --dump-dmesg` reads the crashed kernel's log from the dump as
    saved, and from it reassembled by `makedumpfile -R` (what a flattened dump needs)."""
    def shows_panic(vmcore: Path, out: Path) -> bool:
        done = subprocess.run(["makedumpfile", "--dump-dmesg", str(vmcore), str(out)], capture_output=True,
                              timeout=300, check=False)
        return done.returncode == 0 and PANIC_MARK in out.read_text(errors="replace")

    restored = workdir / "dump.restored"
    with open(dump, "rb") as stream:
        reassembled = subprocess.run(["makedumpfile", "-R", str(restored)], stdin=stream,
                                     capture_output=True, timeout=600, check=False).returncode == 0
    result = {"dump_dmesg_opens": shows_panic(dump, workdir / "dmesg-as-saved.txt"),
              "dump_dmesg_opens_after_makedumpfile_R":
                  reassembled and shows_panic(restored, workdir / "dmesg-restored.txt")}
    restored.unlink(missing_ok=True)
    return result


def panic_once(flavour: Flavour, crashkernel_mib: int, workdir: Path, purpose: str) -> PanicRun:
    """Boot a fresh copy of the system with this reservation, panic it and read its dump back."""
    system: DebianSystem = fresh_copy(flavour.full, workdir)
    try:
        result = system.boot(f"crashkernel={crashkernel_mib}M kdumptest=panic", workdir / "console.log",
                             timeout_s=BOOT_TIMEOUT_S)
        panicked, saved = result.at(PANIC_LINE), result.at(flavour.saved_marker)
        replay_journal(system.image)
        dump, problems, details = flavour.read_dump(system.image, workdir)
    finally:
        system.image.unlink(missing_ok=True)  # 3 GiB sparse each; the console log stays
    ok = panicked is not None and saved is not None and not result.timed_out and dump is not None \
        and not problems
    run = PanicRun(purpose=purpose, crashkernel_mib=crashkernel_mib, ok=ok,
                   why=None if ok else why_failed(result.console, result.timed_out, problems),
                   time_s=round(result.seconds - panicked, 2) if ok and panicked is not None else None,
                   saved_s=round(saved - panicked, 2) if ok and saved and panicked else None,
                   dump_bytes=dump.stat().st_size if ok and dump else None,
                   console=str(result.log_path), details=details)
    log(f"{flavour.name} at crashkernel={crashkernel_mib}M: "
        + (f"dump ok, panic to reboot {run.time_s} s (saved at {run.saved_s} s)" if ok
           else f"no dump ({run.why}; {run.console})"))
    if dump is not None:
        dump.unlink()
    return run


def reliable_floor(flavour: Flavour, start_mib: int, workdir: Path) -> tuple[int | None, list[PanicRun]]:
    """The smallest reservation that dumps in CONFIRM_RUNS of CONFIRM_RUNS boots: one boot
    per size in COARSE_STEP_MIB steps from start_mib to a pass above a failure, then
    floors.Attempts.confirmed (8M)."""
    runs: list[PanicRun] = []

    def boot(mib: int, nth: int) -> bool:
        runs.append(panic_once(flavour, mib, workdir / f"floor-{mib}-{nth}", "floor"))
        return runs[-1].ok

    attempt = floors.Attempts(boot)
    passing = start_mib
    if attempt(passing):
        while passing - COARSE_STEP_MIB >= LOWEST_MIB and attempt(passing - COARSE_STEP_MIB):
            passing -= COARSE_STEP_MIB
    else:
        while True:
            passing += COARSE_STEP_MIB
            if passing > HIGHEST_MIB:
                return None, runs
            if attempt(passing):
                break
    return attempt.confirmed(passing, LOWEST_MIB, HIGHEST_MIB), runs


def timed_alternately(flavours: list[Flavour], workdir: Path) -> dict[str, list[PanicRun]]:
    """TIME_RUNS boots of each at TIME_AT_MIB, taking turns, so that this machine's drift
    (other guests, other load) falls on both alike."""
    runs: dict[str, list[PanicRun]] = {flavour.name: [] for flavour in flavours}
    for number in range(TIME_RUNS):
        for index, flavour in enumerate(flavours):
            runs[flavour.name].append(panic_once(flavour, TIME_AT_MIB, workdir / f"{index}-{number}", "time"))
    return runs


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def summary(flavour: Flavour, floor: int | None, floor_runs: list[PanicRun],
            time_runs: list[PanicRun]) -> dict[str, Any]:
    """The floor, the time and the dump size of one full system, every boot recorded."""
    runs = floor_runs + time_runs
    sizes = [run.dump_bytes for run in time_runs if run.dump_bytes]
    return {"floor_mib": floor, "time_s": median([run.time_s for run in time_runs]),
            "saved_s": median([run.saved_s for run in time_runs]),
            "dump_bytes": sizes[-1] if sizes else None, "time_crashkernel_mib": TIME_AT_MIB,
            "kernel": flavour.full.facts["kernel"],
            "capture_initrd_bytes": flavour.full.facts["capture_initrd_bytes"],
            "capture_initrd_unpacked_bytes": flavour.full.facts["capture_initrd_unpacked_bytes"],
            "boots": len(runs), "runs": [asdict(run) for run in runs]}


def peer_dump_format(peer: dict[str, Any]) -> dict[str, Any]:
    """What an admin gets from the peer, from its last good timed boot: the collector's
    command as its console shows it, and whether `makedumpfile --dump-dmesg` reads the log
    from the dump as saved, and after `makedumpfile -R` reassembles the flattened stream."""
    good = [run for run in peer["runs"] if run["ok"] and run["purpose"] == "time"]
    if not good:
        return {"collector": None, "dump_dmesg_opens": None, "dump_dmesg_opens_after_makedumpfile_R": None}
    console = Path(good[-1]["console"]).read_text(errors="replace")
    command = next((line.partition("running ")[2].strip() for line in console.splitlines()
                    if "running makedumpfile " in line and "--dump-dmesg" not in line), None)
    return {"collector": command, **good[-1]["details"]}


def build_deb(workdir: Path) -> Path:
    """Our .deb from the binary this bench measures (`make deb` into the bench's work dir)."""
    if not BINARY.is_file():
        raise RuntimeError(f"{BINARY} missing: `make binary` builds it")
    subprocess.run(["make", "-C", str(REPO), "--no-print-directory", "-o", str(BINARY.relative_to(REPO)),
                    "deb", f"DEB_DIR={workdir}", f"DEB_STAGING={workdir / 'staging'}"],
                   check=True, timeout=900, stdout=subprocess.DEVNULL)
    (deb,) = sorted(workdir.glob("kdump-agent_*.deb"))
    return deb


def full_systems(work: Path) -> dict[str, dict[str, Any]]:
    """`peer` and `ours_full` for the report: each one's floor, then their times alternately."""
    cache = cache_dir()
    deb = build_deb(work / "deb")
    peer = Flavour("peer (kdump-tools)", peer_system(cache), PEER_SAVED, read_peer_dump)
    ours = Flavour("ours_full", ours_system(cache, deb), OURS_SAVED, read_ours_dump)
    peer_floor = reliable_floor(peer, PEER_START_MIB, work / "peer-floor")
    ours_floor = reliable_floor(ours, OURS_FULL_START_MIB, work / "ours-floor")
    times = timed_alternately([peer, ours], work / "time")
    peer_report = {"name": "kdump-tools", "version": peer.full.facts["version"],
                   **summary(peer, *peer_floor, times[peer.name])}
    peer_report.update(peer_dump_format(peer_report))
    ours_report = summary(ours, *ours_floor, times[ours.name])
    ours_report["targets"] = targets(peer_report, ours_report)
    return {"peer": peer_report, "ours_full": ours_report}


def targets(peer: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Ours against the peer: a floor below its reliable floor, at most half its time."""
    floors = (ours["floor_mib"], peer["floor_mib"])
    floor_met = floors[0] < floors[1] if floors[0] and floors[1] else None
    time_ratio = round(ours["time_s"] / peer["time_s"], 3) if ours["time_s"] and peer["time_s"] else None
    return {"floor_below_peer": floor_met, "time_ratio_to_peer": time_ratio,
            "time_at_most_half_of_peer": None if time_ratio is None else time_ratio <= 0.5}


def table_rows(report: dict[str, Any]) -> list[tuple[str, str]]:
    """The rows run.py's table shows for the two full systems."""
    peer, ours = report.get("peer") or {}, report.get("ours_full") or {}
    goals = ours.get("targets") or {}

    def verdict(met: bool | None) -> str:
        return "n/a" if met is None else ("met" if met else "NOT met")

    def megabytes(size: int | None) -> str:
        return "n/a" if size is None else f"{size / 1e6:.1f} MB"

    return [
        (f"memory floor, peer (kdump-tools {peer.get('version')})",
         f"{peer.get('floor_mib')} MiB (3 of 3 boots)"),
        ("memory floor, ours_full (same system, our .deb)",
         f"{ours.get('floor_mib')} MiB (target below the peer's: {verdict(goals.get('floor_below_peer'))})"),
        ("panic to reboot, peer", (f"{peer.get('time_s')} s at {peer.get('time_crashkernel_mib')}M "
                                   f"(dump saved at {peer.get('saved_s')} s)")),
        ("panic to reboot, ours_full",
         (f"{ours.get('time_s')} s (ratio to the peer {goals.get('time_ratio_to_peer')}, "
          f"target <= 0.5: {verdict(goals.get('time_at_most_half_of_peer'))})")),
        ("dump size, peer / ours_full",
         f"{megabytes(peer.get('dump_bytes'))} / {megabytes(ours.get('dump_bytes'))}"),
        ("peer's dump read by makedumpfile --dump-dmesg",
         (f"{peer.get('dump_dmesg_opens')} as saved (flattened), "
          f"{peer.get('dump_dmesg_opens_after_makedumpfile_R')} after makedumpfile -R")),
    ]
