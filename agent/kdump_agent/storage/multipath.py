"""A device-mapper multipath map under the dump target: one LUN reached through several paths.

The capture kernel sets up exactly the one map, by its WWID, and none of the others the
host has: it writes its own /etc/multipath.conf (the initramfs is a tmpfs) that blacklists
every WWID but the target's and names the map as the host does, then runs `multipath`
once, without multipathd and without udev. The WWID of each path is read from sysfs (VPD
page 0x83, `uid_attribute ""`), not from udev's database: udev in the capture kernel need
not have run scsi_id on the paths. Every path checker and prioritizer is set to the two
plugins the image holds (tur, const), so nothing else need be packed; a map with several
path groups still fails over. The SCSI device handlers attached to the host's paths
(`dh_state`: alua, rdac, emc) are packed and loaded, so that an active/passive array's
handler still switches path groups; only those, since a kernel may have none (CONFIG_SCSI_DH).

While paths are missing (disks are probed in parallel with our start) the map is not made
until all the host's paths are there, or COMPLETE_GRACE_SECONDS have passed: then it is
made with the ones there are, a path may be down. A partition on the map (kpartx) gets its
own map, named as on the host: Debian's `<map>-part1`, RHEL's `<map>1` or `<map>p1`.

The paths carry the very same data as the map, file system UUID included, and once the map
holds them they cannot be mounted: the target is looked for only among the map's devices
(`locate`).
"""

from __future__ import annotations

import os
import re
import shutil
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import ClassVar

from .. import system
from ..errors import KdumpError, MountError
from .base import Layer, retry_until, run_tool

COMPLETE_GRACE_SECONDS = 15.0
CONFIG = Path("/etc/multipath.conf")
CONFIG_DIR = Path("/etc/multipath/conf.d")  # multipath reads it after CONFIG: removed when CONFIG is ours
SYSFS = Path("/sys")
MAPPER = "/dev/mapper"  # libdevmapper makes the maps' nodes here, udev or not
# The plugins `multipath` dlopens for the checker and prioritizer CONFIG sets.
CHECKER, PRIORITIZER = "tur", "const"
PLUGINS = (f"libcheck{CHECKER}.so", f"libprio{PRIORITIZER}.so")
# Where distributions build multipath-tools to look for them (its compiled-in multipath_dir).
PLUGIN_DIRS = ("/lib/multipath", "/usr/lib/multipath", "/lib64/multipath", "/usr/lib64/multipath",
               "/lib/x86_64-linux-gnu/multipath", "/usr/lib/x86_64-linux-gnu/multipath")
MODULES = ("dm_mod", "dm_multipath", "dm_service_time")  # service-time: the path selector set below
# The kernel's scsi `wwid` attribute names the VPD 0x83 designator by type; multipath
# prefixes the same identifier with the type's number.
_DESIGNATOR_TYPES = {"naa.": "3", "eui.": "2", "t10.": "1"}
_MAP_UUID = re.compile(r"^(part\d+-)?mpath-")

OVERRIDES = (f'overrides {{\n\tpath_checker "{CHECKER}"\n\tdetect_checker "no"\n'
             f'\tprio "{PRIORITIZER}"\n\tdetect_prio "no"\n\tpath_selector "service-time 0"\n}}\n')


def config_for(wwid: str | None, name: str | None) -> str:
    """CONFIG for the one map `wwid` named `name`, or for a generic image (wwid None): any
    LUN seen through two paths or more becomes a map, named by its WWID. A WWID is word
    characters, '.', ':' and '-' (MultipathMap checks): only '.' means more in a regex."""
    defaults = ('defaults {\n\tuser_friendly_names "no"\n\tfind_multipaths "%s"\n'
                '\tuid_attribute ""\n\tqueue_without_daemon "no"\n}\n')
    if wwid is None:
        return defaults % "yes" + OVERRIDES
    return (defaults % "no"
            + 'blacklist {\n\twwid ".*"\n}\n'
            + f'blacklist_exceptions {{\n\twwid "^{wwid.replace(".", "[.]")}$"\n}}\n'
            + f'multipaths {{\n\tmultipath {{\n\t\twwid "{wwid}"\n\t\talias "{name or wwid}"\n\t}}\n}}\n'
            + OVERRIDES)


def plugin_paths() -> tuple[str, ...]:
    """The checker and prioritizer plugins on this host, to be packed at the same paths."""
    for directory in PLUGIN_DIRS:
        found = tuple(os.path.join(directory, plugin) for plugin in PLUGINS)
        if all(os.path.exists(path) for path in found):
            return found
    raise KdumpError(f"multipath's plugins {', '.join(PLUGINS)} are not on this host "
                     f"(looked in {', '.join(PLUGIN_DIRS)})")


def path_wwid(kernel_wwid: str) -> str:
    """multipath's WWID of a SCSI path from the kernel's `device/wwid` (naa.5000c5... ->
    35000c5...); the text unchanged when it names no designator type multipath knows."""
    text = kernel_wwid.strip()
    for prefix, number in _DESIGNATOR_TYPES.items():
        if text.startswith(prefix):
            return number + text.removeprefix(prefix)
    return text


def paths_with(wwid: str) -> list[str]:
    """The SCSI disks there now whose WWID is `wwid`."""
    found = []
    for disk in sorted((SYSFS / "block").glob("sd*")):
        attribute = disk / "device" / "wwid"
        try:
            if path_wwid(attribute.read_text(encoding="utf-8", errors="replace")) == wwid:
                found.append(disk.name)
        except OSError:
            continue
    return found


def sysfs_of(node: str) -> Path | None:
    """The sysfs directory of block device `node` (a /dev/mapper name is a node of its own,
    not a link to its dm-N), or None if there is no such device."""
    try:
        rdev = os.stat(node).st_rdev
    except OSError:
        return None
    found = SYSFS / "dev" / "block" / f"{os.major(rdev)}:{os.minor(rdev)}"
    return found if found.exists() else None


def is_map_device(node: str) -> bool:
    """Whether `node` is a multipath map or a kpartx partition of one."""
    where = sysfs_of(node)
    if where is None:
        return False
    uuid = where / "dm" / "uuid"
    return uuid.exists() and bool(_MAP_UUID.match(uuid.read_text(encoding="utf-8", errors="replace")))


def held(node: str) -> bool:
    """Whether something is built on `node` (a map holds it as a path)."""
    where = sysfs_of(node)
    return where is not None and (where / "holders").is_dir() and any((where / "holders").iterdir())


def devices_with(spec: str) -> list[str]:
    """Every device that carries spec (UUID=, LABEL=; a path is itself): the paths and the
    map all carry the same file system."""
    if spec.startswith("/"):
        return [spec] if os.path.exists(spec) else []
    found = system.run(["blkid", "-c", "/dev/null", "-o", "device", "-t", spec],
                       timeout=10, check=False, echo=False)
    return found.stdout.decode(errors="replace").split()


@dataclass(frozen=True)
class MultipathMap(Layer):
    """The map as the host has it: its WWID, its name (alias, mpathN or the WWID itself),
    the host's paths (sdX, for how many to wait for), the device handlers attached to them
    and, for a target on a partition of the map, the partition's map name. wwid None in a
    generic image (every LUN reached through more than one path gets a map, or the host's
    config packed by dracut decides)."""

    kind: ClassVar[str] = "multipath"
    shadows_members: ClassVar[bool] = True

    wwid: str | None
    name: str | None
    paths: tuple[str, ...] = field(default=())
    partition: str | None = None
    handlers: tuple[str, ...] = field(default=())  # scsi_dh_<name> for each

    def __post_init__(self) -> None:
        object.__setattr__(self, "paths", tuple(self.paths))
        object.__setattr__(self, "handlers", tuple(self.handlers))
        if any(not re.fullmatch(r"\w+", handler) for handler in self.handlers):
            raise ValueError(f"multipath layer: device handlers {list(self.handlers)!r}")
        if (self.wwid is None) != (self.name is None):
            raise ValueError("multipath layer: wwid and name are both given or both null")
        if self.wwid is not None and not re.fullmatch(r"[\w.:-]+", self.wwid):
            raise ValueError(f"multipath layer: {self.wwid!r} is not a WWID")
        if self.partition is not None and (
                self.name is None or not self.partition.startswith(self.name)
                or not re.fullmatch(r"\D*\d+", self.partition.removeprefix(self.name))):
            raise ValueError(f"multipath layer: partition {self.partition!r} is not a partition "
                             f"map of {self.name!r}")

    def describe(self) -> str:
        if self.wwid is None:
            return "multipath (every map found)"
        return f"multipath map {self.name} (WWID {self.wwid})"

    @property
    def generic(self) -> bool:
        return self.wwid is None

    def programs(self) -> tuple[str, ...]:
        return ("multipath", "kpartx", *plugin_paths())

    def modules(self) -> tuple[str, ...]:
        return (*MODULES, *(f"scsi_dh_{handler}" for handler in self.handlers))

    def node(self) -> str | None:
        made = self.partition or self.name
        return f"{MAPPER}/{made}" if made else None

    def locate(self, spec: str) -> str | None:
        """The target among the map's devices (module docstring). A generic image knows no
        map: the device that carries spec and is a map; after the grace period, one that
        no map holds (a LUN with a single path, which gets no map)."""
        node = self.node()
        if node is not None:
            return node if os.path.exists(node) else None
        candidates = devices_with(spec)
        maps = [device for device in candidates if is_map_device(device)]
        if maps:
            return maps[0]
        if _generic_since is not None and time.monotonic() - _generic_since >= COMPLETE_GRACE_SECONDS:
            return next((device for device in candidates if not held(device)), None)
        return None

    def bring_up(self, give_up_at: float) -> str:
        if self.wwid is None:
            return self._generic(give_up_at)
        wwid = self.wwid
        _write_config(config_for(wwid, self.name))
        started = time.monotonic()
        expected = max(1, len(self.paths))

        def attempt(left: float) -> str | None:
            present = paths_with(wwid)
            waited = time.monotonic() - started
            if len(present) < expected and waited < min(COMPLETE_GRACE_SECONDS, left / 2):
                return None
            run_tool(["multipath", "-v2", wwid], left)
            node = f"{MAPPER}/{self.name}"
            if not os.path.exists(node):
                return None
            note = f"{node} over {', '.join(self._map_paths(node)) or 'no path'}"
            if len(present) < len(self.paths):
                note += f" ({len(present)} of the host's {len(self.paths)} paths there)"
            if self.partition:
                note += "; " + self._partition_up(node, left)
            return note

        return retry_until(give_up_at, self.describe(), attempt)

    def _partition_up(self, node: str, left: float) -> str:
        assert self.partition is not None and self.name is not None
        delimiter = self.partition.removeprefix(self.name).rstrip("0123456789")
        run_tool(["kpartx", "-a", "-p", delimiter, node], left)
        partition = f"{MAPPER}/{self.partition}"
        if not os.path.exists(partition):
            raise MountError(f"{self.describe()}: kpartx made no {partition}")
        return f"partition {partition}"

    @staticmethod
    def _map_paths(node: str) -> list[str]:
        """The paths the kernel's map holds (its slaves)."""
        where = sysfs_of(node)
        slaves = where / "slaves" if where else None
        return sorted(p.name for p in slaves.iterdir()) if slaves and slaves.is_dir() else []

    def _generic(self, give_up_at: float) -> str:
        """Every map the config finds, and their partitions; the image's own config (the
        build host's, packed by dracut's multipath module) if it has one."""
        global _generic_since
        if _generic_since is None:
            _generic_since = time.monotonic()
            if not CONFIG.exists():
                _write_config(config_for(None, None))
        run_tool(["multipath", "-v2"], max(1.0, give_up_at - time.monotonic()))
        maps = sorted(device for device in Path(MAPPER).glob("*")
                      if is_map_device(str(device)) and not _partition_uuid(str(device)))
        for device in maps:
            run_tool(["kpartx", "-a", str(device)], max(1.0, give_up_at - time.monotonic()))
        return f"maps set up: {', '.join(device.name for device in maps) or 'none'}"


# When a generic image first ran multipath: its grace period for single paths runs from there.
_generic_since: float | None = None


def _partition_uuid(node: str) -> bool:
    where = sysfs_of(node)
    uuid = where / "dm" / "uuid" if where else None
    return bool(uuid and uuid.exists() and uuid.read_text(encoding="utf-8").startswith("part"))


def _write_config(text: str) -> None:
    """CONFIG, and no conf.d to add to it."""
    if CONFIG_DIR.is_dir():
        shutil.rmtree(CONFIG_DIR)
    CONFIG.write_text(text, encoding="utf-8")
