"""mkinitrd's host key pin for an SSH target: OpenSSH's known_hosts files read together, so a
`@revoked` line in any of them keeps that key out of the capture initramfs."""

from __future__ import annotations

import logging
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kdump_agent.config import parse
from kdump_agent.errors import KdumpError
from kdump_agent.host import netpack

CONFIG = "/etc/kdump.conf"


def keygen(path: Path) -> str:
    """A fresh ed25519 key made by ssh-keygen; its public half as `type base64`."""
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(path)], check=True)
    return " ".join(Path(f"{path}.pub").read_text().split()[:2])


def pack(tmp_path: Path, *known_hosts: Path) -> netpack.NetworkPack:
    client = tmp_path / "kdump_id"
    if not client.exists():
        keygen(client)
    config = parse(f"ssh kdump@dumps.example\nsshkey {client}\ndracut_args --no-hostonly\n", CONFIG)
    return netpack.network_pack(config, hostonly=False, known_hosts_files=[str(p) for p in known_hosts])


def test_a_key_revoked_in_the_system_file_is_not_pinned_from_the_users(tmp_path: Path, caplog: Any) -> None:
    stolen, current = keygen(tmp_path / "stolen.key"), keygen(tmp_path / "current.key")
    user, system = tmp_path / "known_hosts", tmp_path / "ssh_known_hosts"
    user.write_text(f"dumps.example {stolen}\ndumps.example {current}\n")
    system.write_text(f"@revoked * {stolen}\n")
    caplog.set_level(logging.INFO)
    assert pack(tmp_path, user, system).known_hosts == f"dumps.example {current}\n"
    refused = [m for m in caplog.messages if "not pinning" in m]
    assert len(refused) == 1
    assert refused[0].startswith(f"{user}:1: not pinning ssh-ed25519 SHA256:")
    assert refused[0].endswith(f"for dumps.example: it is revoked ({system}:1)")


def test_only_revoked_keys_is_an_error_that_says_so(tmp_path: Path) -> None:
    stolen = keygen(tmp_path / "stolen.key")
    user, system = tmp_path / "known_hosts", tmp_path / "ssh_known_hosts"
    user.write_text(f"@revoked dumps.example {stolen}\n")
    system.write_text(f"dumps.example {stolen}\n")
    with pytest.raises(KdumpError) as caught:
        pack(tmp_path, user, system)
    assert str(caught.value).startswith(
        f"{CONFIG}:1: every host key for dumps.example in {user}, {system} is revoked ({user}:1); the "
        "capture kernel would refuse the server. Pin its new key (`ssh-keyscan dumps.example` output")


def test_a_cert_authority_alone_pins_nothing(tmp_path: Path) -> None:
    authority = keygen(tmp_path / "ca.key")
    user = tmp_path / "known_hosts"
    user.write_text(f"@cert-authority *.example,dumps.example {authority}\n")
    with pytest.raises(KdumpError, match=f"^{CONFIG}:1: no host key for dumps.example in {user};"):
        pack(tmp_path, user)
