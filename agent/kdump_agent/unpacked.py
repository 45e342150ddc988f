"""The one-file binary's unpack directory: give back what this capture will never load.

PyInstaller's one-file bootloader extracts every shared library the binary carries into
`$TMPDIR/_MEI*` before Python starts; in the capture kernel that directory is RAM. Which
libraries a capture needs is known once the config is read: a dump to a local disk never
imports paramiko, so it never loads cryptography's 11 MiB extension, PyNaCl, bcrypt or
cffi. Deleting those files returns their pages before the collector, the capture's one
big consumer of memory, starts. Nothing loads them afterwards: paramiko is imported only
on the SSH path (the ssh package, imported inside the steps that need it).
"""

from __future__ import annotations

import logging
import os
import sys

log = logging.getLogger("kdump-agent")

# Path prefixes (relative to the unpack directory) of what only the SSH path loads.
SSH_ONLY = ("cryptography/", "nacl/", "bcrypt/", "_cffi_backend.")


def release_ssh_libraries(root: str | None = None) -> int:
    """Delete the unpacked libraries only SSH targets load; returns the bytes freed.

    `root` is the unpack directory (default: this process's, when frozen). Failures only
    cost memory, so they are logged and skipped.
    """
    root = root or getattr(sys, "_MEIPASS", None)
    if root is None:
        return 0
    freed = 0
    for top, _, names in os.walk(root):
        for name in names:
            path = os.path.join(top, name)
            relative = os.path.relpath(path, root)
            if not relative.startswith(SSH_ONLY) or os.path.islink(path):
                continue
            try:
                size = os.path.getsize(path)
                os.unlink(path)
            except OSError as error:
                log.warning("could not release %s: %s", relative, error)
                continue
            freed += size
    if freed:
        log.info("released %.1f MiB of unpacked libraries this capture does not use", freed / (1 << 20))
    return freed
