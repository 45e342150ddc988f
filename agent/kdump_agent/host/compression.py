"""How dracut compresses the capture initramfs: zstd where the capture kernel can unpack it.

While the kernel unpacks the image, the reservation holds at once the compressed image, the
files unpacked so far and the decompressor's window (the kernel's streaming zstd allocates a
workspace as large as the frame's window). That peak set the local floor: at 120M the
unpack ran out of memory with 32 MB written. So the size and the window both count, and a
fast decompressor shortens the capture kernel's boot. On this project's image (35.8 MB of
cpio): gzip -9 gives 16.0 MB (32 KiB window); dracut's `zstd -15` 14.8 MB with a 4 MiB
window; `zstd -19 --zstd=wlog=18` 14.2 MB with a 256 KiB window, 4.4 MB less at the peak and
as fast to unpack; xz is 13.2 MB but decompresses ten times slower. dracut's default is gzip,
which every kernel unpacks.

zstd is chosen only when nothing in dracut_args names a compression, the zstd program is
on this host, and the kernel's config says it unpacks zstd (CONFIG_RD_ZSTD=y: kernels
before 5.9, RHEL 8's among them, do not).
"""

from __future__ import annotations

import re
import shutil
from collections.abc import Sequence
from pathlib import Path

from .. import system

COMPRESSION_OPTIONS = frozenset({"--compress", "--gzip", "--bzip2", "--lzma", "--xz", "--lzo", "--lz4",
                                 "--zstd", "--no-compress"})
# dracut runs a `--compress` value that carries arguments as it is given.
ZSTD = ("--compress", "zstd -19 -q -T0 --zstd=wlog=18")


def admin_chose(dracut_args: Sequence[str]) -> bool:
    """Whether dracut_args already say how to compress (`--compress=xz` included)."""
    return any(word.split("=", 1)[0] in COMPRESSION_OPTIONS for word in dracut_args)


def kernel_config(kver: str, kmoddir: str | None, boot_dir: str = "/boot") -> Path | None:
    """The config the kernel was built with: /boot/config-<kver>, or, for a kernel package
    unpacked elsewhere (`--kmoddir <root>/lib/modules/<kver>`), <root>/boot/config-<kver>."""
    candidates = [Path(boot_dir) / f"config-{kver}"]
    if kmoddir:
        modules = Path(kmoddir)
        if len(modules.parents) >= 3:
            candidates.insert(0, modules.parents[2] / "boot" / f"config-{kver}")
    return next((path for path in candidates if path.is_file()), None)


def kernel_unpacks_zstd(config: Path | None) -> bool:
    """Whether the kernel built with this config unpacks a zstd initramfs."""
    if config is None:
        return False
    try:
        text = config.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return False
    return re.search(r"^CONFIG_RD_ZSTD=y$", text, re.MULTILINE) is not None


def compression_args(dracut_args: Sequence[str], kver: str, kmoddir: str | None) -> list[str]:
    """The options mkinitrd adds to dracut's argv: zstd with a small window, or nothing
    (dracut's default)."""
    if admin_chose(dracut_args) or shutil.which("zstd", path=system.CLEAN_PATH) is None:
        return []
    return list(ZSTD) if kernel_unpacks_zstd(kernel_config(kver, kmoddir)) else []
