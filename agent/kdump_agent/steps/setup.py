"""LOAD_CONFIG: read kdump.conf and decide where the dump goes."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from .. import config as kdump_config
from .. import system
from ..config import TargetKind
from ..context import Capture
from ..errors import CommandFailed, ConfigError, KdumpError
from ..targets.local import FilesystemTarget
from ..targets.raw import RawTarget

log = logging.getLogger("kdump-agent")

MODPROBE_SECONDS = 30.0


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
        capture.target = FilesystemTarget(spec="/", fstype="rootfs", directory=loaded.path)
        return f"running from the root file system: saving to {loaded.path}"
    capture.target = resolve_target(loaded, capture.paths.recorded_target)
    load_extra_modules(loaded.extra_modules)
    if isinstance(capture.target, RawTarget):
        return f"target raw {capture.target.device}"
    return f"target {capture.target.fstype} {capture.target.spec}, path {capture.target.directory}"


def load_extra_modules(modules: tuple[str, ...]) -> None:
    """Load extra_modules (mkinitrd packed them); one that fails to load is reported and the
    dump goes on, since the target may not need it after all."""
    for module in modules:
        try:
            system.run(["modprobe", module], timeout=MODPROBE_SECONDS)
        except CommandFailed as error:
            log.warning("extra_modules: %s", error)


def resolve_target(loaded: kdump_config.Config, recorded_path: str) -> FilesystemTarget | RawTarget:
    """The configured file-system target, or (no target line) the one mkinitrd recorded."""
    target = loaded.target
    if target is None:
        try:
            return FilesystemTarget.from_json(Path(recorded_path).read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError) as error:
            raise KdumpError(
                f"{loaded.source}: no dump target configured and none recorded by mkinitrd "
                f"({recorded_path}: {error})"
            ) from error
    if target.kind is TargetKind.RAW:
        if os.path.basename(loaded.core_collector[0]) != "makedumpfile":
            raise ConfigError(loaded.source, target.line,
                              "a raw target needs makedumpfile as core_collector: restore-raw "
                              "reads its flattened (-F) output back")
        return RawTarget(device=target.spec)
    if target.kind is not TargetKind.FILESYSTEM or target.fstype is None:
        raise ConfigError(loaded.source, target.line,
                          f"{target.kind.value} targets are not supported by this version")
    return FilesystemTarget(spec=target.spec, fstype=target.fstype, directory=loaded.path)
