"""What every kind of dump target does, chosen once: the Destination protocol.

LOAD_CONFIG picks one Destination for the configured target (targets/registry.py) and the
steps ask it, never which kind of target they have. A Destination is a strategy without
state of its own: what one attempt at saving the dump has reached (the mount, the SSH
connection, the dump directory, the files saved) is a `DumpState`, which lives in the
capture, so a state that overran its deadline cannot change it (runner.py), and
dump_to_rootfs starts a fresh one for the root file system.

The lifecycle, state by state:

    MOUNT_TARGET  attach        mount the file system, wait for the device, or log in
    PREPARE_DIR   prepare       make the dump directory (a raw device: check it is empty)
    SAVE_DMESG    dmesg_scratch where makedumpfile writes the log (read for the panic
                  object there); keep_dmesg saves it, or deletes it where no file is kept
    COLLECT       sink          the collector's output: a file, a device or a stream
    FINALIZE      finalize      make the vmcore durable and give it its final name
    the actions   save_record   the manifest and the capture kernel's log
                  release       close, sync and unmount, before any action

Rotation (keep_old_dumps in PREPARE_DIR, free_disk_size in COLLECT; rotation.py decides
what goes) asks `dump_host`, `old_dumps`, `remove_dump` and `free_bytes`; a target without
dump directories (a raw device) has nothing to list and no free space to tell.
"""

from __future__ import annotations

import abc
import copy
import json
import logging
import posixpath
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from ..rotation import ExistingDump
from ..system import file_sha256

log = logging.getLogger("kdump-agent")


@dataclass(frozen=True)
class FileRecord:
    """A file saved in the dump directory, as the manifest lists it."""

    name: str
    size: int
    sha256: str | None  # None: rebuilt on an SSH server from records, or not read back in time

    @classmethod
    def of(cls, path: Path, name: str | None = None) -> FileRecord:
        """Size and sha256 of a file, so a copy of the dump can be checked later."""
        return cls(name=name or path.name, size=path.stat().st_size, sha256=file_sha256(path))


@dataclass(frozen=True)
class Interruption:
    """The connection broke during the transfer and the transfer went on over a new one."""

    at: int  # bytes of the dump the server had acknowledged when it broke: where it resumed
    seconds: float  # from the break until the file was open again on a new connection
    reason: str  # what broke it, as the error said
    resent: int  # bytes sent before the break, not acknowledged, sent again

    def as_dict(self) -> dict[str, object]:
        return {"at": self.at, "seconds": round(self.seconds, 3), "reason": self.reason,
                "resent": self.resent}


@dataclass(frozen=True)
class Transfer:
    """What the SSH server holds after the stream was sent (ssh.connection.receive_flattened),
    and how it travelled: for the manifest."""

    path: str  # on the server: <dir>/vmcore, or <dir>/vmcore.flat without SFTP
    size: int
    records: int
    stream_bytes: int
    seconds: float
    flattened: bool  # the server keeps the flattened stream, for `makedumpfile -R`
    sha256: str | None
    interruptions: tuple[Interruption, ...] = ()  # each break survived, in order

    @property
    def name(self) -> str:
        return posixpath.basename(self.path)

    @property
    def directory(self) -> str:
        return posixpath.dirname(self.path)

    def as_dict(self) -> dict[str, object]:
        return {"path": self.path, "size": self.size, "records": self.records,
                "stream_bytes": self.stream_bytes, "seconds": round(self.seconds, 3),
                "flattened": self.flattened, "sha256": self.sha256,
                "interruptions": [interruption.as_dict() for interruption in self.interruptions]}


@dataclass
class DumpState:
    """One attempt at saving the dump on one destination, as far as it got."""

    root: str | None = None  # where the target file system is reachable (mounted or running)
    mounted: list[str] = field(default_factory=list)  # what we mounted and must unmount
    connection: Any = None  # SSH: the logged-in connection, from attach to release
    directory: str | None = None  # the dump directory: a local path, or a path on the server
    server_address: str | None = None  # network targets: the server's address, resolved
    local_address: str | None = None  # ours towards the server: the dump directory's <host-ip>
    collector_argv: list[str] = field(default_factory=list)
    collector_returncode: int | None = None
    collector_peak_kib: int | None = None  # peak RSS of the largest command run so far
    memfree_at_collect_kib: int | None = None  # what the collector had to work with
    transfer: Transfer | None = None
    # The vmcore as COLLECT wrote it here in order, hashed as it went (a collector writing
    # to its standard output); None: the collector wrote the file itself and FINALIZE reads
    # it back for its sha256.
    written: FileRecord | None = None
    files: list[FileRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    vmcore_saved: bool = False  # a complete vmcore got its final name (FINALIZE)
    panic: dict[str, object] | None = None  # SAVE_DMESG: why the kernel died (panic.parse)

    def copy(self) -> DumpState:
        """A copy whose lists are its own (the connection is shared: it is one socket)."""
        copied = copy.copy(self)
        copied.mounted, copied.collector_argv = list(self.mounted), list(self.collector_argv)
        copied.files, copied.notes = list(self.files), list(self.notes)
        return copied


@dataclass(frozen=True)
class FileSink:
    """The collector writes this file itself (makedumpfile with a destination argument)."""

    path: Path


@dataclass(frozen=True)
class DeviceSink:
    """The collector's flattened stream goes onto this device from its first byte."""

    device: str


@dataclass(frozen=True)
class StreamSink:
    """The collector's flattened stream is read as it comes and handed on (SSH)."""

    consume: Callable[[BinaryIO], Transfer]
    where: str


Sink = FileSink | DeviceSink | StreamSink


class Destination(abc.ABC):
    """How the dump reaches one kind of target; see the module docstring for the order."""

    # The host NETWORK_UP must reach, or None for a target that needs no network.
    server: str | None = None
    # Whether this capture talks SSH (its image carries paramiko's libraries, host/programdir.py).
    uses_ssh = False

    @abc.abstractmethod
    def describe(self) -> str:
        """One line for the journal: `ext4 UUID=..., path /var/crash`."""

    @abc.abstractmethod
    def manifest_target(self) -> dict[str, str | None]:
        """The target as the manifest records it."""

    @abc.abstractmethod
    def attach(self, state: DumpState, *, mountpoint: str, disk_timeout: float) -> str:
        """Reach the target: mount it, wait for its device, or log in."""

    @abc.abstractmethod
    def prepare(self, state: DumpState, when: time.struct_time) -> str:
        """Make the dump directory, named for `when` (a raw device: check it may be written)."""

    def local_directory(self, state: DumpState) -> Path | None:
        """The dump directory as this machine sees it, for a target mounted here."""
        return None

    def dmesg_scratch(self, state: DumpState, scratch: str) -> Path | None:
        """The directory makedumpfile --dump-dmesg writes into (`scratch` is RAM, for a log
        that is sent or only read); None: the log is not extracted at all."""
        return None

    def keep_dmesg(self, state: DumpState, partial: Path, name: str) -> str:
        """Give the log written at `partial` its final name on the target, or delete it where
        the target keeps no such file; a journal note."""
        raise NotImplementedError(f"{type(self).__name__} keeps no log file")

    @abc.abstractmethod
    def sink(self, state: DumpState) -> Sink:
        """Where the collector's output goes."""

    @abc.abstractmethod
    def finalize(self, state: DumpState, timeout: float) -> str:
        """Make the vmcore durable and complete under its final name (state.vmcore_saved)."""

    @abc.abstractmethod
    def save_record(self, state: DumpState, manifest: dict[str, object], kernel_log: str) -> None:
        """Keep the manifest and the capture kernel's log with the dump. Errors are logged,
        never raised: the action after it must run."""

    @abc.abstractmethod
    def release(self, state: DumpState) -> None:
        """Let go of the target before any action: close, sync, unmount. Never raises."""

    @abc.abstractmethod
    def where(self, state: DumpState) -> str | None:
        """The dump directory as an admin finds it (a path, or user@host:path), if made."""

    def dump_host(self, state: DumpState) -> str | None:
        """The `<ip>` this capture's dump directory is named with: whose dumps rotation may
        delete. None: this target holds no dump directories."""
        return None

    def old_dumps(self, state: DumpState) -> list[ExistingDump]:
        """The dump directories of ours in `path` (rotation.examine), any host's. Raises
        KdumpError or OSError when `path` cannot be listed; skips a directory it cannot read."""
        return []

    def remove_dump(self, state: DumpState, name: str) -> None:
        """Delete the dump directory `name` in `path`: its files, the vmcore first, then the
        directory. It is examined again first and left alone unless it is still a dump of
        ours. Raises KdumpError or OSError if that fails."""
        raise NotImplementedError(f"{type(self).__name__} holds no dump directories")

    def free_bytes(self, state: DumpState) -> int | None:
        """Bytes an unprivileged writer may still use where the dump goes; None: unknown."""
        return None


def log_manifest(manifest: dict[str, object]) -> None:
    """The record in the kernel log too, for targets where it may not arrive (a raw device,
    a connection that failed the dump)."""
    log.info("manifest %s", json.dumps(manifest, separators=(",", ":")))


def record_document(manifest: dict[str, object]) -> bytes:
    """The manifest as the file holds it."""
    return (json.dumps(manifest, indent=2) + "\n").encode()
