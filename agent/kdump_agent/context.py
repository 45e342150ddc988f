"""What one capture knows as it goes: filled in by the steps, read by the manifest."""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import Action, Config
from .runner import Journal
from .targets.base import Destination, DumpState
from .targets.sshdest import DEFAULT_KNOWN_HOSTS_PATH

DEFAULT_CONFIG_PATH = "/etc/kdump.conf"
RECORDED_TARGET_PATH = "/etc/kdump-agent/target.json"
RECORDED_ROOTFS_PATH = "/etc/kdump-agent/rootfs.json"
RECORDED_NETWORK_PATH = "/etc/kdump-agent/network.json"
RECORDED_STORAGE_PATH = "/etc/kdump-agent/storage.json"
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
    recorded_storage: str = RECORDED_STORAGE_PATH  # the stacks under the target and the root
    known_hosts: str = DEFAULT_KNOWN_HOSTS_PATH
    cmdline: str = "/proc/cmdline"
    resolv_conf: str = "/etc/resolv.conf"
    scratch: str = "/tmp"  # RAM: where a file bound for a remote target is made first


@dataclass
class Capture:
    """The capture in progress. Steps fill it in; the manifest and the actions read it."""

    paths: Paths
    journal: Journal
    started_wall: float = field(default_factory=time.time)
    from_rootfs: bool = False  # running in the root file system (mount_root_run_init)
    config: Config | None = None
    destination: Destination | None = None  # chosen at LOAD_CONFIG, the root's for dump_to_rootfs
    dump: DumpState = field(default_factory=DumpState)  # how far saving on it got
    notes: list[str] = field(default_factory=list)
    action_taken: str = ""

    def fork(self) -> Capture:
        """A copy for one state's step to fill in: its lists and its DumpState are its own;
        the journal, the config and an SSH connection are shared (runner.py says why)."""
        forked = copy.copy(self)
        forked.dump = self.dump.copy()
        forked.notes = list(self.notes)
        return forked

    def adopt(self, fork: Capture) -> None:
        """Take over what a step recorded in its fork."""
        vars(self).update(vars(fork))

    @property
    def dump_dir(self) -> Path | None:
        """The dump directory on a local or NFS target, as this machine sees it."""
        return self.destination.local_directory(self.dump) if self.destination else None

    @property
    def vmcore_saved(self) -> bool:
        return self.dump.vmcore_saved

    @property
    def where_saved(self) -> str | None:
        """The dump directory as an admin finds it: a local path, or user@host:path."""
        return self.destination.where(self.dump) if self.destination else None

    @property
    def failure_action(self) -> Action:
        """The configured failure action, or the seed's default (reboot) without a config."""
        return self.config.failure_action if self.config else Action.REBOOT

    @property
    def final_action(self) -> Action:
        return self.config.final_action if self.config else Action.REBOOT
