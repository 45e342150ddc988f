"""LOAD_CONFIG: read kdump.conf and decide where the dump goes."""

from __future__ import annotations

import dataclasses
import logging
from pathlib import Path

from .. import config as kdump_config
from .. import system, unpacked
from ..config import DumpTarget
from ..context import Capture, Paths
from ..errors import CommandFailed, KdumpError
from ..targets.local import FilesystemTarget, RunningRoot
from ..targets.registry import destination_for
from ..targets.sshdest import SshDestination
from . import mount

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


def resolve_target(loaded: kdump_config.Config, paths: Paths) -> DumpTarget:
    """The configured target (the host keys pinned where the image has them), or, with no
    target line, the file system mkinitrd recorded."""
    target = loaded.dump_target
    if isinstance(target, SshDestination):
        return dataclasses.replace(target, known_hosts_path=paths.known_hosts)
    if target is not None:
        return target
    try:
        return FilesystemTarget.from_json(Path(paths.recorded_target).read_text(encoding="utf-8"))
    except (OSError, ValueError, KeyError) as error:
        raise KdumpError(
            f"{loaded.source}: no dump target configured and none recorded by mkinitrd "
            f"({paths.recorded_target}: {error})"
        ) from error
