"""The storage under a dump target: what stands between its file system and the disks.

mkinitrd finds the stack on the host (host/stack.py) and packs it as a record,
/etc/kdump-agent/storage.json; the capture kernel reads it and brings up exactly that
stack before it waits for the target's device, within the same disk_timeout, and touches
nothing else: the one LV, the one array, the one multipath map, the one iSCSI session.

A stack is a tuple of layers, bottom first, which is the order they come up in: an iSCSI
session, then a multipath map over its paths, an md array over disks, an LVM volume over
its physical volumes. Each kind of layer lives in its own module (storage/lvm.py, md.py,
multipath.py, iscsi.py) and is named in storage/kinds.py, the one place that maps a
record's `kind` to its class.
"""

from __future__ import annotations

import abc
import dataclasses
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from .. import system
from ..errors import CommandFailed, KdumpError, MountError

log = logging.getLogger("kdump-agent")

# Every device-mapper tool in the capture kernel makes its own device nodes: udev there has
# none of the dm, LVM or md rules (they would assemble whatever they see), so nothing else
# would, and a tool waiting for udev to confirm would wait for ever.
NO_UDEV_ENV = {"DM_DISABLE_UDEV": "1", "MDADM_NO_UDEV": "1", "LVM_SUPPRESS_FD_WARNINGS": "1"}
RETRY_SECONDS = 1.0  # between attempts while a layer's devices have not all appeared

L = TypeVar("L", bound="Layer")


class Layer(abc.ABC):
    """One layer of a stack: a record (a frozen dataclass) that can bring itself up."""

    kind: ClassVar[str]  # the record's "kind": "lvm", "md", "multipath", "iscsi"

    @abc.abstractmethod
    def describe(self) -> str:
        """How the admin names it: `LVM vgsys/root`, `md RAID1 /dev/md/crash (uuid ...)`."""

    @abc.abstractmethod
    def bring_up(self, give_up_at: float) -> str:
        """Make the layer's device appear, by time.monotonic() give_up_at; a journal note.
        Raises MountError naming the layer (its VG, array, WWID or portal) if it cannot."""

    def programs(self) -> tuple[str, ...]:
        """The programs the image must hold to bring it up (bare names or paths)."""
        return ()

    def modules(self) -> tuple[str, ...]:
        """Kernel modules it needs: packed into the image, loaded before it comes up."""
        return ()

    def node(self) -> str | None:
        """The device node the layer makes, if it is one the capture kernel can name."""
        return None

    def server(self) -> str | None:
        """The host NETWORK_UP must reach for this layer (an iSCSI portal), or None."""
        return None

    @property
    def generic(self) -> bool:
        """A layer of an image built for any machine (--no-hostonly): it brings up whatever
        it finds, so it is tried again while the target has not appeared."""
        return False

    def as_dict(self) -> dict[str, Any]:
        assert dataclasses.is_dataclass(self)
        return {"kind": self.kind, **dataclasses.asdict(self)}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Self:
        """The layer a record holds; a missing or unknown field is a ValueError."""
        assert dataclasses.is_dataclass(cls)
        names = {f.name for f in dataclasses.fields(cls)}
        given = {key: value for key, value in data.items() if key != "kind"}
        if set(given) - names:
            raise ValueError(f"{cls.kind} layer: unknown fields {sorted(set(given) - names)}")
        try:
            return cls(**given)
        except TypeError as error:
            raise ValueError(f"{cls.kind} layer: {error}") from error


@dataclass(frozen=True)
class Stack:
    """The layers under one file system (or raw device), bottom first; () for a plain disk."""

    layers: tuple[Layer, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.layers)

    def describe(self) -> str:
        return " on ".join(layer.describe() for layer in reversed(self.layers)) or "a plain disk"

    def programs(self) -> list[str]:
        return list(dict.fromkeys(program for layer in self.layers for program in layer.programs()))

    def modules(self) -> list[str]:
        return list(dict.fromkeys(module for layer in self.layers for module in layer.modules()))

    def node(self) -> str | None:
        """The node the top layer makes: where the target is when the admin's name for it
        (a udev link such as /dev/disk/by-id/dm-name-...) does not exist in the capture kernel."""
        return self.layers[-1].node() if self.layers else None

    def server(self) -> str | None:
        return next((found for layer in self.layers if (found := layer.server())), None)

    @property
    def generic(self) -> bool:
        return any(layer.generic for layer in self.layers)

    def bring_up_again(self, give_up_at: float) -> None:
        """The generic layers once more (devices that appeared since): errors only logged."""
        for layer in self.layers:
            if layer.generic:
                try:
                    layer.bring_up(give_up_at)
                except KdumpError as error:
                    log.info("storage: %s: %s", layer.describe(), error)

    def bring_up(self, give_up_at: float) -> list[str]:
        """Each layer in turn, bottom first; each with its time in the journal."""
        notes = []
        for layer in self.layers:
            started = time.monotonic()
            log.info("storage: bringing up %s", layer.describe())
            load_modules(layer.modules())
            note = layer.bring_up(give_up_at)
            took = time.monotonic() - started
            log.info("storage: %s is up in %.1f s: %s", layer.describe(), took, note)
            notes.append(f"{layer.describe()} up in {took:.1f} s")
        return notes


PLAIN_DISK = Stack()  # nothing between the file system and its disk


def retry_until(give_up_at: float, what: str, attempt: Callable[[float], str | None], *,
                clock: Callable[[], float] = time.monotonic,
                sleep: Callable[[float], None] = time.sleep) -> str:
    """Call attempt(seconds left) until it returns a note, or fail at give_up_at naming what
    did not come up and the last reason. attempt returns None (or raises CommandFailed) while
    the devices it needs have not appeared yet: disks are still being probed."""
    reason = "it never appeared"
    while True:
        left = give_up_at - clock()
        if left <= 0:
            raise MountError(f"{what} did not come up in time: {reason}")
        try:
            note = attempt(left)
        except CommandFailed as error:
            note, reason = None, str(error)
        if note is not None:
            return note
        sleep(min(RETRY_SECONDS, max(0.0, give_up_at - clock())))


def run_tool(argv: list[str], left: float) -> str:
    """A storage tool, without udev, bounded by the time left; its standard output."""
    result = system.run(argv, timeout=max(1.0, left), extra_env=NO_UDEV_ENV)
    return result.stdout.decode(errors="replace")


def load_modules(modules: tuple[str, ...]) -> None:
    """modprobe what a layer needs. A module that will not load is only logged: it may be
    built into the kernel, and the tool that needs it says what is missing."""
    if modules:
        result = system.run(["modprobe", "-a", *modules], timeout=30, check=False)
        if result.returncode != 0:
            log.warning("storage: modprobe %s exited %d", " ".join(modules), result.returncode)
