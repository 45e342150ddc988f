"""Check the capture kernel's network parameters when it is loaded, not after a panic.

`ip=`, `bond=`, `vlan=`, `bridge=`, `ifname=` and `nameserver=` on the capture command
line (the running kernel's, passed on, or KDUMP_COMMANDLINE_APPEND) are read in the capture
kernel by the same parser (network.cmdline). A value it refuses, or a bond, VLAN or bridge
whose kernel module the image does not carry, would fail NETWORK_UP after the crash; `load`
says so first.
"""

from __future__ import annotations

from pathlib import Path

from ..errors import KdumpError
from ..network.cmdline import parse_cmdline
from ..network.plan import LINK_MODULES
from .imagefiles import image_file, image_paths

# What to add to kdump.conf when the image lacks a module the plan's links need.
MODULE_ADVICE = "add it to extra_modules in kdump.conf and rebuild (`kdump-agent mkinitrd`)"


def network_problems(cmdline: str, image: str) -> list[str]:
    """Why the capture kernel could not bring its network up as its command line says."""
    try:
        plan = parse_cmdline(cmdline)
    except KdumpError as error:
        return [f"the capture kernel's command line: {error}"]
    if plan is None or not plan.modules() or not Path(image).is_file():
        return []
    try:
        files = image_paths(Path(image))
    except KdumpError as error:
        return [f"cannot list {image} to check its network modules: {error}"]
    present = {_module_name(path) for path in files if ".ko" in path} | _builtin(Path(image), files)
    kinds = dict.fromkeys(link.kind for link in plan.links)
    return [f"the capture kernel's command line builds a {'VLAN' if kind == 'vlan' else kind} but {image} "
            f"has no {LINK_MODULES[kind]} module: {MODULE_ADVICE}"
            for kind in kinds if LINK_MODULES[kind] not in present]


def _module_name(path: str) -> str:
    """bonding for .../bonding.ko.xz; modprobe treats - and _ alike."""
    return Path(path).name.split(".ko")[0].replace("-", "_")


def _builtin(image: Path, files: set[str]) -> set[str]:
    """The modules built into the image's kernel (its modules.builtin): they need no file."""
    names: set[str] = set()
    for listing in (path for path in files if path.endswith("/modules.builtin")):
        text = image_file(image, listing.lstrip("/")) or ""
        names |= {_module_name(line) for line in text.split()}
    return names
