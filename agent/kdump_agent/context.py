"""What one capture knows as it goes: filled in by the steps, read by the manifest."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

from .config import Action, Config
from .runner import Journal
from .targets.local import FilesystemTarget
from .targets.raw import RawTarget

DEFAULT_CONFIG_PATH = "/etc/kdump.conf"
RECORDED_TARGET_PATH = "/etc/kdump-agent/target.json"
RECORDED_ROOTFS_PATH = "/etc/kdump-agent/rootfs.json"
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


@dataclass(frozen=True)
class FileRecord:
    """A file saved in the dump directory, as the manifest lists it."""

    name: str
    size: int
    sha256: str


@dataclass
class Capture:
    """The capture in progress. Steps fill it in; the manifest and the actions read it."""

    paths: Paths
    journal: Journal
    started_wall: float = field(default_factory=time.time)
    from_rootfs: bool = False  # running in the root file system (mount_root_run_init)
    config: Config | None = None
    target: FilesystemTarget | RawTarget | None = None
    target_root: str | None = None  # where the target file system is reachable
    mounted: list[str] = field(default_factory=list)  # what we mounted and must unmount
    dump_dir: Path | None = None
    collector_argv: list[str] = field(default_factory=list)
    collector_returncode: int | None = None
    collector_peak_kib: int | None = None  # peak RSS of the largest command run so far
    memfree_at_collect_kib: int | None = None  # what the collector had to work with
    vmcore_saved: bool = False  # a complete vmcore got its final name (FINALIZE)
    files: list[FileRecord] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    action_taken: str = ""

    @property
    def failure_action(self) -> Action:
        """The configured failure action, or the seed's default (reboot) without a config."""
        return self.config.failure_action if self.config else Action.REBOOT

    @property
    def final_action(self) -> Action:
        return self.config.final_action if self.config else Action.REBOOT
