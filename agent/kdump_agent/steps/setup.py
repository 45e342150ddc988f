"""LOAD_CONFIG: read kdump.conf and decide where the dump goes."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import TypeVar

from .. import config as kdump_config
from .. import system, unpacked
from ..config import TargetKind
from ..context import Capture, Paths
from ..errors import CommandFailed, ConfigError, KdumpError
from ..targets.local import FilesystemTarget, RunningRoot
from ..targets.netspec import parse_nfs_spec
from ..targets.nfs import NfsTarget
from ..targets.raw import RawTarget
from ..targets.registry import destination_for
from ..targets.sshdest import SshDestination, parse_spec
from . import mount

log = logging.getLogger("kdump-agent")
_Parsed = TypeVar("_Parsed")

MODPROBE_SECONDS = 30.0
SSH_NEEDS_MAKEDUMPFILE = ("an ssh target needs makedumpfile as core_collector: its flattened (-F) "
                          "stream is rebuilt into a vmcore on the server")


def load_config(capture: Capture) -> str:
    """Parse the config packed into the initramfs and resolve the dump target.

    Errors are logged one per line with file and line before the step fails, so the
    console shows exactly what to fix even though the machine is about to reboot.
    """
    try:
        loaded = kdump_config.load(capture.paths.config)
    except kdump_config.ConfigErrors as errors:
        for error in errors.errors:
            log.error("%s", error)
        raise
    capture.config = loaded
    for notice in loaded.notices:
        log.warning("%s:%d: %s", loaded.source, notice.line, notice.message)
    if capture.from_rootfs:
        # The seed's steps 12-13: the root's kdump service saves the dump to `path` here.
        capture.destination = RunningRoot(loaded.path, mount.ROOT)
        return f"running from the root file system: saving to {loaded.path}"
    capture.destination = destination_for(resolve_target(loaded, capture.paths))
    if not capture.destination.uses_ssh:
        unpacked.release_ssh_libraries()
    load_extra_modules(loaded.extra_modules)
    return f"target {capture.destination.describe()}"


def load_extra_modules(modules: tuple[str, ...]) -> None:
    """Load extra_modules (mkinitrd packed them); one that fails to load is reported and the
    dump goes on, since the target may not need it after all."""
    for module in modules:
        try:
            system.run(["modprobe", module], timeout=MODPROBE_SECONDS)
        except CommandFailed as error:
            log.warning("extra_modules: %s", error)


def resolve_target(loaded: kdump_config.Config,
                   paths: Paths) -> FilesystemTarget | RawTarget | NfsTarget | SshDestination:
    """The configured target, or (no target line) the file system mkinitrd recorded."""
    target = loaded.target
    if target is None:
        try:
            return FilesystemTarget.from_json(Path(paths.recorded_target).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as error:
            raise KdumpError(
                f"{loaded.source}: no dump target configured and none recorded by mkinitrd "
                f"({paths.recorded_target}: {error})"
            ) from error
    if target.kind is TargetKind.RAW:
        require_makedumpfile(loaded, target, "a raw target needs makedumpfile as core_collector: "
                                             "restore-raw reads its flattened (-F) output back")
        return RawTarget(device=target.spec)
    if target.kind is TargetKind.NFS:
        parsed(loaded, target, parse_nfs_spec)
        return NfsTarget(spec=target.spec, fstype=target.fstype or "nfs", directory=loaded.path)
    if target.kind is TargetKind.SSH:
        require_makedumpfile(loaded, target, SSH_NEEDS_MAKEDUMPFILE)
        return parsed(loaded, target, lambda spec: parse_spec(
            spec, directory=loaded.path, key_path=loaded.sshkey, known_hosts_path=paths.known_hosts))
    if target.kind is not TargetKind.FILESYSTEM or target.fstype is None:
        raise ConfigError(loaded.source, target.line,
                          f"{target.kind.value} targets are not supported by this version")
    return FilesystemTarget(spec=target.spec, fstype=target.fstype, directory=loaded.path)


def parsed(loaded: kdump_config.Config, target: kdump_config.Target,
           parse: Callable[[str], _Parsed]) -> _Parsed:
    """The target's spec through the parser check-config uses too (config.py), so the capture
    refuses exactly the specs check-config refuses, with the same message at the same line."""
    try:
        return parse(target.spec)
    except ValueError as error:
        raise ConfigError(loaded.source, target.line, kdump_config.printable(str(error))) from None


def require_makedumpfile(loaded: kdump_config.Config, target: kdump_config.Target, why: str) -> None:
    """Targets that take the collector's output as a stream of flattened records."""
    if os.path.basename(loaded.core_collector[0]) != "makedumpfile":
        raise ConfigError(loaded.source, target.line, why)
