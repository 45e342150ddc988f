"""Where the dumps are, and the one check that a dump is good.

Every QEMU case that expects a saved dump, `make demo` and `make bench` judge it by
`dump_problems`: the files a dump holds and nothing else (no `-incomplete` left), their
modes (0700 directory, 0600 files), the crashed kernel's log read back from the vmcore by
`makedumpfile --dump-dmesg` and saved beside it, both showing the panic, and a manifest
that says success. A case adds its own assertions on the manifest it gets back.
"""

from __future__ import annotations

import dataclasses
import json
import re
import stat
import subprocess
from pathlib import Path
from typing import Any

from kdump_agent.layout import DMESG, KEXEC_DMESG, MANIFEST, VMCORE

from .disks import FileInfo, extract, list_dir, read_tree

PANIC_MARK = "sysrq: Trigger a crash"  # what sysrq-c makes the crashed kernel log
DUMP_FILES = frozenset({VMCORE, DMESG, KEXEC_DMESG, MANIFEST})  # the agent's layout (layout.py)
MANIFEST = "kdump-agent.json"
DMESG_READ_BACK = "dmesg-from-vmcore.txt"  # what panic_problems leaves in its workdir
# A local dump's directory: <address>-<date>, 127.0.0.1 when the target is not on the network.
LOCAL_DUMP_DIR = re.compile(r"^(?P<path>.*/)?127\.0\.0\.1-\d{4}-\d\d-\d\d-\d\d:\d\d:\d\d$")


@dataclasses.dataclass(frozen=True)
class Dump:
    """One dump directory, wherever it was saved, and a copy of it on this host to read."""

    directory: str  # its path where it was saved (inside the target file system, or on the host)
    mode: int  # the directory's st_mode
    files: dict[str, FileInfo]  # name -> info, for every entry of the directory
    local_copy: Path  # the directory itself, or where it was extracted on this host


def find_dumps(disk: Path, dest: Path) -> list[Dump]:
    """Every local dump directory on the ext4 image `disk`, each extracted under dest."""
    tree = read_tree(disk)
    dumps = []
    for path in sorted(tree):
        if LOCAL_DUMP_DIR.match(path):
            dumps.append(dump_in_image(disk, path, dest / Path(path).name, tree[path].mode))
    return dumps


def dump_in_image(image: Path, directory: str, dest: Path, mode: int | None = None) -> Dump:
    """The dump directory `directory` of the ext4 `image`, extracted to dest."""
    if mode is None:
        parent, _, name = directory.rstrip("/").rpartition("/")
        mode = list_dir(image, parent or "/")[name].mode
    files = list_dir(image, directory)
    extract(image, directory, dest)
    return Dump(directory=directory, mode=mode, files=files, local_copy=dest)


def dump_on_host(directory: Path) -> Dump:
    """A dump directory on this host's file system (what a network target's server holds)."""
    files = {path.name: FileInfo(mode=(info := path.lstat()).st_mode, size=info.st_size)
             for path in sorted(directory.iterdir())}
    return Dump(directory=str(directory), mode=directory.stat().st_mode, files=files,
                local_copy=directory)


def dmesg_from_vmcore(vmcore: Path, out: Path) -> str:
    """The crashed kernel's log read back from a saved dump: proof the dump is usable."""
    subprocess.run(["makedumpfile", "--dump-dmesg", str(vmcore), str(out)], check=True,
                   timeout=120, stdout=subprocess.DEVNULL)
    return out.read_text(errors="replace")


def panic_problems(directory: Path, workdir: Path) -> list[str]:
    """What keeps `directory`'s vmcore from being a dump of the panic, in words; [] if it is
    one: the vmcore reads back with makedumpfile and its log shows PANIC_MARK, as does the
    vmcore-dmesg.txt saved beside it. This much holds for any capture, the agent's or not.
    The log read back is left in workdir/DMESG_READ_BACK."""
    vmcore, saved = directory / "vmcore", directory / "vmcore-dmesg.txt"
    if not vmcore.is_file():
        return [f"no vmcore in {directory}"]
    problems = []
    try:
        if PANIC_MARK not in dmesg_from_vmcore(vmcore, workdir / DMESG_READ_BACK):
            problems.append(f"the log read back from {vmcore} does not show {PANIC_MARK!r}")
    except subprocess.SubprocessError as error:
        problems.append(f"makedumpfile --dump-dmesg cannot read {vmcore}: {error}")
    if not saved.is_file() or PANIC_MARK not in saved.read_text(errors="replace"):
        problems.append(f"{saved} does not show {PANIC_MARK!r}")
    return problems


def dump_problems(dump: Dump, workdir: Path) -> list[str]:
    """What is wrong with a dump the agent saved, in words; [] for a good dump."""
    problems = []
    names = set(dump.files)
    if names != DUMP_FILES:
        problems.append(f"{dump.directory} holds {sorted(names)}, not {sorted(DUMP_FILES)}")
    problems += [f"{name} is left in {dump.directory}" for name in sorted(names)
                 if "-incomplete" in name]
    if stat.S_IMODE(dump.mode) != 0o700:
        problems.append(f"{dump.directory} has mode {oct(stat.S_IMODE(dump.mode))}, not 0o700")
    problems += [f"{name} has mode {oct(stat.S_IMODE(info.mode))}, not 0o600"
                 for name, info in sorted(dump.files.items()) if stat.S_IMODE(info.mode) != 0o600]
    problems += panic_problems(dump.local_copy, workdir)
    result = manifest_of(dump).get("result")
    if result != "success":
        problems.append(f"{MANIFEST} says result {result!r}, not 'success'")
    return problems


def manifest_of(dump: Dump) -> dict[str, Any]:
    """The dump's kdump-agent.json, or {} when there is none or it is not a JSON object."""
    try:
        manifest = json.loads((dump.local_copy / MANIFEST).read_text())
    except (OSError, ValueError):
        return {}
    return manifest if isinstance(manifest, dict) else {}


def assert_good_dump(dump: Dump, workdir: Path) -> dict[str, Any]:
    """Fail the test unless `dump` is good (see dump_problems); its manifest, for the case's
    own assertions."""
    problems = dump_problems(dump, workdir)
    assert not problems, "not a good dump:\n" + "\n".join(problems)
    return manifest_of(dump)
