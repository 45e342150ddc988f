"""MOUNT_TARGET: wait for the target device and mount it; mount an NFS export; or log in
to an SSH server (the connection then serves every later state up to the action)."""

from __future__ import annotations

from ..context import Capture
from ..deadlines import disk_timeout
from ..targets import nfs
from ..targets.local import mount_target, wait_for_device
from ..targets.raw import RawTarget
from ..targets.sshdest import DEFAULT_TIMEOUT, SshDestination

ROOT = "/"  # the running root file system, for `capture --from-rootfs`


def mount(capture: Capture) -> str:
    assert capture.target is not None, "LOAD_CONFIG resolves the target"
    target = capture.target
    if isinstance(target, RawTarget):
        device = wait_for_device(target.device, disk_timeout(capture))
        return f"raw device {device} is there"
    if capture.from_rootfs:
        capture.target_root = ROOT
        return "the running root file system: nothing to mount"
    if isinstance(target, SshDestination):
        from ..ssh.connection import SshTarget  # paramiko: only for SSH targets

        assert capture.target_address is not None, "NETWORK_UP resolved the server"
        capture.remote = SshTarget.connect(target, DEFAULT_TIMEOUT, address=capture.target_address)
        return f"logged in to {target}"
    mountpoint = capture.paths.mountpoint
    if isinstance(target, nfs.NfsTarget):
        assert capture.target_address is not None, "NETWORK_UP resolved the server"
        version = nfs.mount_nfs(target, capture.target_address, capture.local_address, mountpoint)
        capture.mounted.append(mountpoint)
        capture.target_root = mountpoint
        return f"{target.spec} ({version}) on {mountpoint}"
    mount_target(target, mountpoint, disk_timeout(capture))
    capture.mounted.append(mountpoint)
    capture.target_root = mountpoint
    return f"{target.spec} on {mountpoint}"
