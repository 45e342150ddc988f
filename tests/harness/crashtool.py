"""The `crash` utility opening a saved dump, as an admin does after a panic.

makedumpfile --dump-dmesg (dumps.py) proves the log can be read back; crash proves more: with
the kernel's debug info it finds the panic, the crashing task and its stack in the dump. It
needs the vmlinux of Debian's -dbg package (a 283 MB .deb), so only that one file is
extracted into the cache and the .deb is deleted.
"""

from __future__ import annotations

import dataclasses
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from . import cache
from .commands import log, run
from .dumps import PANIC_MARK
from .kernels import Kernel

PANIC_STRING = "sysrq triggered crash"  # the panic() message of sysrq-c (drivers/tty/sysrq.c)
CRASHING_FRAME = "sysrq_handle_crash"  # the function that panics, on the crashing task's stack
# `log | tail` needs a terminal (crash's pipes fail without one), so the whole log is read and
# its tail taken here.
CRASH_COMMANDS = "sys\nbt\nlog\nq\n"
CRASH_TIMEOUT_S = 300  # crash reads the debug info of a 560 MB vmlinux: seconds, under load more
LOG_TAIL_LINES = 60  # the panic and its stack dump: ~30 lines in these guests
BT_FRAME = re.compile(r"^\s*#\d+ \[[0-9a-f]+\] (?P<function>\S+) at ", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class CrashSession:
    """What one `crash -s vmlinux vmcore` run printed for CRASH_COMMANDS."""

    vmcore: Path
    output: str

    def field(self, name: str) -> str | None:
        """A `sys` field (RELEASE, PANIC, ...): the value on its line, or None."""
        match = re.search(rf"^\s*{name}: ?(.*)$", self.output, re.MULTILINE)
        return match.group(1).strip() if match else None

    def panic_text(self) -> str:
        """The PANIC field of `sys` with what crash prints under it up to the backtrace: crash
        8.0 puts the panic string there in quotes, on a line of its own."""
        start = self.output.find("PANIC:")
        if start < 0:
            return ""
        end = self.output.find("\nPID:", start)
        return self.output[start:end if end >= 0 else len(self.output)]

    def backtrace(self) -> list[str]:
        """The functions of `bt`'s frames, innermost first."""
        return BT_FRAME.findall(self.output)

    def log_tail(self) -> list[str]:
        """The last lines of `log`: the crashed kernel's ring buffer as crash reads it."""
        lines = [line for line in self.output.splitlines() if line.startswith("[")]
        return lines[-LOG_TAIL_LINES:]


def vmlinux_path(kernel: Kernel, cache_dir: Path | None = None) -> Path:
    """Where fetch_vmlinux keeps the kernel's debug vmlinux."""
    return (cache_dir or cache.cache_dir()) / "debug" / f"vmlinux-{kernel.kver}"


def fetch_vmlinux(kernel: Kernel, cache_dir: Path | None = None) -> Path:
    """Download (once) linux-image-<kver>-dbg and keep only its vmlinux, in the cache.

    The .deb is downloaded into a staging directory that is removed afterwards, with the
    .deb: 283 MB for one 560 MB file is not worth keeping.
    """
    cache_dir = cache_dir or cache.cache_dir()
    vmlinux = vmlinux_path(kernel, cache_dir)
    package = f"linux-image-{kernel.kver}-dbg"
    member = f"./usr/lib/debug/boot/vmlinux-{kernel.kver}"
    with cache.locked(cache_dir / ".vmlinux.lock"):
        if vmlinux.is_file():
            return vmlinux
        vmlinux.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=f".{package}.", dir=cache_dir))
        try:
            started = time.monotonic()
            log(f"downloading {package}")
            run(["apt-get", "download", package], cwd=staging, timeout=900)
            debs = sorted(staging.glob(f"{package}_*_amd64.deb"))
            if not debs:
                raise RuntimeError(f"apt-get download {package} left no .deb in {staging}")
            downloaded = time.monotonic()
            partial = staging / vmlinux.name
            with open(partial, "wb") as out:
                deb = subprocess.Popen(["dpkg-deb", "--fsys-tarfile", str(debs[-1])],
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE)
                assert deb.stdout is not None and deb.stderr is not None
                tar = subprocess.run(["tar", "-xO", member], stdin=deb.stdout, stdout=out,
                                     stderr=subprocess.PIPE, timeout=600, check=False)
                deb.stdout.close()
                deb_err = deb.stderr.read()
                deb.wait(timeout=60)
            if deb.returncode or tar.returncode or not partial.stat().st_size:
                raise RuntimeError(f"cannot extract {member} from {debs[-1].name}: "
                                   f"{deb_err.decode(errors='replace').strip()} "
                                   f"{tar.stderr.decode(errors='replace').strip()}".strip())
            partial.rename(vmlinux)
            log(f"{package}: downloaded in {downloaded - started:.0f} s, vmlinux extracted in "
                f"{time.monotonic() - downloaded:.0f} s")
        finally:
            shutil.rmtree(staging, ignore_errors=True)
    return vmlinux


def open_dump(vmlinux: Path, vmcore: Path, timeout_s: float = CRASH_TIMEOUT_S) -> CrashSession:
    """Run `crash -s vmlinux vmcore` on CRASH_COMMANDS (a command file, -i), time-boxed.

    A crash that cannot open the dump, or exits non-zero, or overruns the timeout, fails with
    what it printed.
    """
    with tempfile.NamedTemporaryFile("w", prefix="crash-", suffix=".cmds") as commands:
        commands.write(CRASH_COMMANDS)
        commands.flush()
        argv = ["crash", "-s", str(vmlinux), str(vmcore), "-i", commands.name]
        try:
            proc = subprocess.run(argv, stdin=subprocess.DEVNULL, capture_output=True,
                                  text=True, errors="replace", timeout=timeout_s, check=False)
        except subprocess.TimeoutExpired as expired:
            printed = _text(expired.stdout) + _text(expired.stderr)
            raise AssertionError(f"crash did not finish on {vmcore} within {timeout_s:.0f} s; "
                                 f"it printed:\n{printed[-4000:] or '(nothing)'}") from None
    output = proc.stdout + proc.stderr
    if proc.returncode != 0:
        raise AssertionError(f"crash exited {proc.returncode} on {vmcore}:\n{output[-4000:]}")
    return CrashSession(vmcore=vmcore, output=output)


def _text(data: bytes | str | None) -> str:
    """TimeoutExpired's partial output, which is bytes even for a text-mode run."""
    if isinstance(data, bytes):
        return data.decode(errors="replace")
    return data or ""


def crash_problems(session: CrashSession, kernel: Kernel) -> list[str]:
    """What keeps the dump from being the sysrq panic of `kernel` as crash reads it, in words;
    [] if it is: the release is the kernel's, PANIC shows the sysrq panic string, the crashing
    task's stack has sysrq_handle_crash, and the log crash reads ends at the panic."""
    problems = []
    release = session.field("RELEASE")
    if release != kernel.kver:
        problems.append(f"crash reads release {release!r}, not {kernel.kver!r}")
    if PANIC_STRING not in session.panic_text():
        problems.append(f"crash's PANIC does not show {PANIC_STRING!r}: "
                        f"{session.panic_text()[:300]!r}")
    if CRASHING_FRAME not in session.backtrace():
        problems.append(f"the crashing task's backtrace has no {CRASHING_FRAME}: "
                        f"{session.backtrace()}")
    tail = "\n".join(session.log_tail())
    problems += [f"the last {LOG_TAIL_LINES} lines of crash's log do not show {mark!r}"
                 for mark in (PANIC_MARK, PANIC_STRING) if mark not in tail]
    return problems


def assert_crash_opens(vmlinux: Path, vmcore: Path, kernel: Kernel) -> CrashSession:
    """Fail the test unless crash opens `vmcore` and reads the sysrq panic from it."""
    session = open_dump(vmlinux, vmcore)
    problems = crash_problems(session, kernel)
    assert not problems, (f"crash on {vmcore}:\n" + "\n".join(problems)
                          + f"\ncrash printed:\n{session.output[-4000:]}")
    return session
