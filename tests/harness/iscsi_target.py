"""A real iSCSI target (Debian's tgt) on 127.0.0.1 for the iSCSI dump tests.

tgtd is a user-space target: it needs no kernel module, so it runs on a host whose kernel
has no LIO. A QEMU guest on user-mode networking reaches it as 10.0.2.2:PORT
(`scenario.HOST_FROM_GUEST`): slirp turns that into a connection from 127.0.0.1 to
127.0.0.1:PORT here.

`iscsi_target(image, directory)` starts one tgtd in the foreground as our child with

- one portal, 127.0.0.1 on a free port. tgtd falls back to the wildcard 0.0.0.0:3260 when it
  cannot bind the portal it was given (and keeps running), so start() checks that the one
  portal tgtd reports is ours and otherwise stops it at once and tries another port;
- its own management socket: `TGT_IPC_SOCKET` (honoured by tgtd and tgtadm alike) points
  into `directory`, and `-C` picks the instance, so neither a system tgtd nor another
  test's is ever addressed;
- one target (an IQN) with LUN 1 backed by `image` (the `rdwr` backing store: pread and
  pwrite on the file), bound to every initiator or to one initiator IQN, and optionally an
  incoming CHAP account (the initiator proves itself with user and password).

What a guest wrote is in `image` as soon as its SCSI WRITE has completed: tgtd answers a
WRITE only after pwrite(2) returned, so the data sits in this host's page cache, where any
reader of the file sees it; SYNCHRONIZE CACHE becomes fdatasync(2). No `bsoflags` are
needed for the tests' read-back; O_SYNC/O_DIRECT would only matter for a host crash.

tgtd ignores SIGTERM and SIGINT (its handler is empty), so stop() asks it to quit over
its management socket (`--op delete --mode system`, after deleting the target with
`--force`, which ends the sessions and closes the image), waits, and SIGKILLs it by pid
after STOP_TIMEOUT. Every wait has a deadline. tgtd runs under `setpriv --pdeathsig KILL`
(which execs it, so the pid is tgtd's): should the test process die without stopping it,
the kernel ends tgtd too, and no target is left listening.
"""

from __future__ import annotations

import contextlib
import dataclasses
import os
import shlex
import subprocess
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from .scenario import HOST_FROM_GUEST
from .sshd import free_port

TGTD = Path("/usr/sbin/tgtd")
TGTADM = Path("/usr/sbin/tgtadm")
SETPRIV = Path("/usr/bin/setpriv")
INSTALL_HINT = "run `sh tools/install-deps.sh guest test` (tgt, util-linux)"
SOCKET_NAME = "tgtd.socket"  # TGT_IPC_SOCKET; tgtd listens on <it>.<instance>
SOCKET_PATH_MAX = 107  # sun_path: 108 bytes with the final NUL

LOOPBACK = "127.0.0.1"
TARGET_IQN = "iqn.2024-01.test.kdump-agent:dump"
INITIATOR_IQN = "iqn.2024-01.test.kdump-agent:guest"
ANY_INITIATOR = "ALL"
TID = 1  # the one target of this tgtd
LUN = 1  # LUN 0 is tgt's own controller device
CONTROL_PORT = 1  # the instance number (-C): the suffix of the socket path in our directory

START_TIMEOUT = 20.0   # tgtd answers its socket in well under a second
TGTADM_TIMEOUT = 15.0  # one management request
STOP_TIMEOUT = 10.0    # from "delete system" to exit; then SIGKILL
PORT_ATTEMPTS = 3      # a free port may be taken between our probe and tgtd's bind


class IscsiTargetError(RuntimeError):
    """tgtd could not be started or configured; the message ends with the tail of its log."""


@dataclasses.dataclass(frozen=True)
class Chap:
    """An incoming CHAP account: the initiator logs in with this user and password. RFC 7143
    wants a secret of at least 12 bytes (96 bits); open-iscsi warns below that."""

    user: str
    password: str


@dataclasses.dataclass(frozen=True)
class IscsiTarget:
    """What a test needs to log in: the portal, both IQNs, CHAP, and tgtd's log."""

    host: str                 # where this host reaches the portal (127.0.0.1)
    port: int
    target_iqn: str
    initiator_iqn: str        # the name the guest should log in with
    chap: Chap | None
    image: Path               # the LUN's backing file
    log_path: Path
    pid: int

    @property
    def guest_host(self) -> str:
        """The portal's address as a QEMU user-network guest sees it."""
        return HOST_FROM_GUEST

    @property
    def portal(self) -> str:
        """`10.0.2.2:PORT`, as kdump.conf or iscsiadm in the guest names it."""
        return f"{HOST_FROM_GUEST}:{self.port}"


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as error:
        return f"({error})"


class _Tgtd:
    """One tgtd child and its management socket."""

    def __init__(self, directory: Path, port: int) -> None:
        self.directory = directory
        self.port = port
        self.log_path = directory / "tgtd.log"
        self.env = {**os.environ, "TGT_IPC_SOCKET": str(directory / SOCKET_NAME)}
        with open(self.log_path, "ab") as log:
            self.process = subprocess.Popen(
                [str(SETPRIV), "--pdeathsig", "KILL", "--", str(TGTD), "--foreground",
                 "-C", str(CONTROL_PORT), "--iscsi", f"portal={LOOPBACK}:{port}"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=log, env=self.env)

    def tgtadm(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        argv = [str(TGTADM), "-C", str(CONTROL_PORT), *args]
        try:
            proc = subprocess.run(argv, env=self.env, stdin=subprocess.DEVNULL,
                                  capture_output=True, text=True, timeout=TGTADM_TIMEOUT,
                                  check=False)
        except subprocess.TimeoutExpired as error:
            raise IscsiTargetError(f"{shlex.join(argv)} did not answer within "
                                   f"{TGTADM_TIMEOUT:g}s") from error
        if check and proc.returncode != 0:
            raise IscsiTargetError(f"{shlex.join(argv)} exited {proc.returncode}: "
                                   f"{(proc.stderr or proc.stdout).strip()}; {self.log_path}:\n"
                                   f"{_tail(self.log_path)}")
        return proc

    def portals(self, deadline: float) -> list[str]:
        """The portals tgtd listens on, once its management socket answers."""
        while True:
            if self.process.poll() is not None:
                raise IscsiTargetError(f"tgtd exited with status {self.process.returncode}; "
                                       f"{self.log_path}:\n{_tail(self.log_path)}")
            shown = self.tgtadm("--lld", "iscsi", "--op", "show", "--mode", "portal",
                                check=False)
            if shown.returncode == 0:
                # "Portal: 127.0.0.1:3260,1": address:port, then the portal group tag
                return [line.split()[1].rsplit(",", 1)[0] for line in shown.stdout.splitlines()
                        if line.startswith("Portal:")]
            if time.monotonic() > deadline:
                raise IscsiTargetError(f"tgtd did not answer on {self.env['TGT_IPC_SOCKET']} "
                                       f"within {START_TIMEOUT:g}s; {self.log_path}:\n"
                                       f"{_tail(self.log_path)}")
            time.sleep(0.05)

    def configure(self, image: Path, target_iqn: str, initiators: str, chap: Chap | None) -> None:
        iscsi = ("--lld", "iscsi")
        self.tgtadm(*iscsi, "--op", "new", "--mode", "target", "--tid", str(TID),
                    "--targetname", target_iqn)
        self.tgtadm(*iscsi, "--op", "new", "--mode", "logicalunit", "--tid", str(TID),
                    "--lun", str(LUN), "--backing-store", str(image))
        self.tgtadm(*iscsi, "--op", "bind", "--mode", "target", "--tid", str(TID),
                    "--initiator-address" if initiators == ANY_INITIATOR else "--initiator-name",
                    initiators)
        if chap is not None:
            self.tgtadm(*iscsi, "--op", "new", "--mode", "account", "--user", chap.user,
                        "--password", chap.password)
            self.tgtadm(*iscsi, "--op", "bind", "--mode", "account", "--tid", str(TID),
                        "--user", chap.user)

    def stop(self) -> None:
        """Delete the target (ends sessions, closes the image), ask tgtd to exit, wait;
        SIGKILL by pid after STOP_TIMEOUT. Safe after tgtd died."""
        if self.process.poll() is None:
            with contextlib.suppress(IscsiTargetError):
                self.tgtadm("--lld", "iscsi", "--op", "delete", "--mode", "target",
                            "--tid", str(TID), "--force", check=False)
                self.tgtadm("--op", "delete", "--mode", "system", check=False)
            try:
                self.process.wait(timeout=STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=STOP_TIMEOUT)


def _start(directory: Path) -> _Tgtd:
    """A tgtd listening on 127.0.0.1 only, on a free port; retried on a lost port race."""
    for _ in range(PORT_ATTEMPTS):
        port = free_port()
        tgtd = _Tgtd(directory, port)
        try:
            portals = tgtd.portals(time.monotonic() + START_TIMEOUT)
        except BaseException:
            tgtd.stop()
            raise
        if portals == [f"{LOOPBACK}:{port}"]:
            return tgtd
        tgtd.stop()  # it fell back to the wildcard portal: never leave that listening
    raise IscsiTargetError(f"tgtd could not bind a free port on {LOOPBACK} in {PORT_ATTEMPTS} "
                           f"attempts (it reported {portals}); {tgtd.log_path}:\n"
                           f"{_tail(tgtd.log_path)}")


@contextlib.contextmanager
def iscsi_target(image: Path, directory: Path, *, target_iqn: str = TARGET_IQN,
                 initiator_iqn: str = INITIATOR_IQN, only_initiator: bool = False,
                 chap: Chap | None = None) -> Iterator[IscsiTarget]:
    """tgtd serving `image` as LUN 1 of `target_iqn` on 127.0.0.1, for the block's duration.

    Every initiator may log in unless `only_initiator`, which binds the target to
    `initiator_iqn` alone; with `chap` the initiator must authenticate. tgtd's socket and
    log live in `directory`. On exit tgtd is stopped and reaped, and everything the guest
    wrote is in `image`. Missing packages fail, they do not skip: `make test` installs them.
    """
    for program in (TGTD, TGTADM, SETPRIV):
        if not program.exists():
            raise IscsiTargetError(f"{program} missing: {INSTALL_HINT}")
    if not image.is_file():
        raise IscsiTargetError(f"backing image {image} is not a file")
    directory = directory.resolve()
    socket_path = directory / f"{SOCKET_NAME}.{CONTROL_PORT}"
    if len(os.fsencode(socket_path)) > SOCKET_PATH_MAX:
        raise IscsiTargetError(f"tgtd's management socket {socket_path} would be longer than "
                               f"{SOCKET_PATH_MAX} bytes; use a shorter directory")
    directory.mkdir(parents=True, exist_ok=True)
    tgtd = _start(directory)
    try:
        tgtd.configure(image, target_iqn, initiator_iqn if only_initiator else ANY_INITIATOR,
                       chap)
        yield IscsiTarget(host=LOOPBACK, port=tgtd.port, target_iqn=target_iqn,
                          initiator_iqn=initiator_iqn, chap=chap, image=image,
                          log_path=tgtd.log_path, pid=tgtd.process.pid)
    finally:
        tgtd.stop()


def iscsistart_argv(target: IscsiTarget, password: str | None = None) -> Sequence[str]:
    """The iscsistart command line a guest runs to log in to `target` (portal group 1), with
    the account's password unless another is given (a test of a refused login)."""
    argv = ["iscsistart", "-i", target.initiator_iqn, "-t", target.target_iqn, "-g", "1",
            "-a", target.guest_host, "-p", str(target.port)]
    if target.chap is not None:
        argv += ["-u", target.chap.user, "-w", target.chap.password if password is None else password]
    return argv
