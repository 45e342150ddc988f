"""QEMU for the harness: boot a kernel and initramfs with a hard timeout and keep the serial
console (`boot`), or keep it open for a test to type into (`boot_interactive`, `Console`).

The scenario every e2e test plays is the one an admin lives through:

    first kernel (crashkernel=...)  --kexec -p, sysrq-c-->  capture kernel  -->  dump on a disk

QEMU is always stopped by its own pid, so no guest can hang a test run.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import re
import shlex
import subprocess
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Self

from .cache import cache_dir
from .commands import log
from .kernels import Kernel

QEMU = "qemu-system-x86_64"


_ESCAPES = re.compile(rb"\x1b(?:\[[0-?]*[ -/]*[@-~]|[@-Z\\-_c])")


def clean_console(raw: bytes) -> str:
    """Serial bytes as readable text: CR LF and lone CR become LF, ANSI/VT escapes (SeaBIOS
    clears the screen with them) and other control characters are dropped."""
    text = _ESCAPES.sub(b"", raw).replace(b"\r\n", b"\n").replace(b"\r", b"\n")
    decoded = text.decode("utf-8", errors="replace")
    return "".join(c for c in decoded if c in "\n\t" or c >= " ")


@dataclasses.dataclass
class BootResult:
    """What one QEMU run left behind.

    `returncode` is QEMU's exit status; QEMU exits 0 on the guest's reboot or power-off and
    also when we stop it (timeout, `until`), so judge a run by its console and `timed_out`.
    `timeline` holds (seconds since QEMU started, line) for every console line, as seen by
    polling the log: good to ~0.1 s, enough for timings.
    """

    console: str
    returncode: int | None
    timed_out: bool
    seconds: float
    log_path: Path
    stderr: str = ""
    timeline: list[tuple[float, str]] = dataclasses.field(default_factory=list)

    def at(self, marker: str) -> float | None:
        """When the first console line containing `marker` appeared, or None."""
        return next((t for t, line in self.timeline if marker in line), None)

    def tail(self, lines: int = 60) -> str:
        """The last console lines: what a failure message should show."""
        return "\n".join(self.console.splitlines()[-lines:])


def _escape_opt(value: Path | str) -> str:
    """QEMU option values escape commas by doubling them."""
    return str(value).replace(",", ",,")


@functools.cache
def accelerator(kernel_path: Path) -> str:
    """"kvm" only if a KVM guest really boots here, else "tcg".

    Nested KVM on our CI machines hangs after SeaBIOS (or dies with "KVM internal error")
    even though /dev/kvm opens fine, so access to the device proves nothing: we boot the kernel
    without an initramfs and wait for its banner. The verdict holds until the host reboots, so
    it is kept per process and in the cache dir keyed by the host's boot id; the probe costs
    its full timeout exactly when KVM is broken. `KDUMP_AGENT_ACCEL=tcg|kvm` skips all this.
    """
    forced = os.environ.get("KDUMP_AGENT_ACCEL")
    if forced:
        return forced
    if not os.access("/dev/kvm", os.R_OK | os.W_OK):
        return "tcg"
    boot_id = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    memo = cache_dir() / "accel-verdict"
    with contextlib.suppress(OSError, ValueError):
        seen_boot, verdict = memo.read_text().split()
        if seen_boot == boot_id and verdict in ("kvm", "tcg"):
            return verdict
    with tempfile.TemporaryDirectory() as tmp:
        probe = _run_qemu(["-accel", "kvm", "-m", "256", "-kernel", str(kernel_path),
                           "-append", "console=ttyS0 panic=-1"],
                          timeout_s=10, log_path=Path(tmp) / "kvm-probe.log",
                          until=lambda line: "Linux version" in line)
    verdict = "kvm" if probe.at("Linux version") is not None else "tcg"
    log(f"KVM probe: {verdict} ({probe.seconds:.1f}s)")
    with contextlib.suppress(OSError):
        memo.parent.mkdir(parents=True, exist_ok=True)
        memo.write_text(f"{boot_id} {verdict}\n")
    return verdict


def _machine_args(kernel: Kernel, initrd: Path, *, append: str, disks: Sequence[Path],
                  memory_mib: int, cpus: int, accel: str | None,
                  extra_args: Sequence[str]) -> list[str]:
    """The QEMU arguments that describe the machine, shared by boot() and boot_interactive()."""
    args = ["-accel", accel or accelerator(kernel.vmlinuz), "-m", str(memory_mib),
            "-smp", str(cpus), "-kernel", str(kernel.vmlinuz), "-initrd", str(initrd),
            "-append", append]
    for disk in disks:
        args += ["-drive", f"file={_escape_opt(disk)},format=raw,if=virtio"]
    if not any(a in ("-netdev", "-nic", "-net") for a in extra_args):
        args += ["-net", "none"]
    return args + list(extra_args)


def boot(kernel: Kernel, initrd: Path, *, append: str, disks: Sequence[Path] = (),
         memory_mib: int = 1024, timeout_s: int, log_path: Path, cpus: int = 1,
         accel: str | None = None, extra_args: Sequence[str] = (),
         progress: Callable[[str], None] | None = None,
         until: Callable[[str], bool] | None = None,
         prefix: Sequence[str] = ()) -> BootResult:
    """Boot `kernel` + `initrd` in QEMU and return when the guest powers off or reboots
    (-no-reboot turns both into an exit), when `until(line)` is true for a console line, or
    after `timeout_s`, whichever comes first. QEMU is killed by its own pid; no guest can
    hang a test run.

    `disks` become virtio disks in order (vda, vdb, ...). One vCPU by default: the capture
    kernel runs with nr_cpus=1 anyway, TCG emulates a second vCPU at real cost on a 2-core
    host, and a single vCPU keeps timings comparable between runs. The serial console goes
    straight to `log_path` (QEMU writes it, so it survives a crash of this process);
    `progress` receives each console line as it appears. `extra_args` reach QEMU verbatim,
    e.g. `-netdev user,...` for network targets (the default is no network at all).
    `prefix` goes in front of QEMU's command, e.g. `ip netns exec <ns>` to run it inside a
    test's network namespace (harness.netlab), where its tap devices are.
    """
    args = _machine_args(kernel, initrd, append=append, disks=disks, memory_mib=memory_mib,
                         cpus=cpus, accel=accel, extra_args=extra_args)
    return _run_qemu(args, timeout_s=timeout_s, log_path=log_path, progress=progress,
                     until=until, prefix=prefix)


class _SerialLog:
    """The console log QEMU writes, followed as it grows: complete lines with the time they
    were first seen, plus the unfinished last line (a shell prompt never ends in a newline)."""

    def __init__(self, path: Path, start: float) -> None:
        self.path = path
        self.start = start
        self.timeline: list[tuple[float, str]] = []
        self.text = ""  # every complete line, cleaned, each followed by "\n"
        self._offset = 0
        self._pending = b""

    def poll(self, final: bool) -> list[str]:
        """Read what QEMU appended and return the lines it completed; `final` (QEMU has
        exited) completes the last line too."""
        chunk = b""
        if self.path.exists():
            with open(self.path, "rb") as fd:
                fd.seek(self._offset)
                chunk = fd.read()
            self._offset += len(chunk)
        pending = self._pending + chunk
        # A CR at the end may be the first half of a CR LF split across two reads.
        held = b"\r" if pending.endswith(b"\r") and not final else b""
        *complete, rest = re.split(rb"\r?\n|\r", pending[:len(pending) - len(held)])
        self._pending = rest + held
        if final and self._pending:
            complete.append(self._pending)
            self._pending = b""
        now = time.monotonic() - self.start
        lines = [clean_console(raw) for raw in complete]
        self.timeline += [(now, line) for line in lines]
        self.text += "".join(line + "\n" for line in lines)
        return lines

    def partial(self) -> str:
        """The last line so far, not yet ended by a newline."""
        return clean_console(self._pending)


class _Qemu:
    """One QEMU process whose serial console QEMU itself writes to `log_path`.

    With `interactive`, the serial port is QEMU's stdio chardev: its input is a pipe we hold,
    its output goes to /dev/null and, through the chardev's `logfile=`, to `log_path`. So the
    console is read from the same file in both modes, nothing the guest prints is lost before
    we look (a `server=on,wait=off` socket drops output while no client is connected), and
    there is no socket path to keep under the 108-byte limit of sun_path.
    """

    def __init__(self, args: Sequence[str], *, log_path: Path, interactive: bool,
                 prefix: Sequence[str] = ()) -> None:
        log_path.parent.mkdir(parents=True, exist_ok=True)
        log_path.unlink(missing_ok=True)
        self.log_path = log_path
        self.stderr_path = log_path.with_name(log_path.name + ".qemu-stderr")
        if interactive:
            serial = ["-chardev", f"stdio,id=serial0,signal=off,logfile={_escape_opt(log_path)}",
                      "-serial", "chardev:serial0"]
        else:
            serial = ["-serial", f"file:{_escape_opt(log_path)}"]
        argv = [*prefix, QEMU, "-nodefaults", "-nographic", "-no-reboot", *serial, *args]
        log_path.with_name(log_path.name + ".cmdline").write_text(shlex.join(argv) + "\n")
        self.timed_out = False
        self.start = time.monotonic()
        self.log = _SerialLog(log_path, self.start)
        with open(self.stderr_path, "wb") as err:
            self.proc = subprocess.Popen(
                argv, stdin=subprocess.PIPE if interactive else subprocess.DEVNULL,
                stdout=subprocess.DEVNULL if interactive else err, stderr=err)

    def elapsed(self) -> float:
        return time.monotonic() - self.start

    def poll(self) -> tuple[list[str], bool]:
        """New complete console lines, and whether QEMU has exited (then they are the last)."""
        exited = self.proc.poll() is not None
        return self.log.poll(final=exited), exited

    def vcpu_stopped(self) -> bool:
        """A KVM internal error stops the vCPU: a hang that waiting cannot end."""
        return b"KVM internal error" in self.stderr_path.read_bytes()[-4096:]

    def stop(self) -> None:
        """Terminate QEMU by its pid (SIGKILL if it lingers) and reap it."""
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def result(self) -> BootResult:
        console = clean_console(self.log_path.read_bytes()) if self.log_path.exists() else ""
        return BootResult(console=console, returncode=self.proc.returncode,
                          timed_out=self.timed_out, seconds=self.elapsed(),
                          log_path=self.log_path,
                          stderr=self.stderr_path.read_text(errors="replace"),
                          timeline=self.log.timeline)


def _run_qemu(args: Sequence[str], *, timeout_s: float, log_path: Path,
              progress: Callable[[str], None] | None = None,
              until: Callable[[str], bool] | None = None,
              prefix: Sequence[str] = ()) -> BootResult:
    qemu = _Qemu(args, log_path=log_path, interactive=False, prefix=prefix)
    try:
        while True:
            lines, exited = qemu.poll()
            stopped = False
            for line in lines:
                if progress:
                    progress(line)
                if until and until(line):
                    stopped = True
            if exited or stopped:
                break
            if qemu.elapsed() > timeout_s or qemu.vcpu_stopped():
                qemu.timed_out = True
                break
            time.sleep(0.1)
    finally:
        qemu.stop()
    return qemu.result()


class ExpectTimeout(TimeoutError):
    """Console.expect() gave up: the text did not come in time, or QEMU exited first."""


class Console:
    """A running guest whose serial console a test reads and types into (boot_interactive).

    Leaving the `with` block stops QEMU if it still runs. A watchdog thread stops it at the
    boot's hard timeout whatever the test is doing meanwhile. Everything the guest prints
    lands in `log_path` as with boot(), so the console_logs fixture reports it on failure.
    What a test types is not logged by QEMU; it shows up only as the guest's tty echoes it.
    """

    def __init__(self, qemu: _Qemu, timeout_s: float,
                 progress: Callable[[str], None] | None) -> None:
        self._qemu = qemu
        self._timeout_s = timeout_s
        self._progress = progress
        self._seen = 0  # offset in `text` just past the last match
        self._watchdog = threading.Timer(timeout_s, self._expire)
        self._watchdog.daemon = True
        self._watchdog.start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _expire(self) -> None:
        self._qemu.timed_out = True
        self._qemu.stop()

    def _poll(self) -> bool:
        """Take in new console output; True once QEMU has exited."""
        lines, exited = self._qemu.poll()
        if self._progress:
            for line in lines:
                self._progress(line)
        if not exited and self._qemu.vcpu_stopped():
            self._expire()
        return exited

    @property
    def text(self) -> str:
        """Everything the guest has printed so far, cleaned like BootResult.console."""
        return self._qemu.log.text + self._qemu.log.partial()

    def expect(self, pattern: str | re.Pattern[str], timeout: float) -> re.Match[str]:
        """Wait until `pattern` shows up in the console text that arrived after the last match
        and return the match. A str is literal text; pass a compiled pattern for a regex.

        Raises ExpectTimeout, with the unmatched console text, after `timeout` seconds or as
        soon as QEMU exits (guest power-off, or the hard timeout) without a match.
        """
        regex = pattern if isinstance(pattern, re.Pattern) else re.compile(re.escape(pattern))
        deadline = time.monotonic() + timeout
        while True:
            exited = self._poll()
            text = self.text
            match = regex.search(text, self._seen)
            if match:
                self._seen = match.end()
                return match
            if exited or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        if self._qemu.timed_out:
            why = f"the boot's hard timeout ({self._timeout_s:g}s) stopped QEMU"
        elif exited:
            why = f"QEMU exited (status {self._qemu.proc.returncode})"
        else:
            why = f"not seen within {timeout:g}s"
        unmatched = text[self._seen:].splitlines()[-40:]
        raise ExpectTimeout(f"console never showed {regex.pattern!r}: {why}; "
                            f"since the last match it printed:\n" + "\n".join(unmatched))

    def send(self, text: str) -> None:
        """Type `text` as is into the guest's serial port."""
        stdin = self._qemu.proc.stdin
        assert stdin is not None  # interactive QEMU always has a stdin pipe
        try:
            stdin.write(text.encode())
            stdin.flush()
        except BrokenPipeError as error:
            raise RuntimeError(f"cannot type {text!r}: QEMU has exited "
                               f"(status {self._qemu.proc.returncode})") from error

    def sendline(self, line: str) -> None:
        """Type `line` and Enter. Enter is a lone CR, what a terminal sends: the guest tty
        turns it into NL (ICRNL) for a cooked-mode reader, and busybox's line editing in
        raw mode takes it as Enter too. CR LF would enter an extra empty line."""
        self.send(line + "\r")

    def wait(self, timeout: float) -> BootResult:
        """Wait for QEMU to exit (guest power-off or reboot), at most `timeout` seconds, then
        stop it; the result is the same as boot()'s (`timed_out` if it had to be stopped).
        The timeline's times are when expect() or wait() first saw each line."""
        deadline = time.monotonic() + timeout
        while not self._poll():
            if time.monotonic() > deadline:
                self._qemu.timed_out = True
                break
            time.sleep(0.1)
        self.close()
        return self._qemu.result()

    def close(self) -> None:
        """Stop the watchdog and QEMU (if still running) and close the input pipe."""
        self._watchdog.cancel()
        self._qemu.stop()
        if self._qemu.proc.stdin:
            with contextlib.suppress(BrokenPipeError):
                self._qemu.proc.stdin.close()


def boot_interactive(kernel: Kernel, initrd: Path, *, append: str, disks: Sequence[Path] = (),
                     memory_mib: int = 1024, timeout_s: float, log_path: Path, cpus: int = 1,
                     accel: str | None = None, extra_args: Sequence[str] = (),
                     progress: Callable[[str], None] | None = None) -> Console:
    """Start QEMU as boot() does but with a serial console a test can type into; use the
    returned Console as a context manager:

        with boot_interactive(kernel, initrd, append=..., timeout_s=300, log_path=log) as c:
            c.expect("# ", timeout=120)
            c.sendline("echo hello-$((6*7))")
            c.expect("hello-42", timeout=30)
            c.sendline("poweroff -f")
            result = c.wait(timeout=60)

    `timeout_s` is the hard limit for the whole run, counted from now. `progress` gets each
    console line when expect() or wait() reads it.
    """
    args = _machine_args(kernel, initrd, append=append, disks=disks, memory_mib=memory_mib,
                         cpus=cpus, accel=accel, extra_args=extra_args)
    return Console(_Qemu(args, log_path=log_path, interactive=True), timeout_s, progress)
