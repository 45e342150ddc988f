"""What one capture knows as it goes: filled in by the steps, read by the manifest."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .config import Action, Config
from .runner import Journal
from .system import file_sha256
from .targets.local import FilesystemTarget
from .targets.nfs import NfsTarget
from .targets.raw import RawTarget
from .targets.sshdest import DEFAULT_KNOWN_HOSTS_PATH, SshDestination

if TYPE_CHECKING:  # paramiko is imported only by captures that go over SSH
    from .ssh.connection import SshTarget

DEFAULT_CONFIG_PATH = "/etc/kdump.conf"
RECORDED_TARGET_PATH = "/etc/kdump-agent/target.json"
RECORDED_ROOTFS_PATH = "/etc/kdump-agent/rootfs.json"
RECORDED_NETWORK_PATH = "/etc/kdump-agent/network.json"
NEWROOT = "/sysroot"  # where dracut's init looks for the root file system to switch to
MOUNTPOINT = "/kdumproot"
VMCORE_PATH = "/proc/vmcore"
HOOK_ROOT = "/etc/kdump"  # pre.d, post.d, emergency.d


@dataclass(frozen=True)
class Paths:
    """Where the capture reads and mounts; tests point these at temporary places."""

    config: str = DEFAULT_CONFIG_PATH
    recorded_target: str = RECORDED_TARGET_PATH
    recorded_rootfs: str = RECORDED_ROOTFS_PATH
    newroot: str = NEWROOT
    mountpoint: str = MOUNTPOINT
    vmcore: str = VMCORE_PATH
    hooks: str = HOOK_ROOT
    recorded_network: str = RECORDED_NETWORK_PATH
    known_hosts: str = DEFAULT_KNOWN_HOSTS_PATH
    cmdline: str = "/proc/cmdline"
    resolv_conf: str = "/etc/resolv.conf"
    scratch: str = "/tmp"  # RAM: where a file bound for a remote target is made first


@dataclass(frozen=True)
class FileRecord:
    """A file saved in the dump directory, as the manifest lists it."""

    name: str
    size: int
    sha256: str | None  # None: rebuilt on an SSH server from records, never read whole here

    @classmethod
    def of(cls, path: Path, name: str | None = None) -> FileRecord:
        """Size and sha256 of a file, so a copy of the dump can be checked later."""
        return cls(name=name or path.name, size=path.stat().st_size, sha256=file_sha256(path))


@dataclass
class Capture:
    """The capture in progress. Steps fill it in; the manifest and the actions read it."""

    paths: Paths
    journal: Journal
    started_wall: float = field(default_factory=time.time)
    from_rootfs: bool = False  # running in the root file system (mount_root_run_init)
    config: Config | None = None
    target: FilesystemTarget | RawTarget | NfsTarget | SshDestination | None = None
    target_root: str | None = None  # where the target file system is reachable
    target_address: str | None = None  # network targets: the server's address, resolved
    local_address: str | None = None  # ours towards the server: the dump directory's <host-ip>
    remote: SshTarget | None = None  # the SSH connection, from MOUNT_TARGET to the action
    remote_dir: str | None = None  # the dump directory on the SSH server
    mounted: list[str] = field(default_factory=list)  # what we mounted and must unmount
    dump_dir: Path | None = None
    collector_argv: list[str] = field(default_factory=list)
    collector_returncode: int | None = None
    collector_peak_kib: int | None = None  # peak RSS of the largest command run so far
    memfree_at_collect_kib: int | None = None  # what the collector had to work with
    vmcore_saved: bool = False  # a complete vmcore got its final name (FINALIZE)
    transfer: dict[str, object] = field(default_factory=dict)  # SSH: how the dump travelled
    files: list[FileRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    action_taken: str = ""

    def fork(self) -> Capture:
        """A copy for one state's step to fill in: its lists and dicts are its own, the
        journal, the config and the SSH connection are shared (runner.py says why)."""
        forked = copy.copy(self)
        for name, value in vars(self).items():
            if isinstance(value, (list, dict)):
                setattr(forked, name, copy.copy(value))
        return forked

    def adopt(self, fork: Capture) -> None:
        """Take over what a step recorded in its fork."""
        vars(self).update(vars(fork))

    @property
    def where_saved(self) -> str | None:
        """The dump directory as an admin finds it: a local path, or user@host:path."""
        if self.remote_dir is not None:
            return f"{self.target}:{self.remote_dir}"
        return str(self.dump_dir) if self.dump_dir else None

    @property
    def failure_action(self) -> Action:
        """The configured failure action, or the seed's default (reboot) without a config."""
        return self.config.failure_action if self.config else Action.REBOOT

    @property
    def final_action(self) -> Action:
        return self.config.final_action if self.config else Action.REBOOT
