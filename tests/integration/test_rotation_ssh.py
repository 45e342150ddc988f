"""Rotation on an SSH server: a real OpenSSH sshd on 127.0.0.1 (harness.sshd), whose `path`
is a local directory pre-filled with old dumps (harness.olddumps) and checked afterwards.

PREPARE_DIR runs as the capture runs it, through SFTP (listdir, lstat, remove, rmdir); the
free space comes from OpenSSH's statvfs@openssh.com extension.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import olddumps
from harness import sshd as servers
from harness.sshd import ClientKey, Sshd
from kdump_agent import config as kdump_config
from kdump_agent.context import Capture, Paths
from kdump_agent.errors import KdumpError, TransferError
from kdump_agent.runner import Journal
from kdump_agent.ssh.connection import SshTarget
from kdump_agent.steps import dumpdir
from kdump_agent.targets.sshdest import SshDestination
from kdump_agent.targets.sshserver import SshServer

client_key = servers.client_key
sshd = servers.sshd
sshd_no_sftp = servers.sshd_no_sftp

TIMEOUT = 20.0


def ssh_capture(server: Sshd, key: ClientKey, tmp_path: Path, *lines: str) -> Iterator[Capture]:
    crash = tmp_path / "crash"
    known_hosts = server.known_hosts(tmp_path / "known_hosts", "ed25519")
    destination = SshDestination("root", "127.0.0.1", port=server.port, key_path=str(key.path),
                                 known_hosts_path=str(known_hosts), directory=str(crash))
    capture = Capture(paths=Paths(), journal=Journal())
    capture.config = kdump_config.parse("\n".join([f"ssh root@127.0.0.1:{server.port}", f"path {crash}",
                                                   *lines, ""]), "k.conf")
    capture.destination = SshServer(destination)
    capture.dump.connection = SshTarget.connect(destination, TIMEOUT, address="127.0.0.1")
    try:
        yield capture
    finally:
        capture.destination.release(capture.dump)


@pytest.fixture
def keep_two(sshd: Sshd, client_key: ClientKey, tmp_path: Path) -> Iterator[Capture]:
    yield from ssh_capture(sshd, client_key, tmp_path, "keep_old_dumps 2")


def test_keep_old_dumps_over_sftp_deletes_only_this_hosts_oldest_and_incomplete(
        keep_two: Capture, tmp_path: Path) -> None:
    parent = tmp_path / "crash"
    role = olddumps.fill(parent, "127.0.0.1")  # the address sshd sees us come from
    before = olddumps.snapshot(parent)
    note = dumpdir.prepare(keep_two)
    deleted = {role[key] for key in olddumps.deleted_by_keep(2)}
    assert deleted == {role["incomplete"], role["oldest"], role["middle"]}
    new = Path(keep_two.dump.directory or "").name
    assert (parent / new).is_dir()
    after = {k: v for k, v in olddumps.snapshot(parent).items() if not k.startswith(new)}
    assert after == {k: v for k, v in before.items() if k.split("/")[0] not in deleted}
    assert all(name in note for name in deleted)
    assert sum("keep_old_dumps 2" in n and "deleted old dump" in n for n in keep_two.dump.notes) == 3


def test_a_directory_that_stopped_being_a_dump_is_not_deleted(keep_two: Capture, tmp_path: Path) -> None:
    parent = tmp_path / "crash"
    role = olddumps.fill(parent, "127.0.0.1")
    assert keep_two.destination is not None
    with pytest.raises(KdumpError, match="no longer a dump directory of ours"):
        keep_two.destination.remove_dump(keep_two.dump, role["foreign_named"])
    with pytest.raises(KdumpError):
        keep_two.destination.remove_dump(keep_two.dump, role["link"])
    assert (parent / role["foreign_named"] / "notes.txt").exists() and (parent / role["foreign_dir"]).is_dir()


def test_free_space_comes_from_statvfs_on_the_server(keep_two: Capture, tmp_path: Path) -> None:
    (tmp_path / "crash").mkdir()
    assert keep_two.destination is not None
    free = keep_two.destination.free_bytes(keep_two.dump)
    local = os.statvfs(tmp_path)
    assert free is not None
    assert abs(free - local.f_bavail * local.f_frsize) < 64 << 20  # others may write meanwhile


def test_a_server_without_sftp_rotates_nothing_and_the_dump_goes_on(
        sshd_no_sftp: Sshd, client_key: ClientKey, tmp_path: Path) -> None:
    parent = tmp_path / "crash"
    olddumps.fill(parent, "127.0.0.1")
    before = olddumps.snapshot(parent)
    for capture in ssh_capture(sshd_no_sftp, client_key, tmp_path, "keep_old_dumps 1"):
        dumpdir.prepare(capture)
        new = Path(capture.dump.directory or "").name
        assert {k: v for k, v in olddumps.snapshot(parent).items() if not k.startswith(new)} == before
        assert any("no SFTP subsystem" in n for n in capture.dump.notes)
        assert capture.destination is not None
        with pytest.raises(TransferError, match="no SFTP subsystem"):
            capture.destination.free_bytes(capture.dump)
