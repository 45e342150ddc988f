"""The frozen single binary as an admin runs it: check-config, states, mkinitrd with real dracut."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from harness.kernels import Kernel
from harness.scenario import BINARY, LEAN_DRACUT_ARGS

GOOD = f"""\
# an admin's kdump.conf
ext4 LABEL=KDUMP   # the dump disk
path "/var/crash"
default poweroff
{LEAN_DRACUT_ARGS}
"""


def agent(*args: str, timeout: float = 900) -> subprocess.CompletedProcess[str]:
    assert BINARY.exists(), f"{BINARY} missing: run `make binary` first"
    return subprocess.run([str(BINARY), *args], capture_output=True, text=True, timeout=timeout, check=False)


def lsinitrd(image: Path) -> list[str]:
    listing = subprocess.run(["lsinitrd", str(image)], capture_output=True, text=True, check=True,
                             errors="replace")
    entries = [line.split() for line in listing.stdout.splitlines()]
    return [fields[8] for fields in entries if len(fields) >= 9 and fields[0][:1] in "-dlc"]


def test_check_config_accepts_good_file_with_a_summary(tmp_path: Path) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text(GOOD)
    result = agent("check-config", "-c", str(conf))
    assert result.returncode == 0, result.stderr
    assert f"{conf}: valid" in result.stdout
    assert "target: ext4 LABEL=KDUMP" in result.stdout
    assert "failure_action: poweroff" in result.stdout


def test_check_config_reports_every_error_with_file_and_line(tmp_path: Path) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text("patth /var/crash\next4 UUID=abc\nxfs LABEL=x\nfinal_action shell\n")
    result = agent("check-config", "-c", str(conf))
    assert result.returncode == 2
    lines = result.stderr.strip().splitlines()
    assert lines[0].startswith(f"{conf}:1: unknown directive 'patth'")
    assert lines[1].startswith(f"{conf}:3: more than one dump target")
    assert lines[2].startswith(f"{conf}:4: ")
    assert len(lines) == 3


def test_check_config_on_missing_file_names_it(tmp_path: Path) -> None:
    result = agent("check-config", "-c", str(tmp_path / "nope.conf"))
    assert result.returncode == 2
    assert f"{tmp_path / 'nope.conf'}:0: cannot read" in result.stderr


def test_states_prints_the_transition_table() -> None:
    result = agent("states")
    assert result.returncode == 0
    assert re.search(r"^COLLECT\s+done\s+-> FINALIZE$", result.stdout, re.MULTILINE)
    assert re.search(r"^COLLECT\s+timed_out\s+-> FAILURE_ACTION$", result.stdout, re.MULTILINE)
    assert agent("states", "--mermaid").stdout.startswith("flowchart TD")


@pytest.mark.parametrize("command", ["check-config", "capture", "mkinitrd", "restore-raw", "states"])
def test_every_command_has_help(command: str) -> None:
    result = agent(command, "--help")
    assert result.returncode == 0
    assert "usage: kdump-agent" in result.stdout


def test_mkinitrd_refuses_a_bad_config_and_writes_nothing(tmp_path: Path) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text("ext4 UUID=abc\ncore_colector makedumpfile\n")
    out = tmp_path / "capture.img"
    result = agent("mkinitrd", "-c", str(conf), "-o", str(out), "--kver", "0")
    assert result.returncode == 2
    assert f"{conf}:2: unknown directive 'core_colector'" in result.stderr
    assert not out.exists()


@pytest.mark.qemu  # needs the guest kernel's modules (downloaded once)
def test_mkinitrd_builds_a_lean_capture_image_with_real_dracut(tmp_path: Path, kernel: Kernel) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text("path /var/crash\n" + LEAN_DRACUT_ARGS + "\n")  # no target: RHEL's rule
    out = tmp_path / "capture.img"
    result = agent("mkinitrd", "-c", str(conf), "-o", str(out), "--kver", kernel.kver,
                   "--kmoddir", str(kernel.kmoddir))
    assert result.returncode == 0, result.stderr[-3000:]
    files = lsinitrd(out)
    for expected in ("usr/sbin/kdump-agent", "usr/lib/kdump-agent/kdump-agent",
                     "usr/lib/kdump-agent/libpython3.11.so.1.0", "usr/bin/makedumpfile", "etc/kdump.conf",
                     "etc/kdump-agent/target.json",
                     "usr/lib/dracut/hooks/cmdline/95-kdump-agent-root.sh",
                     "usr/lib/dracut/hooks/pre-mount/01-kdump-agent-capture.sh"):
        assert expected in files, expected
    assert any(f.endswith("/virtio_blk.ko") for f in files)
    # udevd comes from systemd's package, but systemd itself is not the image's init.
    assert "usr/lib/systemd/systemd" not in files and "init" in files
    assert not any(f.endswith(".ko") and "/net/" in f for f in files), "no NIC drivers for a disk target"
    # The agent is laid out unpacked, without paramiko's crypto for a disk target, and the
    # image is zstd: the guest kernel's config (in its package) says it unpacks zstd.
    assert not any("cryptography" in f or "nacl" in f for f in files)
    packed_program = tmp_path / "packed-kdump-agent"
    packed_program.write_bytes(subprocess.run(["lsinitrd", "-f", "usr/lib/kdump-agent/kdump-agent", str(out)],
                                              capture_output=True, check=True).stdout)
    modules = program_modules(packed_program)
    assert "kdump_agent.steps.collect" in modules
    assert not any(m.startswith(("pyroute2", "paramiko", "asyncio", "kdump_agent.network")) for m in modules)
    assert out.read_bytes()[:4] == b"\x28\xb5\x2f\xfd"
    # The capture kernel's decompressor allocates the frame's window while it unpacks: a
    # small one (host/compression.py) keeps the unpack's peak down.
    frame = subprocess.run(["zstd", "-lv", str(out)], capture_output=True, text=True, check=True).stdout
    window = re.search(r"Window Size: ([\d.]+) KiB", frame)
    assert window and float(window.group(1)) <= 256, frame
    packed = subprocess.run(["lsinitrd", "-f", "etc/kdump.conf", str(out)], capture_output=True,
                            text=True, check=True).stdout
    assert packed == conf.read_text()
    recorded = json.loads(subprocess.run(["lsinitrd", "-f", "etc/kdump-agent/target.json", str(out)],
                                         capture_output=True, text=True, check=True).stdout)
    assert recorded["directory"].endswith("crash")
    assert recorded["fstype"]


def test_the_laid_out_program_runs_one_dir_from_a_link(tmp_path: Path) -> None:
    """What mkinitrd packs: the executable, run through /usr/sbin's link in the image, finds
    its libraries beside itself and unpacks nothing."""
    from kdump_agent.host.programdir import lay_out

    executable = lay_out(BINARY, tmp_path / "program", ssh=True, network=True)
    (tmp_path / "sbin").mkdir()
    (tmp_path / "sbin" / "kdump-agent").symlink_to(executable)
    scratch = tmp_path / "tmp"
    scratch.mkdir()
    result = subprocess.run([str(tmp_path / "sbin" / "kdump-agent"), "states"], capture_output=True,
                            text=True, timeout=60, check=False, env={"TMPDIR": str(scratch)})
    assert result.returncode == 0, result.stderr
    assert "COLLECT" in result.stdout
    assert list(scratch.iterdir()) == []  # no _MEI* unpack
    assert executable.stat().st_size < BINARY.stat().st_size / 2


def test_the_program_starts_without_asking_for_random_bytes(tmp_path: Path) -> None:
    """The capture kernel's random pool is not initialised when the agent starts, and a
    read that would block waits while the kernel gathers entropy (over a second under
    TCG). So the program asks for none: no hash seed, no multiprocessing import. The only
    calls left are glibc's malloc key, 8 bytes without blocking, once per exec of the
    bootloader."""
    executable = lay_out_program(tmp_path)
    conf = tmp_path / "kdump.conf"
    conf.write_text(GOOD)
    for args in (["states"], ["check-config", "-c", str(conf)]):
        traced = subprocess.run(["strace", "-f", "-e", "trace=getrandom,openat", "-e", "signal=none",
                                 str(executable), *args],
                                capture_output=True, text=True, timeout=60, check=False)
        assert traced.returncode == 0, traced.stderr[-2000:]
        calls = [line for line in traced.stderr.splitlines() if "getrandom(" in line]
        assert calls and all(re.search(r", 8, GRND_NONBLOCK\) = 8$", call) for call in calls), calls
        assert "/dev/urandom" not in traced.stderr and "/dev/random" not in traced.stderr


def program_modules(executable: Path) -> list[str]:
    """The compiled modules the laid-out executable carries."""
    from kdump_agent.host import pyzarchive
    from kdump_agent.host.programdir import PYZ, read_archive

    pyz = next(e for e in read_archive(executable).entries if e.typecode == PYZ)
    return pyzarchive.module_names(pyz.content())


def lay_out_program(tmp_path: Path) -> Path:
    """The binary laid out as mkinitrd packs it for a local dump."""
    from kdump_agent.host.programdir import lay_out

    return lay_out(BINARY, tmp_path / "program", ssh=False, network=False)


def test_the_binary_carries_every_module_of_the_package() -> None:
    """Modules imported only where they are used (the SSH and network ones, inside the steps
    that need them) must still be in the binary: missing, they would fail in the capture
    kernel after a panic, not here."""
    package = Path(__file__).resolve().parents[2] / "agent" / "kdump_agent"
    expected = {".".join(("kdump_agent", *p.relative_to(package).with_suffix("").parts))
                .removesuffix(".__init__") for p in package.rglob("*.py")}
    viewer = Path(sys.executable).with_name("pyi-archive_viewer")
    listing = subprocess.run([str(viewer), "--list", "--recursive", str(BINARY)], capture_output=True,
                             text=True, timeout=120, check=True).stdout
    carried = set(re.findall(r"'(kdump_agent(?:\.\w+)*)'", listing))
    assert expected - carried == set()
