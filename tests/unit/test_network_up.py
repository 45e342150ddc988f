"""NETWORK_UP: which plan is used, which address the route is waited for, name resolution."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

import pytest

from kdump_agent.config import parse
from kdump_agent.context import Capture, Paths
from kdump_agent.errors import KdumpError
from kdump_agent.network import bringup
from kdump_agent.runner import Journal
from kdump_agent.steps import network_up
from kdump_agent.targets.local import FilesystemTarget
from kdump_agent.targets.nfs import NfsTarget
from kdump_agent.targets.registry import destination_for
from kdump_agent.targets.sshdest import SshDestination

RECORD = {"target": "192.0.2.9", "host": "filer.example", "interface": "ens3", "mac": "52:54:00:12:34:56",
          "mtu": 1500, "addresses": ["192.0.2.10/24"], "gateway": "192.0.2.1", "dns": ["192.0.2.53"],
          "dhcp": False, "hostname": "crashed"}


def capture_for(tmp_path: Path, target: Any, cmdline: str = "console=ttyS0",
                record: dict[str, Any] | None = None, config: str = "") -> Capture:
    (tmp_path / "cmdline").write_text(cmdline + "\n")
    if record is not None:
        (tmp_path / "network.json").write_text(json.dumps(record))
    paths = Paths(recorded_network=str(tmp_path / "network.json"), cmdline=str(tmp_path / "cmdline"),
                  resolv_conf=str(tmp_path / "resolv.conf"))
    capture = Capture(paths=paths, journal=Journal(), config=parse(config, "k"))
    capture.destination = destination_for(target)
    return capture


@pytest.fixture
def net(mocker: Any) -> Any:
    mocker.patch.object(bringup, "bring_up", return_value="eth0 up")
    mocker.patch.object(bringup, "wait_for_route", return_value=", route to it")
    mocker.patch.object(bringup, "source_address", return_value="192.0.2.10")
    return bringup


def test_local_targets_need_no_network(tmp_path: Path, net: Any) -> None:
    capture = capture_for(tmp_path, FilesystemTarget("/dev/vdb", "ext4", "/"))
    assert network_up.network_up(capture, 60) == "no network target"
    net.bring_up.assert_not_called()


def test_cmdline_plan_and_an_address_target(tmp_path: Path, net: Any) -> None:
    capture = capture_for(tmp_path, SshDestination("root", "192.0.2.9"), cmdline="ip=dhcp",
                          config="link_delay 5")
    network_up.network_up(capture, 65)
    plan, address = net.bring_up.call_args.args
    assert plan.dhcp and address == "192.0.2.9"
    assert net.bring_up.call_args.kwargs["link_delay"] == 5.0
    assert (capture.dump.server_address, capture.dump.local_address) == ("192.0.2.9", "192.0.2.10")
    net.wait_for_route.assert_not_called()


def test_without_ip_or_record_dhcp_on_the_only_nic(tmp_path: Path, net: Any) -> None:
    capture = capture_for(tmp_path, SshDestination("root", "192.0.2.9"))
    network_up.network_up(capture, 60)
    assert net.bring_up.call_args.args[0] == network_up.FALLBACK_PLAN


def test_a_name_is_resolved_after_bring_up_and_its_route_waited_for(tmp_path: Path, net: Any,
                                                                    mocker: Any) -> None:
    mocker.patch.object(bringup, "resolve", return_value="198.51.100.7")
    capture = capture_for(tmp_path, NfsTarget("filer.example:/export", "nfs", "/"), record=RECORD)
    note = network_up.network_up(capture, 60)
    plan, route_probe = net.bring_up.call_args.args
    assert plan.mac == "52:54:00:12:34:56" and route_probe == "192.0.2.9"  # the recorded address first
    assert capture.dump.server_address == "198.51.100.7"
    assert net.wait_for_route.call_args.args[0] == "198.51.100.7"
    assert "filer.example is 198.51.100.7" in note


def test_dns_failing_falls_back_to_the_address_recorded_by_mkinitrd(tmp_path: Path, net: Any,
                                                                   mocker: Any) -> None:
    mocker.patch.object(bringup, "resolve", side_effect=KdumpError("cannot resolve filer.example"))
    capture = capture_for(tmp_path, NfsTarget("filer.example:/export", "nfs", "/"), record=RECORD)
    network_up.network_up(capture, 60)
    assert capture.dump.server_address == "192.0.2.9"


def test_dns_failing_without_a_record_fails_the_state(tmp_path: Path, net: Any, mocker: Any) -> None:
    mocker.patch.object(bringup, "resolve", side_effect=KdumpError("cannot resolve filer.example"))
    capture = capture_for(tmp_path, NfsTarget("filer.example:/export", "nfs", "/"), cmdline="ip=dhcp")
    with pytest.raises(KdumpError, match="cannot resolve filer.example"):
        network_up.network_up(capture, 60)
    assert net.bring_up.call_args.args[1] is None  # no address to wait for a route to yet


def test_a_record_for_another_host_lends_no_address(tmp_path: Path, net: Any, mocker: Any) -> None:
    mocker.patch.object(bringup, "resolve", side_effect=KdumpError("cannot resolve other.example"))
    capture = capture_for(tmp_path, NfsTarget("other.example:/export", "nfs", "/"), record=RECORD)
    with pytest.raises(KdumpError):
        network_up.network_up(capture, 60)


def test_a_damaged_record_fails_the_state_when_it_is_the_only_plan(tmp_path: Path, net: Any) -> None:
    capture = capture_for(tmp_path, SshDestination("root", "192.0.2.9"), record={**RECORD, "mac": "52:54"})
    with pytest.raises(KdumpError, match="network record: mac '52:54' is not a MAC address"):
        network_up.network_up(capture, 60)
    net.bring_up.assert_not_called()


def test_a_damaged_record_is_done_without_given_ip(tmp_path: Path, net: Any, mocker: Any,
                                                     caplog: pytest.LogCaptureFixture) -> None:
    mocker.patch.object(bringup, "resolve", side_effect=KdumpError("cannot resolve filer.example"))
    capture = capture_for(tmp_path, NfsTarget("filer.example:/export", "nfs", "/"), cmdline="ip=eth0:dhcp",
                          record={**RECORD, "dhcp": "yes"})
    with pytest.raises(KdumpError, match="cannot resolve filer.example"):  # no recorded address either
        network_up.network_up(capture, 60)
    plan, route_probe = net.bring_up.call_args.args
    assert (plan.interface, plan.mac, route_probe) == ("eth0", None, None)
    assert "network record: dhcp should be bool" in caplog.text


def test_an_ipv6_server_address_is_used_as_given(tmp_path: Path, net: Any, mocker: Any) -> None:
    resolve = mocker.patch.object(bringup, "resolve")
    net.source_address.return_value = "fd77::5"
    capture = capture_for(tmp_path, SshDestination("root", "fd77:0::1"), cmdline="ip=eth0:auto6")
    network_up.network_up(capture, 60)
    assert net.bring_up.call_args.args[1] == "fd77::1"
    assert (capture.dump.server_address, capture.dump.local_address) == ("fd77::1", "fd77::5")
    resolve.assert_not_called()


@pytest.mark.parametrize(("cmdline", "families"), [
    ("ip=eth0:auto6", (socket.AF_INET6,)),
    ("ip=eth0:dhcp", (socket.AF_INET,)),
    ("ip=eth0:dhcp ip=eth0:dhcp6", (socket.AF_INET, socket.AF_INET6)),
], ids=["ipv6-only", "ipv4-only", "dual-stack"])
def test_a_name_is_resolved_only_in_the_families_the_plan_configured(
        tmp_path: Path, net: Any, mocker: Any, cmdline: str, families: tuple[int, ...]) -> None:
    resolve = mocker.patch.object(bringup, "resolve", return_value="fd77::1")
    capture = capture_for(tmp_path, SshDestination("root", "dumps.lab"), cmdline=cmdline)
    network_up.network_up(capture, 60)
    assert resolve.call_args.args == ("dumps.lab", families)
