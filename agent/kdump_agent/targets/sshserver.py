"""SSH targets as a Destination: one logged-in connection from MOUNT_TARGET to the action.

The connection itself (paramiko, host-key pinning, SFTP) is imported here, when MOUNT_TARGET
logs in, and nowhere else on the capture path: a capture to a local disk never loads
paramiko, and its image does not even carry paramiko's libraries (host/programdir.py).

The crashed kernel's log is made in RAM (`scratch`, a few hundred KiB) and sent; the
collector's flattened stream is read as it comes and becomes the vmcore on the server;
the server flushed, size-checked and renamed the file as the stream ended, so FINALIZE only
records it.
"""

from __future__ import annotations

import logging
import posixpath
import time
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from ..errors import KdumpError
from ..layout import KEXEC_DMESG, MANIFEST, dump_dir_name, parse_dump_dir_name
from ..rotation import MANIFEST_READ_LIMIT, ExistingDump, examine, removal_order
from .base import (
    Destination,
    DumpState,
    FileRecord,
    Sink,
    StreamSink,
    Transfer,
    log_manifest,
    record_document,
)
from .sshdest import DEFAULT_TIMEOUT, SshDestination

if TYPE_CHECKING:
    from ..ssh.connection import SshTarget

log = logging.getLogger("kdump-agent")


class SshServer(Destination):
    """`ssh user@host`: the dump directory, the vmcore and the record on the server."""

    uses_ssh = True

    def __init__(self, target: SshDestination) -> None:
        self.target = target
        self.server = target.host

    def describe(self) -> str:
        return f"ssh {self.target}, path {self.target.directory}, key {self.target.key_path}"

    def manifest_target(self) -> dict[str, str | None]:
        return {"ssh": str(self.target), "path": self.target.directory}

    def attach(self, state: DumpState, *, mountpoint: str, disk_timeout: float) -> str:
        from ..ssh.connection import SshTarget  # paramiko: only for SSH targets

        assert state.server_address is not None, "NETWORK_UP resolved the server"
        state.connection = SshTarget.connect(self.target, DEFAULT_TIMEOUT, address=state.server_address)
        return f"logged in to {self.target}"

    def prepare(self, state: DumpState, when: time.struct_time) -> str:
        connection = _connected(state)
        state.directory = connection.make_dump_dir(dump_dir_name(connection.local_address, when))
        return f"{self.target}:{state.directory}"

    def dmesg_scratch(self, state: DumpState, scratch: str) -> Path | None:
        return Path(scratch)

    def keep_dmesg(self, state: DumpState, partial_path: Path, name: str) -> str:
        try:
            size = _connected(state).put_file(partial_path, name)
            state.files.append(FileRecord.of(partial_path, name))
        finally:
            partial_path.unlink()
        return f"{name} sent ({size} bytes)"

    def sink(self, state: DumpState) -> Sink:
        connection = _connected(state)

        def send(stream: BinaryIO) -> Transfer:
            return connection.receive_flattened(stream)

        return StreamSink(send, where=str(self.target))

    def finalize(self, state: DumpState, timeout: float) -> str:
        transfer = state.transfer
        assert transfer is not None, "COLLECT sent the dump"
        name = posixpath.basename(transfer.path)
        state.files.append(FileRecord(name, transfer.size, transfer.sha256))
        state.vmcore_saved = True
        if transfer.flattened:
            state.notes.append(f"the server has no SFTP: the dump is {name} in the flattened format; "
                               f"`makedumpfile -R vmcore < {name}` rebuilds it")
        return f"{self.where(state)}/{name}: {transfer.size} bytes"

    def save_record(self, state: DumpState, manifest: dict[str, object], kernel_log: str) -> None:
        """Both files to the server's dump directory; the kernel log keeps the manifest too,
        since a connection that failed the dump may fail this as well."""
        log_manifest(manifest)
        if state.connection is None or state.directory is None:
            return
        for name, data in ((MANIFEST, record_document(manifest)), (KEXEC_DMESG, kernel_log.encode())):
            try:
                state.connection.put_file(data, name)
            except KdumpError as error:
                log.error("could not send %s: %s", name, error)

    def release(self, state: DumpState) -> None:
        if state.connection is not None:
            state.connection.close()
            state.connection = None

    def where(self, state: DumpState) -> str | None:
        return f"{self.target}:{state.directory}" if state.directory else None

    def dump_host(self, state: DumpState) -> str | None:
        return _connected(state).local_address

    def old_dumps(self, state: DumpState) -> list[ExistingDump]:
        connection, parent = _connected(state), self.target.directory
        found = []
        for entry in connection.list_dir(parent):
            if entry.regular or parse_dump_dir_name(entry.name) is None:
                continue
            path = posixpath.join(parent, entry.name)
            try:
                dump = self._examine(connection, path)
            except KdumpError as error:
                log.warning("rotation: cannot read %s:%s: %s; leaving it alone", self.target, path, error)
                continue
            if dump is not None:
                found.append(dump)
        return found

    def remove_dump(self, state: DumpState, name: str) -> None:
        connection = _connected(state)
        path = posixpath.join(self.target.directory, name)
        if self._examine(connection, path) is None:
            raise KdumpError(f"{self.target}:{path} is no longer a dump directory of ours: left alone")
        for file in removal_order(entry.name for entry in connection.list_dir(path)):
            connection.remove_file(posixpath.join(path, file))
        connection.remove_dir(path)

    def free_bytes(self, state: DumpState) -> int | None:
        return _connected(state).free_bytes(state.directory or self.target.directory)

    @staticmethod
    def _examine(connection: SshTarget, path: str) -> ExistingDump | None:
        """rotation.examine on a directory on the server (a link to one is not ours)."""
        if not connection.is_directory(path):
            return None
        entries = connection.list_dir(path)
        manifest = None
        if any(entry.name == MANIFEST and entry.regular for entry in entries):
            manifest = connection.read_small(posixpath.join(path, MANIFEST), MANIFEST_READ_LIMIT + 1)
        return examine(posixpath.basename(path), entries, manifest)


def _connected(state: DumpState) -> SshTarget:
    assert state.connection is not None, "MOUNT_TARGET logged in"
    connection: SshTarget = state.connection
    return connection
