"""An SSH dump from a real panic that survives a broken connection.

The guest's capture kernel sends its dump to a real sshd on this host (10.0.2.2 from the
guest). In the middle of the transfer either the network is cut (a TCP relay on the host
between the guest and sshd, harness.relay, resets every connection once while sshd stays
up) or sshd itself is restarted (its sessions killed, back on the same port seconds later).
In both the agent reconnects, resumes the same vmcore-incomplete, and leaves a good dump
(harness.dumps: the files, their modes, the panic read back by `makedumpfile --dump-dmesg`),
and the record lists the interruption and what it cost.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.dumps import assert_good_dump, dump_on_host
from harness.kernels import Kernel
from harness.relay import Relay
from harness.scenario import (
    DHCP_CMDLINE,
    HOST_FROM_GUEST,
    LEAN_DRACUT_ARGS,
    build_capture_initrd,
    kill_when_partial_grows,
    network_dump_dirs,
    panic_and_capture,
    with_config_overlay,
)
from harness.sshd import ClientKey, Sshd, keygen

pytestmark = pytest.mark.qemu

CUT_AT = 4 << 20  # bytes in vmcore-incomplete on the server when the connection breaks (of ~24 MB)


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> ClientKey:
    return keygen(tmp_path_factory.mktemp("client") / "kdump_id_rsa", "rsa")


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory, client_key: ClientKey) -> Iterator[Sshd]:
    sshd = Sshd(tmp_path_factory.mktemp("sshd"), authorized=(client_key,)).start()
    try:
        yield sshd
    finally:
        sshd.stop()


@pytest.fixture(scope="module")
def relay(server: Sshd) -> Iterator[Relay]:
    with Relay(server.port) as running:
        yield running


def ssh_config(port: int, key: ClientKey, dumps: Path) -> str:
    return "\n".join([f"ssh root@{HOST_FROM_GUEST}:{port}", f"sshkey {key.path}", f"path {dumps}",
                      "extra_modules virtio_net", LEAN_DRACUT_ARGS, "failure_action poweroff", ""])


def pin(server: Sshd, port: int, path: Path) -> Path:
    """The server's host key, pinned under the name the guest uses for it."""
    return server.known_hosts(path, "ed25519", name=f"[{HOST_FROM_GUEST}]:{port}")


@pytest.fixture(scope="module")
def relayed_initrd(kernel: Kernel, server: Sshd, relay: Relay, client_key: ClientKey,
                   tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The image mkinitrd builds for a server the guest reaches through the relay."""
    work = tmp_path_factory.mktemp("resume-initrd")
    dumps = work / "dumps"
    known_hosts = pin(server, relay.port, work / "known_hosts")
    initrd = build_capture_initrd(kernel, ssh_config(relay.port, client_key, dumps), work,
                                  packed=[client_key.path, known_hosts],
                                  mkinitrd_args=["--known-hosts", str(known_hosts)])
    return initrd, dumps


def resumed_dump(dumps: Path, tmp_path: Path, console: str) -> dict[str, Any]:
    """The one dump made, good, with one interruption in its record."""
    (dump,) = network_dump_dirs(dumps)
    manifest = assert_good_dump(dump_on_host(dump), tmp_path)
    assert (dump / "vmcore").read_bytes()[:8] == b"KDUMP   "  # kdump-compressed: crash opens it as it is
    transfer = manifest["transfer"]
    assert transfer["size"] == (dump / "vmcore").stat().st_size
    (interruption,) = transfer["interruptions"]
    assert interruption["at"] > 0 and interruption["seconds"] > 0 and interruption["reason"]
    assert "resumed" in console and "final action: reboot" in console
    return dict(interruption)


def test_ssh_dump_survives_the_network_cut_mid_transfer(
        kernel: Kernel, relayed_initrd: tuple[Path, Path], relay: Relay, tmp_path: Path) -> None:
    initrd, dumps = relayed_initrd
    cuts = relay.cuts
    with kill_when_partial_grows(dumps, relay.cut, CUT_AT):  # sshd stays up
        result = panic_and_capture(kernel, initrd, [], tmp_path, capture_cmdline=DHCP_CMDLINE, network=True,
                                   timeout_s=400)
    assert not result.timed_out, result.tail()
    assert relay.cuts == cuts + 1
    resumed_dump(dumps, tmp_path, result.console)


def test_ssh_dump_survives_sshd_restarted_mid_transfer(
        kernel: Kernel, relayed_initrd: tuple[Path, Path], client_key: ClientKey, tmp_path: Path) -> None:
    initrd, _ = relayed_initrd
    victim = Sshd(tmp_path / "victim", authorized=(client_key,)).start()
    dumps = tmp_path / "dumps"
    try:
        overlaid = with_config_overlay(initrd, ssh_config(victim.port, client_key, dumps),
                                       tmp_path / "victim.img",
                                       records={"known_hosts": pin(victim, victim.port, tmp_path / "kh")
                                                .read_text()})
        with kill_when_partial_grows(dumps, lambda: victim.restart(down_seconds=3.0), CUT_AT):
            result = panic_and_capture(kernel, overlaid, [], tmp_path, capture_cmdline=DHCP_CMDLINE,
                                       network=True, timeout_s=400)
    finally:
        victim.stop()
    assert not result.timed_out, result.tail()
    interruption = resumed_dump(dumps, tmp_path, result.console)
    assert interruption["seconds"] >= 2.5  # it waited for sshd to come back
    assert victim.log.read_text(errors="replace").count("Accepted publickey") >= 2  # logged in again
