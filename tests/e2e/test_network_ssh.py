"""SSH dumps from a real panic: the capture kernel brings its NIC up (DHCP or a static
`ip=`), logs in to a real OpenSSH server on this host's loopback (the guest reaches it as
10.0.2.2 through QEMU's user-mode network) and leaves a ready vmcore there, no
`makedumpfile -R` needed. Then the faults: a server that refuses, a host key that changed,
an sshd killed in the middle of the transfer.

The good cases share one mkinitrd image (the capture command line differs); the faults lay
their config or pin over it.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.dumps import assert_good_dump, dump_on_host
from harness.kernels import Kernel
from harness.scenario import (
    CAPTURE_CMDLINE,
    DHCP_CMDLINE,
    GUEST_ADDRESS,
    HOST_FROM_GUEST,
    LEAN_DRACUT_ARGS,
    build_capture_initrd,
    kill_when_partial_grows,
    network_dump_dirs,
    panic_and_capture,
    with_config_overlay,
)
from harness.sshd import ClientKey, Sshd, free_port, keygen

pytestmark = pytest.mark.qemu

STATIC_CMDLINE = (f"{CAPTURE_CMDLINE} "
                  f"ip={GUEST_ADDRESS}::{HOST_FROM_GUEST}:255.255.255.0:crashed:eth0:none")


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


def ssh_config(server: Sshd, key: ClientKey, dumps: Path, *extra: str) -> str:
    return "\n".join([f"ssh root@{HOST_FROM_GUEST}:{server.port}", f"sshkey {key.path}", f"path {dumps}",
                      "extra_modules virtio_net", LEAN_DRACUT_ARGS, "failure_action poweroff", *extra, ""])


@pytest.fixture(scope="module")
def ssh_initrd(kernel: Kernel, server: Sshd, client_key: ClientKey,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The image mkinitrd builds, with the server's key pinned as the guest will name it."""
    work = tmp_path_factory.mktemp("ssh-initrd")
    dumps = work / "dumps"
    known_hosts = server.known_hosts(work / "known_hosts", "ed25519",
                                     name=f"[{HOST_FROM_GUEST}]:{server.port}")
    initrd = build_capture_initrd(kernel, ssh_config(server, client_key, dumps), work,
                                  packed=[client_key.path, known_hosts],
                                  mkinitrd_args=["--known-hosts", str(known_hosts)])
    return initrd, dumps


def check_ready_vmcore(dump: Path, tmp_path: Path) -> dict[str, Any]:
    """What an admin checks: a good dump (harness.dumps), a vmcore crash tools open as it is,
    and a manifest that says how it came over."""
    manifest = assert_good_dump(dump_on_host(dump), tmp_path)
    assert (dump / "vmcore").read_bytes()[:8] == b"KDUMP   "  # kdump-compressed, not flattened
    assert manifest["action"] == "final_action reboot"
    assert manifest["transfer"]["flattened"] is False
    assert manifest["transfer"]["size"] == (dump / "vmcore").stat().st_size
    assert "-F" in manifest["collector"]["argv"]
    return manifest


@pytest.mark.parametrize("cmdline", [DHCP_CMDLINE, STATIC_CMDLINE], ids=["dhcp", "static-ip"])
def test_ssh_dump_leaves_a_ready_vmcore_on_the_server(
        kernel: Kernel, ssh_initrd: tuple[Path, Path], cmdline: str, tmp_path: Path) -> None:
    initrd, dumps = ssh_initrd
    before = set(network_dump_dirs(dumps))
    result = panic_and_capture(kernel, initrd, [], tmp_path, capture_cmdline=cmdline, network=True)
    assert not result.timed_out, result.tail()
    new = [d for d in network_dump_dirs(dumps) if d not in before]
    assert len(new) == 1, result.tail()
    manifest = check_ready_vmcore(new[0], tmp_path)
    network = next(s for s in manifest["states"] if s["state"] == "NETWORK_UP")
    assert ("via DHCP" if "dhcp" in cmdline else "static") in network["detail"]
    assert manifest["target"]["local_address"] == GUEST_ADDRESS
    assert "final action: reboot" in result.console


def test_ssh_server_refusing_runs_the_failure_action_without_a_hang(
        kernel: Kernel, ssh_initrd: tuple[Path, Path], server: Sshd, client_key: ClientKey,
        tmp_path: Path) -> None:
    initrd, _ = ssh_initrd
    dumps = tmp_path / "dumps"
    config = ssh_config(server, client_key, dumps).replace(f":{server.port}", f":{free_port()}")
    overlaid = with_config_overlay(initrd, config, tmp_path / "refusing.img")
    result = panic_and_capture(kernel, overlaid, [], tmp_path, capture_cmdline=DHCP_CMDLINE, network=True,
                               timeout_s=300)
    assert not result.timed_out, result.tail()
    assert "MOUNT_TARGET failed" in result.console and "Connection refused" in result.console
    assert "failure action: poweroff" in result.console
    assert not dumps.exists()


def test_ssh_changed_host_key_is_refused_before_anything_is_sent(
        kernel: Kernel, ssh_initrd: tuple[Path, Path], server: Sshd, client_key: ClientKey,
        tmp_path: Path) -> None:
    initrd, dumps = ssh_initrd
    impostor = keygen(tmp_path / "impostor", "ed25519")  # the key we "knew" for this server
    pin = f"[{HOST_FROM_GUEST}]:{server.port} {' '.join(impostor.public_line.split()[:2])}\n"
    overlaid = with_config_overlay(initrd, ssh_config(server, client_key, dumps), tmp_path / "pin.img",
                                   records={"known_hosts": pin})
    before = set(network_dump_dirs(dumps))
    log_before = server.log.stat().st_size
    result = panic_and_capture(kernel, overlaid, [], tmp_path, capture_cmdline=DHCP_CMDLINE, network=True)
    assert not result.timed_out, result.tail()
    assert "MOUNT_TARGET failed" in result.console
    assert "HOST KEY MISMATCH" in result.console
    assert "failure action: poweroff" in result.console
    assert set(network_dump_dirs(dumps)) == before  # not even the directory was made
    with open(server.log, "rb") as log:
        log.seek(log_before)
        seen_by_server = log.read().decode(errors="replace")
    assert "Connection" in seen_by_server  # the guest did reach it...
    assert "Accepted publickey" not in seen_by_server  # ...and never authenticated


def test_sshd_killed_mid_transfer_leaves_vmcore_incomplete_and_runs_the_failure_action(
        kernel: Kernel, ssh_initrd: tuple[Path, Path], client_key: ClientKey, tmp_path: Path) -> None:
    initrd, _ = ssh_initrd
    victim = Sshd(tmp_path / "victim", authorized=(client_key,)).start()
    dumps = tmp_path / "dumps"
    try:
        known_hosts = victim.known_hosts(tmp_path / "kh", "ed25519",
                                         name=f"[{HOST_FROM_GUEST}]:{victim.port}")
        overlaid = with_config_overlay(initrd, ssh_config(victim, client_key, dumps),
                                       tmp_path / "victim.img",
                                       records={"known_hosts": known_hosts.read_text()})
        with kill_when_partial_grows(dumps, victim.kill, 4 << 20):  # sshd and its sessions
            result = panic_and_capture(kernel, overlaid, [], tmp_path, capture_cmdline=DHCP_CMDLINE,
                                       network=True, timeout_s=400)
    finally:
        victim.stop()
    assert not result.timed_out, result.tail()
    (dump,) = network_dump_dirs(dumps)
    assert (dump / "vmcore-incomplete").stat().st_size > (4 << 20)
    assert not (dump / "vmcore").exists()
    assert "COLLECT failed" in result.console
    assert "failure action: poweroff" in result.console
