"""NFS dumps from a real panic: the capture kernel brings its NIC up with DHCP, mounts a real
NFS server (nfs-ganesha on this host's loopback, 10.0.2.2 to the guest) with the kernel's
own client, and saves the dump there as on a local disk. NFSv4 for `nfs4`; for `nfs`, a
server without v4 makes the agent fall back to v3. Then the fault: the server dies in the
middle of the dump, and the soft mount turns that into a failure action, not a hang.

All cases share one mkinitrd image; the `nfs4` case lays its config over it.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.dumps import assert_good_dump, dump_on_host
from harness.kernels import Kernel
from harness.nfs_server import NfsServer
from harness.scenario import (
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

pytestmark = pytest.mark.qemu


def nfs_config(kind: str = "nfs") -> str:
    return "\n".join([f"{kind} {HOST_FROM_GUEST}:/export", "path /var/crash",
                      "extra_modules virtio_net", LEAN_DRACUT_ARGS, "failure_action poweroff", ""])


@pytest.fixture(scope="module")
def nfs_initrd(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_capture_initrd(kernel, nfs_config(), tmp_path_factory.mktemp("nfs-initrd"))


def dump_dirs(server: NfsServer) -> list[Path]:
    return network_dump_dirs(server.export_path / "var" / "crash")


@pytest.mark.parametrize(("kind", "protocols", "version"),
                         [("nfs4", (3, 4), "NFSv4"), ("nfs", (3,), "NFSv3")],
                         ids=["nfs4", "nfs-v3-fallback"])
def test_nfs_dump_is_saved_on_the_server(kernel: Kernel, nfs_initrd: Path, kind: str,
                                         protocols: tuple[int, ...], version: str, tmp_path: Path) -> None:
    with NfsServer(tmp_path / "nfs", protocols=protocols) as server:
        initrd = with_config_overlay(nfs_initrd, nfs_config(kind), tmp_path / "capture.img")
        result = panic_and_capture(kernel, initrd, [], tmp_path, capture_cmdline=DHCP_CMDLINE, network=True)
        (dump,) = dump_dirs(server)
    assert not result.timed_out, result.tail()
    assert f"({version}) on /kdumproot" in result.console
    if kind == "nfs":
        assert "NFSv4 mount of" in result.console  # tried first, refused by this server
    manifest = assert_good_dump(dump_on_host(dump), tmp_path)
    assert manifest["target"]["local_address"] == GUEST_ADDRESS
    assert manifest["target"]["fstype"] == kind
    (vmcore,) = [f for f in manifest["files"] if f["name"] == "vmcore"]
    assert vmcore["size"] == (dump / "vmcore").stat().st_size
    assert "final action: reboot" in result.console


def test_nfs_server_dying_mid_dump_ends_in_the_failure_action(kernel: Kernel, nfs_initrd: Path,
                                                               tmp_path: Path) -> None:
    with NfsServer(tmp_path / "nfs") as server:
        with kill_when_partial_grows(server.export_path / "var" / "crash", server.kill, 2 << 20):
            result = panic_and_capture(kernel, nfs_initrd, [], tmp_path, capture_cmdline=DHCP_CMDLINE,
                                       network=True, timeout_s=400)
        (dump,) = dump_dirs(server)
    assert not result.timed_out, result.tail()
    assert (dump / "vmcore-incomplete").exists() and not (dump / "vmcore").exists()
    assert "not responding" in result.console  # the kernel's soft-mount timeout
    assert "failure action: poweroff" in result.console
    assert "reboot: Power down" in result.console
