"""A root file system on a virtio disk, for the capture kernel actions that leave the initramfs:
`mount_root_run_init` (mount the real root and run its init) and `dump_to_rootfs` (save the
dump on it).

The root is the smallest thing that boots like a distribution's: busybox init reading
/etc/inittab, which runs the test's /etc/rc. The image is made by `mkfs.ext4 -d` from a staging
tree, so nothing is mounted on the host and no loop device is involved; it is cached by content
like the initramfs images, and since a boot writes to the file system, a test boots a
`working_copy`, never the cached image itself.
"""

from __future__ import annotations

import hashlib
import os
import stat
import tempfile
from collections.abc import Mapping
from pathlib import Path

from .cache import locked
from .commands import log, run
from .cpio import Cpio

# Bump when the layout of the image changes in a way its inputs do not show.
_BUILDER_VERSION = "1"

# sysinit runs /etc/rc once and init waits for it; with no respawn or askfirst entry init
# then idles, so /etc/rc decides how the machine ends (poweroff -f, reboot -f).
INITTAB = "::sysinit:/etc/rc\n::ctrlaltdel:/sbin/reboot\n"


def build_root_fs(path: Path, *, uuid: str, label: str, size_mib: int, rc_script: str,
                  files: Mapping[str, Path | bytes] = {},
                  programs: Mapping[str, Path] = {}) -> Path:
    """Build (or reuse, by content) a raw ext4 image at `path` holding a busybox root.

    The root has busybox (static) with a link per applet, /sbin/init being busybox init;
    /etc/inittab running /etc/rc at sysinit; /etc/rc = `rc_script`, a sh script (`#!/bin/sh`
    is added when it has no `#!` line); /etc/passwd and /etc/group with root; /dev with
    console and null (what init and the kernel open before devtmpfs is mounted); /proc /sys
    /run /tmp /mnt /root; /var/crash with mode 0700, kdump's default path.

    `files` maps absolute guest paths to their content: bytes (mode 0644) or a host file,
    copied through symlinks with its permission bits. `programs` maps absolute guest paths to
    host executables, installed with every shared library ldd names, at the host's paths.
    ldd cannot see what a program dlopen()s: for the PyInstaller binary add libm.so.6
    through `files`, as the dracut module does. Both are laid over the layout above, so they
    may replace any of it (a different /etc/inittab, say).

    The file system gets `uuid` and `label` (so `root=UUID=...` and `LABEL=...` resolve) and
    `size_mib`. Building needs root: device nodes, and files owned by 0:0 in the image.
    """
    tree = Cpio()
    tree.add_base_layout()
    tree.add_busybox()
    tree.add_dir("var/crash", 0o700)
    tree.add_file("etc/passwd", b"root:x:0:0:root:/root:/bin/sh\n")
    tree.add_file("etc/group", b"root:x:0:\n")
    tree.add_file("etc/inittab", INITTAB.encode())
    if not rc_script.startswith("#!"):
        rc_script = "#!/bin/sh\n" + rc_script
    tree.add_file("etc/rc", rc_script.encode(), 0o755)
    for dest, host in programs.items():
        tree.add_binary(host, dest)
    for dest, content in files.items():
        mode = stat.S_IMODE(content.stat().st_mode) if isinstance(content, Path) else 0o644
        tree.add_file(dest, content, mode)

    key = hashlib.sha256(f"{_BUILDER_VERSION}\0{uuid}\0{label}\0{size_mib}\0{tree.digest()}"
                         .encode()).hexdigest()
    stamp = path.with_name(path.name + ".key")
    with locked(path.with_name(path.name + ".lock")):
        if path.is_file() and stamp.is_file() and stamp.read_text().strip() == key:
            return path
        log(f"building {path}")
        stamp.unlink(missing_ok=True)  # never a stale key next to a half-replaced image
        with tempfile.TemporaryDirectory(prefix=f".{path.name}.", dir=path.parent) as tmp:
            staging = Path(tmp) / "root"
            staging.mkdir()
            os.chmod(staging, 0o755)  # mkfs copies it as the root directory, mode included
            tree.stage(staging)
            image = Path(tmp) / "image"
            with open(image, "wb") as fd:
                fd.truncate(size_mib * 1024 * 1024)
            run(["mkfs.ext4", "-F", "-q", "-U", uuid, "-L", label, "-d", staging, image])
            image.replace(path)
        stamp.write_text(key + "\n")
    return path


def working_copy(image: Path, dest: Path) -> Path:
    """A copy of the cached `image` for one boot to write to; sparse, so cheap."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    run(["cp", "--sparse=always", image, dest])
    return dest

