"""Host-key pinning as OpenSSH reads known_hosts (names, hashes, negations, @revoked,
@cert-authority), the check of the key a server offers, and the host key types asked for."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import paramiko
import pytest
from sshkeys import ed25519_key, known_hosts_line, revoked_line

from kdump_agent.errors import TransferError
from kdump_agent.ssh.hostkeys import check_host_key, host_key_preference, pinned_host_keys
from kdump_agent.targets.sshdest import SshDestination


def destination(tmp_path: Path, port: int = 22, host: str = "192.0.2.7") -> SshDestination:
    return SshDestination("root", host, port=port, known_hosts_path=str(tmp_path / "known_hosts"),
                          key_path=str(tmp_path / "id"))


def test_ssh_host_key_preference_offers_the_pinned_types_first(tmp_path: Path) -> None:
    available = paramiko.Transport._preferred_keys
    rsa = paramiko.RSAKey.generate(1024)
    assert host_key_preference([rsa], available)[:2] == ("rsa-sha2-512", "rsa-sha2-256")
    ecdsa = paramiko.ECDSAKey.generate()
    assert host_key_preference([ecdsa, rsa], available)[:3] == (
        "ecdsa-sha2-nistp256", "rsa-sha2-512", "rsa-sha2-256")
    assert sorted(host_key_preference([ecdsa, rsa], available)) == sorted(available)
    assert host_key_preference([], available) == tuple(available)


def test_ssh_pinned_host_keys_match_names_as_openssh_does(tmp_path: Path) -> None:
    keys = [paramiko.ECDSAKey.generate() for _ in range(6)]
    hashed = paramiko.HostKeys.hash_host("[192.0.2.7]:2222")
    (tmp_path / "known_hosts").write_text(
        "# pinned by kdump-agent mkinitrd\n\n"
        + known_hosts_line("[192.0.2.7]:2222", keys[0])
        + known_hosts_line("192.0.2.7", keys[1])  # port 22 only
        + known_hosts_line(hashed, keys[2])
        + known_hosts_line("[192.0.2.*]:2222,![192.0.2.9]:2222", keys[3])
        + known_hosts_line("other.example.com", keys[4])
        + "@revoked [192.0.2.7]:2222 " + " ".join(known_hosts_line("x", keys[5]).split()[1:]) + "\n"
        + "[192.0.2.7]:2222 ssh-unknown AAAA\n")
    pinned = pinned_host_keys(str(tmp_path / "known_hosts"), destination(tmp_path, port=2222))
    assert [k.asbytes() for k in pinned] == [keys[i].asbytes() for i in (0, 2, 3)]
    assert [k.asbytes() for k in pinned_host_keys(str(tmp_path / "known_hosts"), destination(tmp_path))] == [
        keys[1].asbytes()]
    negated = destination(tmp_path, port=2222, host="192.0.2.9")
    assert pinned_host_keys(str(tmp_path / "known_hosts"), negated) == []


def test_ssh_pinned_host_keys_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(TransferError, match=r"^root@192\.0\.2\.7: cannot read the pinned host keys: "):
        pinned_host_keys(str(tmp_path / "missing"), destination(tmp_path))



@pytest.mark.parametrize("revoked_for", ["[192.0.2.7]:2222", "*", "other.example.com"])
def test_ssh_a_revoked_key_is_never_pinned_whatever_names_its_line_lists(tmp_path: Path, caplog: Any,
                                                                         revoked_for: str) -> None:
    stolen, current = ed25519_key(tmp_path / "stolen"), ed25519_key(tmp_path / "current")
    (tmp_path / "known_hosts").write_text(
        known_hosts_line("[192.0.2.7]:2222", stolen) + known_hosts_line("[192.0.2.7]:2222", current)
        + revoked_line(revoked_for, stolen))
    pinned = pinned_host_keys(str(tmp_path / "known_hosts"), destination(tmp_path, port=2222))
    assert [k.asbytes() for k in pinned] == [current.asbytes()]
    assert (f"{tmp_path}/known_hosts:1: not pinning ssh-ed25519 {stolen.fingerprint} for [192.0.2.7]:2222: "
            f"it is revoked ({tmp_path}/known_hosts:3)") in caplog.messages


def test_ssh_a_revocation_with_tabs_and_before_the_key_counts_too(tmp_path: Path) -> None:
    stolen = ed25519_key(tmp_path / "stolen")
    (tmp_path / "known_hosts").write_text(revoked_line("192.0.2.7", stolen, "\t")
                                          + known_hosts_line("192.0.2.7", stolen))
    assert pinned_host_keys(str(tmp_path / "known_hosts"), destination(tmp_path)) == []


def test_ssh_cert_authority_lines_pin_nothing_and_say_why(tmp_path: Path, caplog: Any) -> None:
    authority = ed25519_key(tmp_path / "ca")
    (tmp_path / "known_hosts").write_text(f"@cert-authority *.example.com {authority.get_name()} "
                                          f"{authority.get_base64()}\n")
    dumps = destination(tmp_path, host="dumps.example.com")
    assert pinned_host_keys(str(tmp_path / "known_hosts"), dumps) == []
    assert (f"{tmp_path}/known_hosts:1: @cert-authority pins nothing for dumps.example.com: the capture "
            "kernel checks the server's own host key, not host certificates; pin that key") in caplog.messages


def test_ssh_host_key_check_accepts_a_pinned_key(tmp_path: Path) -> None:
    key = paramiko.ECDSAKey.generate()
    same = paramiko.PKey.from_type_string(key.get_name(), key.asbytes())
    check_host_key(destination(tmp_path), same, [paramiko.ECDSAKey.generate(), key])


def test_ssh_host_key_check_rejects_unknown_host_key_naming_host_and_fingerprint(tmp_path: Path) -> None:
    offered = paramiko.ECDSAKey.generate()
    with pytest.raises(TransferError) as caught:
        check_host_key(destination(tmp_path, port=2222), offered, [])
    message = str(caught.value)
    assert message.startswith("root@192.0.2.7:2222: unknown host:")
    assert "pins no key for [192.0.2.7]:2222" in message
    assert f"ecdsa-sha2-nistp256 {offered.fingerprint}" in message
    assert offered.fingerprint.startswith("SHA256:")


def test_ssh_host_key_check_rejects_changed_host_key_with_both_fingerprints(tmp_path: Path) -> None:
    pinned, offered = paramiko.RSAKey.generate(1024), paramiko.ECDSAKey.generate()
    with pytest.raises(TransferError, match="HOST KEY MISMATCH") as caught:
        check_host_key(destination(tmp_path), offered, [pinned])
    message = str(caught.value)
    assert f"the server offers ecdsa-sha2-nistp256 {offered.fingerprint}" in message
    assert f"pins ssh-rsa {pinned.fingerprint} for 192.0.2.7" in message
