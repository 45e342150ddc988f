"""NFS targets: the text options handed to mount(2), and v4 falling back to v3."""

from __future__ import annotations

from typing import Any

import pytest

from kdump_agent import system
from kdump_agent.errors import MountError
from kdump_agent.targets import nfs
from kdump_agent.targets.netspec import parse_nfs_spec


def test_spec_splits_into_server_and_export() -> None:
    assert parse_nfs_spec("filer:/srv/dumps") == ("filer", "/srv/dumps")
    assert parse_nfs_spec("[2001:db8::1]:/export") == ("2001:db8::1", "/export")
    target = nfs.NfsTarget("filer:/srv/dumps", "nfs", "/var/crash")
    assert (target.server, target.export, target.versions) == ("filer", "/srv/dumps", ("4", "3"))
    assert nfs.NfsTarget("filer:/x", "nfs4", "/").versions == ("4",)


def test_mount_options_are_soft_bounded_and_v3_runs_without_locks() -> None:
    v4 = nfs.mount_options("4", "192.0.2.9", "192.0.2.10")
    assert v4 == "vers=4,soft,timeo=50,retrans=2,addr=192.0.2.9,clientaddr=192.0.2.10"
    v3 = nfs.mount_options("3", "192.0.2.9", None)
    assert v3.startswith("vers=3,nolock,proto=tcp,mountproto=tcp,soft,")
    assert "addr=192.0.2.9" in v3 and "mountaddr=192.0.2.9" in v3


@pytest.fixture
def mounts(mocker: Any) -> list[tuple[str, str, str, str]]:
    calls: list[tuple[str, str, str, str]] = []

    def mount(source: str, target: str, fstype: str, options: str = "") -> None:
        calls.append((source, target, fstype, options))
        if fstype == "nfs4":
            raise MountError(f"mount({source} on {target} type nfs4): Protocol not supported")

    mocker.patch.object(system, "mount", side_effect=mount)
    mocker.patch.object(system, "run")
    return calls


def test_nfs_tries_v4_then_mounts_v3(mounts: list[tuple[str, str, str, str]]) -> None:
    target = nfs.NfsTarget("filer:/export", "nfs", "/var/crash")
    assert nfs.mount_nfs(target, "192.0.2.9", "192.0.2.10", "/kdumproot") == "NFSv3"
    assert [(m[0], m[2]) for m in mounts] == [("192.0.2.9:/export", "nfs4"), ("192.0.2.9:/export", "nfs")]


def test_nfs4_does_not_fall_back_and_says_why_it_failed(mounts: list[tuple[str, str, str, str]]) -> None:
    target = nfs.NfsTarget("filer:/export", "nfs4", "/var/crash")
    with pytest.raises(MountError, match=r"cannot mount filer:/export: NFSv4: .*Protocol not supported"):
        nfs.mount_nfs(target, "192.0.2.9", None, "/kdumproot")
    assert len(mounts) == 1
