"""The boundary to the machine for commands, mounts, the kernel log, sync and reboot(2).

Everything here is a thin wrapper that either succeeds or raises an error naming what it
tried, so the steps above read as plain sequences and the unit tests can replace this
module's functions at one boundary. Other modules touch the machine for one job each,
and say so: targets/directory.py and targets/local.py make the dump directory and write,
fsync and rename the dump's files in it; host/restore_raw.py does the same on the host and
clears the raw device; network/rtnetlink.py and network/bringup.py configure the NIC over
netlink and write resolv.conf; ssh/ talks to the dump server; log.py writes /dev/kmsg;
the host/ modules write the image, its stamp, the laid-out program and their records.
"""

from __future__ import annotations

import ctypes
import enum
import hashlib
import logging
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import IO, TypeVar

from .errors import CommandFailed, MountError

log = logging.getLogger("kdump-agent")
T = TypeVar("T")

_libc = ctypes.CDLL(None, use_errno=True)

# Children started by run(): the runner kills them when a state overruns its deadline,
# so a stuck collector cannot outlive the state that started it.
_children: set[subprocess.Popen[bytes]] = set()
_children_lock = threading.Lock()

_LEVEL_PREFIX = re.compile(r"^<\d+>")
_LINE_BREAK = re.compile(rb"[\r\n]")
# makedumpfile's progress lines: "Copying data   : [ 10.7 %] \   eta: 0s"
_PROGRESS = re.compile(r"\[\s*[\d.]+ ?%\]")
# After the program exits, how long its output pipes may take to drain (a grandchild may
# still hold them open; we do not wait for it).
PUMP_DRAIN_SECONDS = 5.0
# How long a streaming program whose reader gave up may take to exit by itself (its own
# error then explains the cut stream better than the reader's) before it is killed.
EXIT_GRACE_SECONDS = 1.0

CLEAN_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"
SECRET_SHOWN = "***"  # what a secret argument is logged as
SHELLS = ("/bin/bash", "/bin/sh")
SHELL_PROMPT = "kdump-shell# "


def run(
    argv: Sequence[str],
    *,
    timeout: float,
    stdout: int | None = subprocess.PIPE,
    check: bool = True,
    extra_env: Mapping[str, str] | None = None,
    echo: bool = True,
    log_stdout: bool = False,
    secrets: Sequence[str] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run argv (never through a shell) with a timeout and a clean environment.

    Logs `+ argv` first (unless echo is false: polls), then each line the program writes
    to standard error as it comes (a collector's progress is shown on the console only,
    so it does not flood the kernel log). On failure the last error line becomes the
    error's detail: that line is usually what the admin needs ("No space left on device").

    With `log_stdout` a piped standard output is logged line by line too, instead of being
    kept whole: for the admin's own programs (hooks), whose output is meant to be read.
    The result's stdout is then the lines logged.

    Words of argv in `secrets` (an iSCSI CHAP password) are shown as SECRET_SHOWN in the
    `+ argv` line and in the error's argv: the kernel log is read by anyone at the console.
    """
    child = _Child(argv, stdout=stdout, extra_env=extra_env, echo=echo, secrets=secrets)
    output = bytearray()
    shown: list[str] = []  # standard output lines already logged (log_stdout)
    if child.process.stdout is not None and log_stdout:
        child.pump(_pump_stderr, child.process.stdout, shown)
    elif child.process.stdout is not None:
        child.pump(_pump_stdout, child.process.stdout, output)
    returncode = child.wait(timeout)
    kept = "\n".join(shown).encode() if log_stdout else bytes(output)
    result = subprocess.CompletedProcess(child.argv, returncode, kept, "\n".join(child.errors).encode())
    if check and returncode != 0:
        raise CommandFailed(child.argv, returncode, child.errors[-1] if child.errors else "")
    return result


def run_streaming(argv: Sequence[str], consume: Callable[[IO[bytes]], T], *,
                  timeout: float) -> tuple[T, subprocess.CompletedProcess[bytes]]:
    """Run argv with its standard output read by consume() in this thread as it is written.

    For a collector whose output goes over the network: nothing of the stream is held
    here beyond what consume() holds. If consume() raises, the program is killed and the
    error goes on, unless the program had failed by itself first: then its failure is the
    error (a cut-off stream is the symptom, its last error line the cause). If consume()
    returns, the program gets what is left of `timeout` to exit; the caller checks the
    exit status (the result's returncode).
    """
    started = time.monotonic()
    child = _Child(argv, stdout=subprocess.PIPE, extra_env=None, echo=True)
    assert child.process.stdout is not None
    try:
        value = consume(child.process.stdout)
    except Exception as error:
        try:  # a program that failed by itself closes its output as it exits: let it finish
            exited: int | None = child.process.wait(timeout=EXIT_GRACE_SECONDS)
        except subprocess.TimeoutExpired:
            exited = None
        _kill(child.process)
        child.wait(PUMP_DRAIN_SECONDS)
        if exited:
            detail = child.errors[-1] if child.errors else str(error)
            raise CommandFailed(child.argv, exited, detail) from error
        raise
    finally:
        child.process.stdout.close()
    returncode = child.wait(max(0.0, timeout - (time.monotonic() - started)))
    return value, subprocess.CompletedProcess(child.argv, returncode, b"", "\n".join(child.errors).encode())


class _Child:
    """A started command: its standard error logged line by line, registered for kill_children."""

    def __init__(self, argv: Sequence[str], *, stdout: int | None, extra_env: Mapping[str, str] | None,
                 echo: bool, secrets: Sequence[str] = ()) -> None:
        hidden = {secret for secret in secrets if secret}
        self.argv = [SECRET_SHOWN if word in hidden else word for word in argv]  # as logged
        if echo:
            log.info("+ %s", " ".join(self.argv))
        env = {"PATH": CLEAN_PATH, "LANG": "C", "TMPDIR": os.environ.get("TMPDIR", "/tmp"),
               **(extra_env or {})}
        try:
            self.process = subprocess.Popen(
                list(argv), stdin=subprocess.DEVNULL, stdout=stdout, stderr=subprocess.PIPE, env=env,
                start_new_session=True,
            )
        except OSError as error:
            raise CommandFailed(self.argv, 127, error.strerror or str(error)) from error
        with _children_lock:
            _children.add(self.process)
        self.errors: list[str] = []
        self.pumps: list[threading.Thread] = []
        assert self.process.stderr is not None
        self.pump(_pump_stderr, self.process.stderr, self.errors)

    def pump(self, target: Callable[..., None], *args: object) -> None:
        thread = threading.Thread(target=target, args=args, daemon=True)
        thread.start()
        self.pumps.append(thread)

    def wait(self, timeout: float) -> int:
        """The exit status; a program still running after timeout is killed and fails."""
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            _kill(self.process)
            self.process.wait()
            raise CommandFailed(self.argv, None, f"no result after {timeout:g} s") from None
        finally:
            with _children_lock:
                _children.discard(self.process)
            for pump in self.pumps:
                pump.join(PUMP_DRAIN_SECONDS)


def _pump_stderr(stream: IO[bytes], lines: list[str]) -> None:
    """Log a program's error output line by line as it arrives; keep it for the caller."""
    pending = b""
    while chunk := stream.read1(4096):  # type: ignore[attr-defined]
        pending += chunk
        *complete, pending = _LINE_BREAK.split(pending)
        for raw in complete:
            _note_line(raw, lines)
    _note_line(pending, lines)


def _note_line(raw: bytes, lines: list[str]) -> None:
    text = raw.decode(errors="replace").strip()
    if not text:
        return
    if _PROGRESS.search(text):
        console_only(f"  {text}")
        return
    lines.append(text)
    log.info("  %s", text)


def _pump_stdout(stream: IO[bytes], output: bytearray) -> None:
    while chunk := stream.read(65536):
        output += chunk


def console_only(text: str) -> None:
    """Progress for the admin watching the console; not worth a line in the kernel log."""
    sys.stderr.write(f"kdump-agent: {text}\n")
    sys.stderr.flush()


def consoles(proc_consoles: str = "/proc/consoles") -> list[str]:
    """Every console the kernel writes to (/dev/ttyS0, /dev/tty0...), for the shell's banner."""
    try:
        with open(proc_consoles, encoding="utf-8") as listing:
            return [f"/dev/{line.split()[0]}" for line in listing if line.strip()]
    except OSError:
        return []


def interactive_shell(banner: str, timeout: float, console: str = "/dev/console") -> int:
    """An interactive shell on the console, under a deadline; returns its exit status.

    The banner goes to every console, so whichever one the admin watches says why they
    are in a shell. The shell gets the console as its controlling terminal (setsid -c), so
    Ctrl-C reaches what it runs rather than the agent.
    """
    for path in dict.fromkeys([console, *consoles()]):
        try:
            with open(path, "w", encoding="utf-8") as out:
                out.write(banner)
        except OSError:
            pass
    shell = next((s for s in SHELLS if os.access(s, os.X_OK)), None)
    if shell is None:
        raise CommandFailed(["sh"], 127, f"no shell in this initramfs (looked for {', '.join(SHELLS)})")
    argv = ["setsid", "-c", shell, "-i"] if shutil.which("setsid", path=CLEAN_PATH) else [shell, "-i"]
    env = {"PATH": CLEAN_PATH, "TERM": "linux", "HOME": "/", "PS1": SHELL_PROMPT}
    log.info("+ %s", " ".join(argv))
    with open(console, "r+b", buffering=0) as tty:
        process = subprocess.Popen(argv, stdin=tty, stdout=tty, stderr=tty, env=env)
        with _children_lock:
            _children.add(process)
        try:
            return process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()
            raise CommandFailed(argv, None, f"the shell was left open for {timeout:g} s") from None
        finally:
            with _children_lock:
                _children.discard(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    """Kill a child's whole process group: collectors may fork helpers of their own."""
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def kill_children() -> None:
    """Kill every command still running; called when a state overruns its deadline."""
    with _children_lock:
        children = list(_children)
    for process in children:
        _kill(process)


def _check(result: int, call: str, path: str) -> None:
    if result != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"{call}({path}): {os.strerror(errno)}")


def mount(source: str, target: str, fstype: str, options: str = "") -> None:
    """mount(2) without a mount binary: the initramfs need not carry util-linux's."""
    os.makedirs(target, exist_ok=True)
    try:
        _check(
            _libc.mount(source.encode(), target.encode(), fstype.encode(), ctypes.c_ulong(0),
                        options.encode() or None),
            "mount", f"{source} on {target} type {fstype}",
        )
    except OSError as error:
        raise MountError(str(error)) from error
    log.info("mounted %s on %s (%s)", source, target, fstype)


MNT_FORCE = 1
MNT_DETACH = 2


def umount(target: str, *, force: bool = False) -> None:
    """umount(2); a busy file system is left mounted (the caller has synced it).

    `force` is for network file systems: MNT_FORCE aborts requests to a server that went
    away and MNT_DETACH lets go of the mount even if they do not end, so a dead NFS
    server cannot hold up the action that follows.
    """
    flags = MNT_FORCE | MNT_DETACH if force else 0
    _check(_libc.umount2(target.encode(), flags), "umount", target)


def file_sha256(path: str | os.PathLike[str], *, give_up_at: float | None = None) -> str:
    """sha256 of a file's content, read in 1 MiB blocks.

    With `give_up_at` (a time.monotonic() value) a read that is still going then raises
    TimeoutError: a dump's checksum is worth having, but not worth a missed deadline.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
            if give_up_at is not None and time.monotonic() > give_up_at:
                raise TimeoutError(f"reading {path} back took longer than its time")
    return digest.hexdigest()


def write_hashed(stream: IO[bytes], path: str | os.PathLike[str]) -> tuple[int, str]:
    """Write what stream yields into a new file at path, in order, hashing it on the way:
    (its size, its sha256), the file's own, with no second read of what may be the whole of
    the crashed machine's memory."""
    digest = hashlib.sha256()
    size = 0
    with open(path, "wb") as out:
        while block := stream.read(1 << 20):
            digest.update(block)
            out.write(block)
            size += len(block)
    return size, digest.hexdigest()


def read_text(path: str) -> str | None:
    """The file's text, or None when it does not exist or cannot be read."""
    try:
        with open(path, encoding="utf-8", errors="replace") as file:
            return file.read()
    except OSError:
        return None


def fsync(path: str | os.PathLike[str]) -> None:
    """fsync a file, a directory or a block device by path."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


# sync(2) waits for every file system, a dead NFS server's too (a soft mount fails each
# request in about 30 s, but a sync may issue many): what it has not done in this time it
# will not do, and the action after it (reboot) must not wait for it.
SYNC_SECONDS = 60.0


def sync(timeout: float | None = None) -> bool:
    """Flush every file system, waiting at most timeout (default SYNC_SECONDS) seconds;
    False if it did not end.

    The sync runs in a thread of its own, which is left behind if it hangs: the files
    that count were fsynced one by one already, this is for whatever else is dirty.
    """
    done = threading.Event()

    def flush() -> None:
        os.sync()
        done.set()

    threading.Thread(target=flush, name="sync", daemon=True).start()
    bound = SYNC_SECONDS if timeout is None else timeout
    if done.wait(bound):
        return True
    log.warning("sync did not end within %g s (a file system that no longer answers?); going on", bound)
    return False


_bounded_sync = sync  # for power(), whose `sync` parameter hides the function's name


class Power(enum.Enum):
    """reboot(2) commands (linux/reboot.h)."""

    REBOOT = 0x01234567
    HALT = 0xCDEF0123
    POWEROFF = 0x4321FEDC


def power(command: Power, *, sync: bool = True) -> None:
    """Sync (within SYNC_SECONDS) and call reboot(2). Returns only if the kernel refused,
    which then raises."""
    if sync:
        _bounded_sync(SYNC_SECONDS)
    _check(_libc.reboot(ctypes.c_int(command.value)), "reboot", command.name.lower())


def read_kernel_log() -> str:
    """The kernel ring buffer through syslog(2) (klogctl), without the `<level>` prefixes."""
    size = _libc.klogctl(10, None, 0)  # SYSLOG_ACTION_SIZE_BUFFER
    if size <= 0:
        return ""
    buffer = ctypes.create_string_buffer(size)
    length = _libc.klogctl(3, buffer, size)  # SYSLOG_ACTION_READ_ALL
    text = buffer.raw[: max(length, 0)].decode(errors="replace")
    return "".join(_LEVEL_PREFIX.sub("", line) for line in text.splitlines(keepends=True))
