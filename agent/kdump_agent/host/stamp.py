"""What a capture initramfs was built from, kept next to it as `<image>.stamp`.

kdumpctl rebuilds when a file it depends on is newer than the image. Comparing contents
instead (sha256 of each input, and the records mkinitrd would write now) also catches
what a timestamp cannot: a target that moved to another disk, a DHCP lease that changed
the recorded route, a server whose host key was pinned anew, a kernel package rebuilt
under the same version. `mkinitrd` skips dracut when the stamp equals what it would build
now; `status` asks the same question. The stamp is removed just before a new image replaces
the old one and written after, so an image never passes for one built from other inputs;
a failed build leaves the old image and its stamp as they were.
"""

from __future__ import annotations

import hashlib
import json
import os
import shlex
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path

from ..system import file_sha256

STAMP_FORMAT = 1
STAMP_SUFFIX = ".stamp"
STAMP_MODE = 0o644  # hashes only; `status` reads it without root

# The environment mkinitrd gives dracut names the inputs: files packed as they are ...
_FILE_INPUTS = {"KDUMP_AGENT_CONF": "kdump.conf", "KDUMP_AGENT_BINARY": "agent binary",
                "KDUMP_AGENT_SSHKEY": "ssh key"}
# ... and records mkinitrd writes for this build (their content is what matters).
_RECORD_INPUTS = ("KDUMP_AGENT_TARGET", "KDUMP_AGENT_ROOTFS", "KDUMP_AGENT_NETWORK",
                  "KDUMP_AGENT_KNOWN_HOSTS", "KDUMP_AGENT_STORAGE")
_PACKED_LIST = "KDUMP_AGENT_INSTALL"  # extra_bins and hooks, one path a line


def stamp_path(image: Path) -> Path:
    """Where the stamp of image is kept."""
    return image.with_name(image.name + STAMP_SUFFIX)


def tree_digest(root: Path) -> str:
    """sha256 over the names and contents of every file under root (our dracut module)."""
    digest = hashlib.sha256()
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + file_sha256(path).encode())
    return digest.hexdigest()


def describe(argv: Sequence[str], env: Mapping[str, str], *, kver: str, modules_dep: Path | None,
             module_dir: Path) -> dict[str, str]:
    """The inputs of a build, each labelled the way a rebuild's reason names it."""
    inputs = {"kernel version": kver, "dracut command": shlex.join(argv),
              "dracut module": tree_digest(module_dir)}
    for variable, label in _FILE_INPUTS.items():
        if env.get(variable):
            inputs[f"{label} {env[variable]}"] = file_sha256(env[variable])
    for packed in filter(None, env.get(_PACKED_LIST, "").split("\n")):
        inputs[f"packed file {packed}"] = file_sha256(packed)
    for variable in _RECORD_INPUTS:
        if env.get(variable):
            inputs[f"record {os.path.basename(env[variable])}"] = file_sha256(env[variable])
    if modules_dep is not None and modules_dep.is_file():
        inputs[f"kernel modules {modules_dep}"] = file_sha256(modules_dep)
    return inputs


def changes(old: Mapping[str, object] | None, inputs: Mapping[str, str]) -> list[str]:
    """Why an image with stamp `old` differs from a build of `inputs`; [] when it does not."""
    if old is None:
        return ["it has no stamp (built by an older version, or its build did not finish)"]
    before = old.get("inputs")
    if old.get("format") != STAMP_FORMAT or not isinstance(before, dict):
        return ["its stamp is from another version"]
    reasons: list[str] = []
    for label in sorted(set(before) | set(inputs)):
        if label not in before:
            reasons.append(f"{label} is new")
        elif label not in inputs:
            reasons.append(f"{label} is no longer an input")
        elif before[label] != inputs[label]:
            reasons.append(f"{label} changed")
    return reasons


def read_stamp(image: Path) -> dict[str, object] | None:
    """The stamp of image, or None when there is none or it cannot be read."""
    try:
        loaded = json.loads(stamp_path(image).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return loaded if isinstance(loaded, dict) else None


def write_stamp(image: Path, inputs: Mapping[str, str], binary: Path) -> None:
    """Record a finished build: written to a new temporary file (mkstemp: never through a
    file or link already at some name), then renamed into place."""
    document = {"format": STAMP_FORMAT, "image": str(image), "binary": str(binary), "inputs": dict(inputs)}
    final = stamp_path(image)
    handle, partial = tempfile.mkstemp(prefix=f".{final.name}.", dir=final.parent)
    try:
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(json.dumps(document, indent=2) + "\n")
            out.flush()
            os.fchmod(out.fileno(), STAMP_MODE)
            os.fsync(out.fileno())
        os.replace(partial, final)
    except BaseException:
        Path(partial).unlink(missing_ok=True)
        raise


def remove_stamp(image: Path) -> None:
    """Forget what image was built from, just before a new build replaces it."""
    stamp_path(image).unlink(missing_ok=True)


def stamped_binary(image: Path) -> Path | None:
    """The agent binary image was built with, as its stamp records it."""
    stamp = read_stamp(image)
    binary = stamp.get("binary") if stamp else None
    return Path(binary) if isinstance(binary, str) else None


def config_changed(image: Path, config_path: str) -> bool:
    """Whether config_path differs from the copy image was built with (False when the
    stamp does not say, or the file is gone: nothing to compare)."""
    stamp = read_stamp(image)
    inputs = stamp.get("inputs") if stamp else None
    if not isinstance(inputs, dict) or not os.path.isfile(config_path):
        return False
    recorded = inputs.get(f"{_FILE_INPUTS['KDUMP_AGENT_CONF']} {os.path.realpath(config_path)}")
    return isinstance(recorded, str) and recorded != file_sha256(config_path)
