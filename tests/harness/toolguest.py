"""A guest that runs one shell script with the storage tools at hand: how the harness makes
and reads LVM, md RAID and multipath stacks, which this host's kernel (no device-mapper, no
md) cannot.

The tool initramfs (busybox, lvm, dmsetup, mdadm, mke2fs, sfdisk, thin_check, blkid and the
guest kernel's storage modules) is built once per kernel; each run appends the caller's
script as a second cpio archive, so a new script costs no rebuild. No udevd runs there: lvm
and libdevmapper make their own device nodes (DM_DISABLE_UDEV=1 and the lvm.conf below), and
mdadm its /dev/md/ links (MDADM_NO_UDEV=1).
"""

from __future__ import annotations

import functools
import gzip
import string
from collections.abc import Sequence
from pathlib import Path

from .cache import cache_dir
from .cpio import Cpio
from .guest import BootResult, boot
from .kernels import Kernel, add_modules

OK = "STACK-OK"  # the script ran to its end without an error (sh -e)
FAILED = "STACK-FAILED"
BOOT_TIMEOUT_S = 180

# (host binary, path in the image): mkfs.ext4 and thin_check are links to multi-call
# binaries that look at the name they are called by, so they are packed under that name.
TOOLS = (
    (Path("/usr/sbin/lvm"), "usr/sbin/lvm"),
    (Path("/usr/sbin/dmsetup"), "usr/sbin/dmsetup"),
    (Path("/usr/sbin/mdadm"), "usr/sbin/mdadm"),
    (Path("/usr/sbin/mke2fs"), "usr/sbin/mkfs.ext4"),
    (Path("/usr/sbin/sfdisk"), "usr/sbin/sfdisk"),
    (Path("/usr/sbin/thin_check"), "usr/sbin/thin_check"),
    (Path("/usr/sbin/blkid"), "usr/sbin/blkid"),
)
MODULES = ("virtio_pci", "virtio_blk", "virtio_scsi", "sd_mod", "ext4", "md_mod", "raid1",
           "raid10", "raid456", "dm_mod", "dm_thin_pool", "dm_raid", "dm_multipath", "dm_round_robin")

# No udev: lvm must neither wait for it nor ask it which devices exist, and nothing may
# start dmeventd. Every VG on the attached disks is considered (no devices file).
LVM_CONF = """\
devices {
    obtain_device_list_from_udev = 0
    use_devicesfile = 0
    external_device_info_source = "none"
}
activation {
    udev_sync = 0
    udev_rules = 0
    monitoring = 0
}
global {
    event_activation = 0
}
"""

_INIT = """\
#!/bin/sh
# The harness's tool guest: run /stack.sh with the storage tools, then power off.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin DM_DISABLE_UDEV=1 MDADM_NO_UDEV=1
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
mkdir -p /run/lvm /run/lock/lvm /run/mdadm /dev/md
for m in {modules}; do
    insmod "$m" || echo "STACK: insmod $m failed"
done
for d in $(cat /stack-devices); do
    i=0
    while [ ! -b "$d" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
    [ -b "$d" ] || echo "STACK: $d never appeared"
done
if sh -ex /stack.sh; then
    sync
    echo "{ok}"
else
    echo "{failed} rc=$?"
fi
poweroff -f
"""


def disk_name(index: int) -> str:
    """The guest's name for the index-th virtio disk boot() attaches: /dev/vda, /dev/vdb..."""
    return f"/dev/vd{string.ascii_lowercase[index]}"


@functools.cache
def tool_initrd(kernel: Kernel) -> Path:
    """The tool initramfs, cached by content. Its /init waits for the block devices listed
    in /stack-devices, then runs /stack.sh: both come with each run (run_script).

    Its name carries its content key, so sessions running different versions of this
    module (two worktrees) each keep their own image instead of rebuilding one in turn."""
    archive = Cpio()
    archive.add_base_layout()
    archive.add_busybox()
    for host, dest in TOOLS:
        archive.add_binary(host, dest)
    archive.add_file("etc/lvm/lvm.conf", LVM_CONF.encode())
    modules = add_modules(archive, kernel, MODULES)
    init = _INIT.format(modules=" ".join(modules), ok=OK, failed=FAILED)
    archive.add_file("init", init.encode(), 0o755)
    name = f"stack-tools-{kernel.kver}-{archive.digest()[:16]}.img"
    return archive.write_cached(cache_dir("initrds") / name)


def tool_key(kernel: Kernel) -> str:
    """The content key of the tool initramfs: part of every cached stack's key, so that new
    tools or modules rebuild the stacks made with them."""
    return tool_initrd(kernel).name


def run_script(kernel: Kernel, script: str, *, disks: Sequence[Path], log_path: Path,
               wait_for: Sequence[str] = (), extra_args: Sequence[str] = (),
               timeout_s: int = BOOT_TIMEOUT_S) -> BootResult:
    """Boot the tool guest with `disks` attached as virtio disks (vda, vdb, ... in order) and
    run `script` with `sh -ex`; raise, with the console's tail, unless it ran to its end.

    `wait_for` are further device nodes to wait for (disks that `extra_args` attach); the
    virtio disks are waited for anyway.
    """
    devices = [disk_name(i) for i in range(len(disks))] + list(wait_for)
    base = tool_initrd(kernel)
    overlay = Cpio()
    overlay.add_file("stack.sh", script.encode(), 0o755)
    overlay.add_file("stack-devices", "".join(d + "\n" for d in devices).encode())
    archive = overlay.archive()
    archive += b"\0" * (-len(archive) % 512)
    initrd = log_path.with_name(log_path.stem + "-initrd.img")
    initrd.parent.mkdir(parents=True, exist_ok=True)
    initrd.write_bytes(base.read_bytes() + gzip.compress(archive))
    result = boot(kernel, initrd, append="console=ttyS0 panic=-1 quiet loglevel=4",
                  disks=disks, memory_mib=512, timeout_s=timeout_s, log_path=log_path,
                  extra_args=extra_args)
    initrd.unlink()
    if OK not in result.console.splitlines():
        why = f"timed out after {timeout_s}s" if result.timed_out else "no " + OK
        raise RuntimeError(f"tool guest script failed ({why}); console {log_path} ends:\n"
                           + result.tail(40))
    return result
