"""An SSH target's spec as kdump.conf writes it (`user@host[:port]`), and how it names itself."""

from __future__ import annotations

import pytest

from kdump_agent.targets.sshdest import SshDestination, parse_spec


@pytest.mark.parametrize("spec, user, host, port", [
    ("root@dumps.example.com", "root", "dumps.example.com", 22),
    ("kdump@192.0.2.7:2222", "kdump", "192.0.2.7", 2222),
    ("root@[2001:db8::1]", "root", "2001:db8::1", 22),
    ("root@[::1]:2222", "root", "::1", 2222),
    ("root@2001:db8::1", "root", "2001:db8::1", 22),
    ("root@[fe80::1%eth0]:22", "root", "fe80::1%eth0", 22),
])
def test_ssh_spec_parses_user_host_and_port(spec: str, user: str, host: str, port: int) -> None:
    parsed = parse_spec(spec, directory="/var/crash/x")
    assert (parsed.user, parsed.host, parsed.port, parsed.directory) == (user, host, port, "/var/crash/x")
    assert parsed.key_path == "/root/.ssh/kdump_id_rsa"


@pytest.mark.parametrize("spec, message", [
    ("dumps.example.com", "must look like user@host"),
    ("@host", "must look like user@host"),
    ("root@", "must look like user@host"),
    ("a@b@c", "must look like user@host"),
    ("root@host:", "no port after"),
    ("root@host:ssh", "port 'ssh' is not a number"),
    ("root@host:0", "port '0' is not a number from 1 to 65535"),
    ("root@host:65536", "port '65536'"),
    ("root@[::1", "an IPv6 address goes in brackets"),
    ("root@[::1]2222", "an IPv6 address goes in brackets"),
    ("root@[dumps]:22", "'dumps' is not an IPv6 address"),
    ("root@:22", "names no host"),
])
def test_ssh_spec_errors_name_the_spec_and_the_problem(spec: str, message: str) -> None:
    with pytest.raises(ValueError, match=f"SSH target {spec!r}.*{message}".replace("[", r"\[")):
        parse_spec(spec)


def test_ssh_destination_names_itself_and_its_known_hosts_entry_as_openssh_does() -> None:
    assert str(SshDestination("root", "dumps")) == "root@dumps"
    assert SshDestination("root", "dumps").known_hosts_name == "dumps"
    assert str(SshDestination("root", "::1", port=2222)) == "root@[::1]:2222"
    assert SshDestination("root", "::1", port=2222).known_hosts_name == "[::1]:2222"
    assert SshDestination("root", "192.0.2.7", port=2222).known_hosts_name == "[192.0.2.7]:2222"
