"""LOAD_CONFIG: read kdump.conf and decide where the dump goes."""

from __future__ import annotations

import logging

from .. import config as kdump_config
from .. import system
from ..context import Capture
from ..errors import CommandFailed
from ..targets import registry
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
        capture.destination = registry.running_root(loaded.path, mount.ROOT)
        return f"running from the root file system: saving to {loaded.path}"
    capture.destination = registry.configured(loaded.dump_target, source=loaded.source,
                                              recorded_target=capture.paths.recorded_target,
                                              known_hosts=capture.paths.known_hosts,
                                              recorded_storage=capture.paths.recorded_storage)
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
