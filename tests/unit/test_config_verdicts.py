"""One verdict everywhere (issue 11): check-config and LOAD_CONFIG refuse the same network
specs with the same message at the same line, because both read the file with config.load,
whose one parser of each spec kind (targets/sshdest.parse_spec, targets/netspec.parse_nfs_spec)
also gives the typed target the capture acts on (Config.dump_target)."""

from __future__ import annotations

from pathlib import Path

import pytest

from kdump_agent.config import ConfigErrors, load
from kdump_agent.context import Capture, Paths
from kdump_agent.runner import Journal
from kdump_agent.steps.setup import load_config

Verdict = tuple[int, str] | None  # None: accepted; else the line and message of the refusal

# (directive, spec, accepted?)
SPECS = [
    ("ssh", "root@dumps.example.com", True),
    ("ssh", "kdump@192.0.2.7:2222", True),
    ("ssh", "root@[::1]:2222", True),
    ("ssh", "root@2001:db8::1", True),
    ("ssh", "root@[fe80::1%eth0]", True),
    ("ssh", "root@host:99999", False),  # the review's three
    ("ssh", "root@host:²", False),
    ("ssh", "root@[zz::1]", False),
    ("ssh", "root@host:0", False),
    ("ssh", "root@host:", False),
    ("ssh", "root@[::1]2222", False),
    ("ssh", "root@-oProxyCommand=x", False),
    ("ssh", "root@ho!st", False),
    ("ssh", "root@host\x1b[2J", False),
    ("ssh", "a@b@c", False),
    ("ssh", "dumps.example.com", False),
    ("nfs", "my.server.com:/export/tmp", True),
    ("nfs4", "[2001:db8::1]:/export", True),
    ("nfs", "[zz::1]:/export", False),
    ("nfs", "[fe80::1%bad!]:/export", False),
    ("nfs", "2001:db8::1:/export", False),
    ("nfs", "[]:/x", False),
    ("nfs", "server", False),
    ("nfs", "bad!host:/export", False),
    ("nfs", "server:/export/../etc", False),
]
LINE = 3


def check_config_verdict(directive: str, spec: str, tmp_path: Path) -> Verdict:
    """What `kdump-agent check-config` (and mkinitrd) say: config.load of the file."""
    conf = tmp_path / "kdump.conf"
    conf.write_text(f"# spec on line {LINE}\npath /var/crash\n{directive} {spec}\n")
    try:
        load(str(conf))
    except ConfigErrors as errors:
        (error,) = errors.errors
        return error.line, error.message
    return None


def load_config_verdict(directive: str, spec: str, tmp_path: Path) -> Verdict:
    """What LOAD_CONFIG says in the capture kernel when it reads the same file and turns its
    target line into the capture's Destination."""
    conf = tmp_path / "kdump.conf"
    conf.write_text(f"# spec on line {LINE}\npath /var/crash\n{directive} {spec}\n")
    capture = Capture(paths=Paths(config=str(conf), known_hosts=str(tmp_path / "known_hosts")),
                      journal=Journal())
    try:
        load_config(capture)
    except ConfigErrors as errors:
        (error,) = errors.errors
        return error.line, error.message
    assert capture.destination is not None and capture.destination.server is not None
    return None


@pytest.mark.parametrize(("directive", "spec", "accepted"), SPECS)
def test_check_config_and_load_config_give_the_same_verdict(directive: str, spec: str, accepted: bool,
                                                            tmp_path: Path) -> None:
    checked = check_config_verdict(directive, spec, tmp_path)
    loaded = load_config_verdict(directive, spec, tmp_path)
    assert checked == loaded
    assert (checked is None) == accepted, checked
    if checked is not None:
        assert checked[0] == LINE and "target" in checked[1]
        assert checked[1].isprintable()


@pytest.mark.parametrize("spec", ["root@host:99999", "server:/export/../etc"])
def test_net_spelling_goes_through_the_same_parsers(spec: str, tmp_path: Path) -> None:
    directive = "ssh" if "@" in spec else "nfs"
    assert check_config_verdict("net", spec, tmp_path) == check_config_verdict(directive, spec, tmp_path)


@pytest.mark.parametrize("target", ["raw /dev/vdc", "ssh root@dumps.example.com"])
def test_a_stream_target_without_makedumpfile_is_refused_by_check_config_as_by_the_capture(
        target: str, tmp_path: Path) -> None:
    conf = tmp_path / "kdump.conf"
    conf.write_text(f"core_collector cp --sparse=always\n{target}\n")
    with pytest.raises(ConfigErrors) as refused:
        load(str(conf))
    (error,) = refused.value.errors
    assert error.line == 2 and "needs makedumpfile as core_collector" in error.message
