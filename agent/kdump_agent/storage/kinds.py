"""The one place that maps a stack record's `kind` to its layer class, and reads and writes
the record mkinitrd packs: /etc/kdump-agent/storage.json, one stack per role ("target": the
dump target's; "rootfs": the root file system's, for the failure actions that mount it)."""

from __future__ import annotations

import json
from typing import Any

from .base import Layer, Stack
from .iscsi import IscsiSession
from .lvm import LvmVolume
from .md import MdArray

KINDS: dict[str, type[Layer]] = {kind.kind: kind for kind in (IscsiSession, MdArray, LvmVolume)}
ROLES = ("target", "rootfs")


def layer_from_dict(data: dict[str, Any]) -> Layer:
    kind = KINDS.get(str(data.get("kind")))
    if kind is None:
        raise ValueError(f"unknown storage layer kind {data.get('kind')!r} (known: {', '.join(KINDS)})")
    return kind.from_dict(data)


def stacks_as_json(stacks: dict[str, Stack]) -> str:
    return json.dumps({role: [layer.as_dict() for layer in stack.layers]
                       for role, stack in stacks.items() if stack}, indent=1)


def stacks_from_json(text: str) -> dict[str, Stack]:
    """The record's stacks by role; a damaged record is a ValueError (the capture then fails
    the attach with it: guessing at a stack would touch disks that are not the target)."""
    data = json.loads(text)
    if not isinstance(data, dict):
        raise TypeError("storage record is not a JSON object")
    stacks = {}
    for role, layers in data.items():
        if role not in ROLES or not isinstance(layers, list):
            raise ValueError(f"storage record: unexpected entry {role!r}")
        stacks[role] = Stack(tuple(layer_from_dict(layer) for layer in layers))
    return stacks
