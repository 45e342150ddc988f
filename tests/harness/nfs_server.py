"""A real NFS server (nfs-ganesha) on 127.0.0.1 for the NFS target's end-to-end tests.

A QEMU guest on user-mode networking (`-netdev user`) reaches the host's loopback through
its gateway: slirp turns a guest connection to 10.0.2.2:PORT into one from 127.0.0.1 to
127.0.0.1:PORT. So the server listens on loopback only, at the standard ports, and a
kdump.conf line `nfs 10.0.2.2:/export` works with no port options at all:

    2049   NFS (v3 and v4.x)          ganesha, TCP and UDP
    20048  MOUNT (v1, v3)             ganesha; NFSv3 clients find it through rpcbind
    111    rpcbind                    ours, unless one already runs on this machine

The kernel has no nfsd here, hence ganesha (user space, FSAL VFS). `NfsServer(directory)`
keeps its config, logs, pid file, NFSv4 recovery state and the export itself (`export/`)
in `directory`; the export is RW, no root squash, for any client, with the NFSv4 pseudo
path equal to the NFSv3 mount path (`/export`). The NFSv4 grace period is off
(`Graceless`), so a client may OPEN/CREATE as soon as start() returns.

rpcbind 1.2.6 (bookworm) aborts with a double free when given `-h <addr>`, so it cannot be
told to listen on loopback. Instead it gets its sockets the way systemd's rpcbind.socket
hands them over (LISTEN_FDS): we bind 127.0.0.1:111 and [::1]:111 (TCP and UDP) and
/run/rpcbind.sock ourselves; rpcbind uses those and opens nothing else.

The ports are fixed, so only one server runs per machine at a time: start() takes a host
wide lock (a session that crashed leaves its daemons behind; the next start() ends those
by the pids recorded next to the lock, after checking their command lines). Daemons are
stopped by pid only, never by name: other jobs may run their own rpcbind meanwhile.

Inside a test's network namespace (`prefix=lab.prefix`, harness.netlab) the server is
NFSv4 only, on every address of the namespace (IPv4 and IPv6): NFSv4 needs no rpcbind, and
rpcbind's local socket /run/rpcbind.sock is the host's, shared by every namespace. ganesha
runs there with a private, empty /run (a mount namespace of its own), so it can neither
register with the host's rpcbind nor take the host's D-Bus name; it logs both failures and
serves. Its ports are the namespace's own, so it takes no host lock.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import signal
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Self

import pytest

from .processes import terminate

GANESHA = Path("/usr/bin/ganesha.nfsd")
GANESHA_VFS = Path("/usr/lib/x86_64-linux-gnu/ganesha/libfsalvfs.so")
RPCBIND = Path("/usr/sbin/rpcbind")
RPCBIND_SOCKET = Path("/run/rpcbind.sock")  # where libtirpc/ntirpc register services
INSTALL_HINT = "run `sh tools/install-deps.sh test` (nfs-ganesha nfs-ganesha-vfs rpcbind)"

LOOPBACK = "127.0.0.1"
NFS_PORT = 2049
MOUNTD_PORT = 20048
RPCBIND_PORT = 111
NFS_PROGRAM = 100003
MOUNT_PROGRAM = 100005
PORTMAP_PROGRAM = 100000

HOST_STATE = Path("/run/kdump-agent-nfs-server")  # the host-wide lock and the daemons' pids
START_TIMEOUT = 30.0  # an upper bound for ganesha to answer; it takes about a second
LOCK_TIMEOUT = 900.0  # another session's server may be in use for a whole test module
STOP_TIMEOUT = 15.0   # a graceful ganesha shutdown takes about a second

_active: NfsServer | None = None  # the one server of this process, if any


class NfsServerError(RuntimeError):
    """The server could not be started; the message ends with the tail of its logs."""


# --------------------------------------------------------------------------------------------
# ONC RPC, just enough to ask "do you answer?" (NULL) and "which port?" (PMAP GETPORT)
# --------------------------------------------------------------------------------------------

def rpc_call(port: int, program: int, version: int, procedure: int, args: bytes = b"", *,
             host: str = LOOPBACK, timeout: float = 2.0) -> bytes:
    """One RPC over TCP with AUTH_NONE; returns the result body of an accepted, successful
    reply and raises OSError for anything else (refused, reset, denied, wrong version)."""
    xid = int.from_bytes(os.urandom(4), "big")
    call = struct.pack(">10I", xid, 0, 2, program, version, procedure, 0, 0, 0, 0) + args
    with socket.create_connection((host, port), timeout=timeout) as conn:
        conn.sendall(struct.pack(">I", 0x80000000 | len(call)) + call)
        reply = b""
        last = False
        while not last:
            (mark,) = struct.unpack(">I", _recv_exactly(conn, 4))
            last = bool(mark & 0x80000000)
            reply += _recv_exactly(conn, mark & 0x7FFFFFFF)
    if len(reply) < 24:
        raise OSError(f"short RPC reply ({len(reply)} bytes) from port {port}")
    got_xid, msg_type, reply_stat, _verf_flavor, verf_len = struct.unpack(">5I", reply[:20])
    if got_xid != xid or msg_type != 1 or reply_stat != 0:
        raise OSError(f"RPC to program {program} v{version} on port {port} denied")
    offset = 20 + (verf_len + 3) // 4 * 4
    (accept_stat,) = struct.unpack(">I", reply[offset:offset + 4])
    if accept_stat != 0:
        raise OSError(f"RPC to program {program} v{version} on port {port}: accept_stat "
                      f"{accept_stat}")
    return reply[offset + 4:]


def _recv_exactly(conn: socket.socket, size: int) -> bytes:
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise OSError("connection closed in the middle of an RPC reply")
        data += chunk
    return data


def pmap_getport(program: int, version: int, protocol: int = socket.IPPROTO_TCP) -> int:
    """The port rpcbind on 127.0.0.1:111 maps `program`/`version` to (0: not registered),
    asked the way the kernel's NFS client asks: PMAPPROC_GETPORT, portmap v2."""
    result = rpc_call(RPCBIND_PORT, PORTMAP_PROGRAM, 2, 3,
                      struct.pack(">4I", program, version, protocol, 0))
    return int(struct.unpack(">I", result[:4])[0])


# --------------------------------------------------------------------------------------------
# Host-wide lock and leftovers of crashed sessions
# --------------------------------------------------------------------------------------------

def _take_host_lock(deadline: float) -> int:
    """flock HOST_STATE/lock, polling until `deadline`: the ports are the machine's. Returns
    the open descriptor; closing it releases the lock (so does the process's death)."""
    HOST_STATE.mkdir(parents=True, exist_ok=True)
    fd = os.open(HOST_STATE / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise NfsServerError(f"another test session holds {HOST_STATE / 'lock'} (an NFS "
                                     f"server on the fixed ports) for over {LOCK_TIMEOUT:g}s")
            time.sleep(0.5)


def _record_pids(entries: dict[str, int]) -> None:
    """Remember our daemons (name -> pid) for the next session, should this one crash."""
    text = "".join(f"{pid} {name}\n" for name, pid in entries.items())
    (HOST_STATE / "pids").write_text(text)


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [os.fsdecode(arg) for arg in raw.split(b"\0") if arg]


def _end_leftovers() -> None:
    """SIGKILL the daemons a crashed session recorded, if they still run: we hold the lock,
    so nothing alive may use them. A pid is only trusted if its command line is still the
    recorded program's (the pid may have been reused meanwhile)."""
    record = HOST_STATE / "pids"
    if not record.exists():
        return
    for line in record.read_text().splitlines():
        pid_text, _, name = line.partition(" ")
        if not pid_text.isdigit():
            continue
        pid = int(pid_text)
        argv = _cmdline(pid)
        if argv and os.path.basename(argv[0]) == name:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            _wait_gone(pid, 5.0)
    record.unlink()


def _wait_gone(pid: int, timeout: float) -> None:
    """Wait until `pid` (not our child) no longer exists or is a zombie."""
    give_up = time.monotonic() + timeout
    while time.monotonic() < give_up:
        try:
            state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            return
        if state in ("Z", "X"):
            return
        time.sleep(0.05)


# --------------------------------------------------------------------------------------------
# rpcbind
# --------------------------------------------------------------------------------------------

def rpcbind_running() -> bool:
    """Whether some rpcbind already answers on 127.0.0.1:111 (ours or the machine's)."""
    try:
        pmap_getport(PORTMAP_PROGRAM, 2)
        return True
    except OSError:
        return False


def _loopback_sockets() -> list[socket.socket]:
    """The sockets systemd's rpcbind.socket would pass, on loopback only: the local socket
    services register through, then 127.0.0.1:111 and [::1]:111, each TCP and UDP."""
    sockets: list[socket.socket] = []
    try:
        with contextlib.suppress(FileNotFoundError):
            RPCBIND_SOCKET.unlink()  # stale: nothing answered on port 111
        local = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sockets.append(local)
        local.bind(str(RPCBIND_SOCKET))
        os.chmod(RPCBIND_SOCKET, 0o666)
        local.listen(128)
        families = [(socket.AF_INET, LOOPBACK)]
        if socket.has_ipv6 and Path("/proc/net/if_inet6").exists():
            families.append((socket.AF_INET6, "::1"))
        for family, address in families:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                sock = socket.socket(family, kind)
                sockets.append(sock)
                if family == socket.AF_INET6:  # rpcbind rejects dual-stack sockets
                    sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
                if kind == socket.SOCK_STREAM:
                    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
                sock.bind((address, RPCBIND_PORT))
                if kind == socket.SOCK_STREAM:
                    sock.listen(128)
    except OSError:
        for sock in sockets:
            sock.close()
        raise
    return sockets


# argv: program, its one option, then the inherited socket fds in order. The fds are first
# moved above the highest of them, so putting them at 3, 4, ... clobbers none still needed.
_SOCKET_ACTIVATE = """\
import os, sys
program, option, fds = sys.argv[1], sys.argv[2], [int(fd) for fd in sys.argv[3:]]
high = [os.dup2(fd, max(fds) + 1 + i) for i, fd in enumerate(fds)]
for fd in fds:
    os.close(fd)
for i, fd in enumerate(high):
    os.dup2(fd, 3 + i)
    os.close(fd)
os.environ.update(LISTEN_PID=str(os.getpid()), LISTEN_FDS=str(len(fds)))
os.execv(program, [program, option])
"""


class _Rpcbind:
    """Our own rpcbind, socket-activated on loopback; stop() by pid."""

    def __init__(self, log_path: Path) -> None:
        self.log_path = log_path
        self.process: subprocess.Popen[bytes] | None = None
        self._socket_inode: int | None = None

    def start(self) -> None:
        sockets = _loopback_sockets()
        try:
            self._socket_inode = RPCBIND_SOCKET.stat().st_ino
            # A stub moves them to 3..3+n and execs rpcbind, keeping its pid for LISTEN_PID.
            with open(self.log_path, "ab") as log:
                self.process = subprocess.Popen(
                    [sys.executable, "-c", _SOCKET_ACTIVATE, str(RPCBIND), "-f",
                     *(str(sock.fileno()) for sock in sockets)],
                    stdin=subprocess.DEVNULL, stdout=log, stderr=log,
                    pass_fds=tuple(sock.fileno() for sock in sockets))
        finally:
            for sock in sockets:
                sock.close()
        give_up = time.monotonic() + START_TIMEOUT
        while not rpcbind_running():
            if self.process.poll() is not None or time.monotonic() > give_up:
                self.stop()
                raise NfsServerError(f"rpcbind did not start; {self.log_path}:\n"
                                     f"{_tail(self.log_path)}")
            time.sleep(0.05)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process else None

    def stop(self) -> None:
        """SIGTERM (it saves its warm-start state under /run/rpcbind), then our socket file."""
        if self.process is not None:
            terminate(self.process, STOP_TIMEOUT)
            self.process = None
        with contextlib.suppress(OSError):
            if RPCBIND_SOCKET.stat().st_ino == self._socket_inode:
                RPCBIND_SOCKET.unlink()
        self._socket_inode = None


def _tail(path: Path, chars: int = 4000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as error:
        return f"({error})"


def _port_taken(port: int) -> bool:
    with socket.socket() as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((LOOPBACK, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                return True
            raise
    return False


# --------------------------------------------------------------------------------------------
# ganesha
# --------------------------------------------------------------------------------------------

class NfsServer:
    """nfs-ganesha exporting `directory/export` as `/export` on 127.0.0.1:2049 (NFSv3 and v4.x).

    start() returns once NFSv3, NFSv4 and MOUNT answer and rpcbind maps both programs;
    stop() shuts everything down gracefully; kill() SIGKILLs ganesha alone, a server that
    dies mid-dump (rpcbind stays, as on a real host). start() after kill() serves again.
    """

    def __init__(self, directory: Path, export_name: str = "/export",
                 protocols: tuple[int, ...] = (3, 4), prefix: tuple[str, ...] = ()) -> None:
        if prefix and protocols != (4,):
            raise NfsServerError("inside a namespace the server is NFSv4 only: protocols=(4,)")
        self.prefix = prefix
        self.directory = directory
        self.export_name = export_name
        self.protocols = protocols  # (3,): a server without NFSv4, for clients' fallback to v3
        self.export_path = directory / "export"
        self.config_path = directory / "ganesha.conf"
        self.log_path = directory / "ganesha.log"
        self.stdout_path = directory / "ganesha.stdout"  # before the log is set up, and crashes
        self.pid_file = directory / "ganesha.pid"
        self.recovery_dir = directory / "recovery"
        self.rpcbind_log_path = directory / "rpcbind.log"
        self.process: subprocess.Popen[bytes] | None = None
        self.start_seconds = 0.0  # how long the last start() took, for the curious
        self._rpcbind: _Rpcbind | None = None
        self._lock: int | None = None
        directory.mkdir(parents=True, exist_ok=True)
        self.export_path.mkdir(exist_ok=True)
        self.recovery_dir.mkdir(exist_ok=True)

    @property
    def rpcbind_pid(self) -> int | None:
        """Our rpcbind's pid; None when the machine's own rpcbind is used."""
        return self._rpcbind.pid if self._rpcbind else None

    def config_text(self) -> str:
        return f"""\
NFS_CORE_PARAM {{
    {"" if self.prefix else f"Bind_addr = {LOOPBACK};"}
    NFS_Port = {NFS_PORT};
    MNT_Port = {MOUNTD_PORT};
    Protocols = {", ".join(map(str, self.protocols))};
    # NFSv3 mounts the pseudo path too: one name, /export, for both versions.
    mount_path_pseudo = true;
    # No NLM (it needs rpc.statd) and no rquota (port 875): clients mount with nolock.
    Enable_NLM = false;
    Enable_RQUOTA = false;
}}
NFSv4 {{
    # No grace period: a fresh server would refuse OPEN/CREATE with NFS4ERR_GRACE for 90s.
    Graceless = true;
    RecoveryRoot = "{self.recovery_dir}";
}}
NFS_KRB5 {{
    Active_krb5 = false;
}}
EXPORT {{
    Export_Id = 1;
    Path = "{self.export_path}";
    Pseudo = "{self.export_name}";
    Protocols = {", ".join(map(str, self.protocols))};
    Transports = TCP, UDP;
    Access_Type = RW;
    Squash = No_Root_Squash;
    SecType = sys;
    FSAL {{
        Name = VFS;
    }}
}}
LOG {{
    Default_Log_Level = EVENT;
}}
"""

    def start(self) -> Self:
        """Start rpcbind (unless one runs) and ganesha, and wait until both serve."""
        global _active
        for path in (GANESHA, GANESHA_VFS, RPCBIND):
            if not path.exists():
                raise NfsServerError(f"{path} missing: {INSTALL_HINT}")
        if self.process is not None and self.process.poll() is None:
            raise NfsServerError("this NfsServer is already running")
        if _active is not None and _active is not self:
            raise NfsServerError("another NfsServer of this process still runs; the ports are "
                                 "fixed, so stop it first")
        began = time.monotonic()
        if self.prefix:
            return self._start_in_namespace(began)
        if self._lock is None:
            self._lock = _take_host_lock(began + LOCK_TIMEOUT)
            _active = self
            _end_leftovers()
        try:
            if self._rpcbind is None and not rpcbind_running():
                self._rpcbind = _Rpcbind(self.rpcbind_log_path)
                self._rpcbind.start()
                self._record()
            for port in (NFS_PORT, MOUNTD_PORT):
                if _port_taken(port):
                    raise NfsServerError(f"127.0.0.1:{port} is taken by another program")
            self.config_path.write_text(self.config_text())
            with open(self.stdout_path, "ab") as out:
                self.process = subprocess.Popen(
                    [str(GANESHA), "-F", "-f", str(self.config_path), "-L", str(self.log_path),
                     "-p", str(self.pid_file), "-N", "NIV_EVENT"],
                    stdin=subprocess.DEVNULL, stdout=out, stderr=out)
            self._record()
            self._wait_until_serving(began + START_TIMEOUT)
        except BaseException:
            self.stop()
            raise
        self.start_seconds = time.monotonic() - began
        return self

    def _start_in_namespace(self, began: float) -> Self:
        """ganesha alone under `prefix`, with a private /run; ready once it logs so."""
        self.config_path.write_text(self.config_text())
        private_run = 'mount -t tmpfs kdump-lab-run /run && exec "$@"'
        with open(self.stdout_path, "ab") as out:
            self.process = subprocess.Popen(
                [*self.prefix, "unshare", "--mount", "--propagation", "private",
                 "sh", "-c", private_run, "sh",
                 str(GANESHA), "-F", "-f", str(self.config_path), "-L", str(self.log_path),
                 "-p", str(self.pid_file), "-N", "NIV_EVENT"],
                stdin=subprocess.DEVNULL, stdout=out, stderr=out)
        give_up = began + START_TIMEOUT
        while b"NFS SERVER INITIALIZED" not in (self.log_path.read_bytes()
                                                if self.log_path.exists() else b""):
            if self.process.poll() is not None or time.monotonic() > give_up:
                self.stop()
                raise NfsServerError(f"ganesha did not start in the namespace; {self.log_path}:\n"
                                     f"{_tail(self.log_path)}\n{self.stdout_path}:\n"
                                     f"{_tail(self.stdout_path, 1000)}")
            time.sleep(0.1)
        self.start_seconds = time.monotonic() - began
        return self

    def _record(self) -> None:
        pids = {GANESHA.name: self.process.pid} if self.process else {}
        if self.rpcbind_pid is not None:
            pids[RPCBIND.name] = self.rpcbind_pid
        _record_pids(pids)

    def serving(self) -> bool:
        """NULL answered by each NFS version served (and MOUNT v3 with NFSv3), and rpcbind
        maps NFS and MOUNT (TCP)."""
        try:
            if 4 in self.protocols:
                rpc_call(NFS_PORT, NFS_PROGRAM, 4, 0)
            if 3 not in self.protocols:
                return True
            for program, version, port in ((NFS_PROGRAM, 3, NFS_PORT), (MOUNT_PROGRAM, 3, MOUNTD_PORT)):
                rpc_call(port, program, version, 0)
            return (pmap_getport(NFS_PROGRAM, 3) == NFS_PORT
                    and pmap_getport(MOUNT_PROGRAM, 3) == MOUNTD_PORT)
        except OSError:
            return False

    def _wait_until_serving(self, deadline: float) -> None:
        assert self.process is not None
        while not self.serving():
            if self.process.poll() is not None:
                why = f"ganesha exited with status {self.process.returncode}"
                break
            if time.monotonic() > deadline:
                why = f"ganesha did not serve within {START_TIMEOUT:g}s"
                break
            time.sleep(0.1)
        else:
            return
        raise NfsServerError(f"{why}; {self.log_path}:\n{_tail(self.log_path)}\n"
                             f"{self.stdout_path}:\n{_tail(self.stdout_path, 1000)}")

    def kill(self) -> None:
        """SIGKILL ganesha: the server dies mid-transfer. rpcbind keeps running (and keeps
        ganesha's now stale registrations, as on a real host)."""
        if self.process is None:
            return
        with contextlib.suppress(ProcessLookupError):  # it ended by itself meanwhile
            self.process.kill()
        self.process.wait()
        self.process = None

    def stop(self) -> None:
        """Shut ganesha down gracefully (SIGTERM; it unregisters from rpcbind), then stop our
        rpcbind and release the host lock. Safe to call twice or after kill()."""
        global _active
        if self.process is not None:
            terminate(self.process, STOP_TIMEOUT)
            self.process = None
        if self._rpcbind is not None:
            self._rpcbind.stop()
            self._rpcbind = None
        if self._lock is not None:
            with contextlib.suppress(OSError):
                (HOST_STATE / "pids").unlink()
            os.close(self._lock)  # releases the flock
            self._lock = None
            _active = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


@pytest.fixture
def nfs_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[NfsServer]:
    """A started server with an empty export, of the test's own (it may kill() it).

    Function scope: start() takes about a second, and a fresh export keeps tests apart.
    Missing packages fail the test (`make test` installs them), they do not skip it.
    """
    with NfsServer(tmp_path_factory.mktemp("nfs")) as server:
        yield server
