"""The README's Performance table, made from a bench report (bench/results/latest.json).

`update(readme, report)` rewrites only the text between README_START and README_END in
README.md, so the prose around the table stays as written and the figures always come from
the last run. A figure the report lacks (a part of the bench that did not run, or a key an
older report does not have) shows as "not measured", never as a stale number.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

README_START = ("<!-- bench-table:start (bench/readme_table.py writes this part from "
                "bench/results/latest.json) -->")
README_END = "<!-- bench-table:end -->"
NOT_MEASURED = "not measured"
MIB = 1 << 20


def dig(report: dict[str, Any], path: str) -> Any:
    """report["a"]["b"] for "a.b"; None when any part is absent or None."""
    value: Any = report
    for part in path.split("."):
        if not isinstance(value, dict):
            return None
        value = value.get(part)
    return value


def shown(value: Any, form: Callable[[Any], str] = str) -> str:
    return NOT_MEASURED if value is None else form(value)


def seconds(value: float) -> str:
    return f"{value:g} s"


def mib(value: int) -> str:
    return f"{value}M"


def megabytes(value: int) -> str:
    return f"{value / 1e6:.1f} MB"


def kib_as_mib(value: int) -> str:
    return f"{value / 1024:.1f} MiB"


def times(value: float) -> str:
    return f"x{value:g}"


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def comparison(report: dict[str, Any]) -> list[str]:
    """Baseline, the distribution's own kdump (peer), our full system, ours local and SSH."""
    columns = ["baseline", "baseline, SSH", "peer", "ours, full system", "ours, local", "ours, SSH"]

    def row(name: str, *cells: str) -> str:
        return "| " + " | ".join([name, *cells]) + " |"

    peer = report.get("peer") or {}
    peer_name = " ".join(str(peer[k]) for k in ("name", "version") if peer.get(k))
    runs, at = dig(report, "time.runs"), dig(report, "time.crashkernel_mib")
    blank = ""
    lines = [row("", *columns), row(*["---"] * (len(columns) + 1)),
             row("memory floor", shown(dig(report, "floor_mib.baseline"), mib), blank,
                 shown(peer.get("floor_mib"), mib), shown(dig(report, "ours_full.floor_mib"), mib),
                 shown(dig(report, "floor_mib.local"), mib), shown(dig(report, "floor_mib.ssh"), mib)),
             row(f"panic to reboot (median of {shown(runs)}; at {shown(at, mib)}, the full systems at "
                 f"{shown(peer.get('time_crashkernel_mib'), mib)})",
                 shown(dig(report, "time.baseline_s"), seconds),
                 shown(dig(report, "ssh.baseline_time_s"), seconds),
                 shown(peer.get("time_s"), seconds), shown(dig(report, "ours_full.time_s"), seconds),
                 shown(dig(report, "time.ours_s"), seconds), shown(dig(report, "ssh.total_s"), seconds)),
             row("ratio, ours / baseline", blank, blank, blank,
                 shown(ratio(dig(report, "ours_full.time_s"), peer.get("time_s")), lambda v: f"x{v:g} peer"),
                 shown(dig(report, "time.ratio"), times),
                 shown(dig(report, "ssh.baseline_ratio"), lambda v: f"x{v:g} baseline SSH")),
             row("dump size", blank, blank, shown(peer.get("dump_bytes"), megabytes),
                 shown(dig(report, "ours_full.dump_bytes"), megabytes), blank, blank),
             row("COLLECT state (makedumpfile + transfer)", blank,
                 shown(dig(report, "ssh.baseline_phases_s.stream_s"), seconds), blank, blank,
                 shown(dig(report, "ssh.local_collect_s"), seconds),
                 shown(dig(report, "ssh.collect_s"), seconds)),
             row("network up / SSH login", blank,
                 f"{shown(dig(report, 'ssh.baseline_phases_s.network_up_s'), seconds)} / "
                 f"{shown(dig(report, 'ssh.baseline_phases_s.login_s'), seconds)}", blank, blank, blank,
                 f"{shown(dig(report, 'ssh.network_up_s'), seconds)} / "
                 f"{shown(dig(report, 'ssh.mount_target_s'), seconds)}"),
             row("agent start-up, hook to first state", blank, blank, blank, blank,
                 shown(dig(report, "time.agent_startup_s"), seconds), blank),
             row("initramfs, compressed / unpacked",
                 f"{shown(dig(report, 'footprint.baseline_initramfs_bytes'), megabytes)} / "
                 f"{shown(dig(report, 'footprint.baseline_initramfs_unpacked_bytes'), megabytes)}",
                 blank, blank, blank,
                 f"{shown(dig(report, 'footprint.initramfs_bytes'), megabytes)} / "
                 f"{shown(dig(report, 'footprint.initramfs_unpacked_bytes'), megabytes)}",
                 f"{shown(dig(report, 'ssh.initramfs_bytes'), megabytes)} / "
                 f"{shown(dig(report, 'ssh.initramfs_unpacked_bytes'), megabytes)}"),
             row(f"MemFree when makedumpfile starts, at {shown(at, mib)}",
                 shown(dig(report, "footprint.baseline_memfree_at_collect_kib"), kib_as_mib), blank, blank,
                 blank, shown(dig(report, "footprint.memfree_at_collect_kib"), kib_as_mib),
                 shown(dig(report, "ssh.memfree_at_collect_kib"), kib_as_mib))]
    targets = report.get("targets") or {}
    lines += ["", "peer: " + (peer_name or NOT_MEASURED) + "; targets: "
              + (", ".join(f"{key} {value}" for key, value in targets.items()) or NOT_MEASURED)]
    return lines


def compressed(compression: dict[str, Any]) -> str:
    """lzo against zlib on one vmcore: time and size each, and the default kept."""
    lzo, zlib = compression.get("lzo") or {}, compression.get("zlib") or {}
    return (f"{shown(lzo.get('seconds'), seconds)} / {shown(zlib.get('seconds'), seconds)}, "
            f"{shown(lzo.get('bytes'), megabytes)} / {shown(zlib.get('bytes'), megabytes)} of a "
            f"{shown(compression.get('vmcore_bytes'), megabytes)} vmcore at -d "
            f"{shown(compression.get('dump_level'))}; default {shown(compression.get('default'))}")


def growth(report: dict[str, Any]) -> list[str]:
    """Cost as the work grows: guest sizes, capture-kernel CPUs, compression."""
    lines = ["| guest RAM | floor | estimate | COLLECT, -d 31 | input rate | COLLECT, -d 1 |",
             "|---|---|---|---|---|---|"]
    scale = report.get("scale") or []
    for size in scale:
        lines.append("| " + " | ".join([
            shown(size.get("ram_gib"), lambda v: f"{v:g} GiB"), shown(size.get("floor_mib"), mib),
            shown(size.get("estimate_mib"), mib), shown(size.get("collect_s"), seconds),
            shown(size.get("input_mib_s"), lambda v: f"{v:g} MiB/s"),
            shown(size.get("d1_collect_s"), seconds)]) + " |")
    if not scale:
        lines.append("| " + " | ".join([NOT_MEASURED] * 6) + " |")
    threads, compression = report.get("threads") or {}, report.get("compression") or {}
    lines += ["", "| | |", "|---|---|",
              "| capture-kernel CPUs, COLLECT of the -d 1 dump | "
              + (f"1 CPU {shown(threads.get('collect_s_1'), seconds)}, "
                 f"{shown(threads.get('cpus'))} CPUs {shown(threads.get('collect_s_n'), seconds)} "
                 f"(speed-up {shown(threads.get('speedup'), times)})" if threads else NOT_MEASURED) + " |",
              "| compression of the same vmcore, makedumpfile -l / -c | "
              + (compressed(compression) if compression else NOT_MEASURED) + " |",
              "| loopback SSH, paramiko SFTP / OpenSSH `cat` (host, no QEMU) | "
              + (f"{shown(dig(report, 'ssh.throughput.paramiko_sftp_mib_s'))} / "
                 f"{shown(dig(report, 'ssh.throughput.openssh_cat_mib_s'))} MiB/s"
                 if dig(report, "ssh.throughput") else NOT_MEASURED) + " |"]
    return lines


def render(report: dict[str, Any]) -> str:
    """The text between the markers: where the figures come from, then the tables."""
    machine = report.get("machine") or {}
    head = (f"Latest run, {shown(report.get('date'))} (commit {shown(report.get('commit'))}; host "
            f"{shown(machine.get('cpus'))} CPUs; guest kernel `{shown(report.get('kernel'))}`, 1 GiB, "
            f"QEMU TCG; `make bench` took {shown(report.get('bench_seconds'), seconds)}):")
    return "\n".join([head, "", *comparison(report), "", *growth(report)])


def update(readme: Path, report: dict[str, Any]) -> None:
    """Replace what is between the markers in `readme` with render(report)."""
    text = readme.read_text(encoding="utf-8")
    start, end = text.find(README_START), text.find(README_END)
    if start < 0 or end < start:
        raise ValueError(f"{readme} has no {README_START!r} ... {README_END!r} pair")
    before, after = text[:start + len(README_START)], text[end:]
    readme.write_text(f"{before}\n{render(report)}\n{after}", encoding="utf-8")

