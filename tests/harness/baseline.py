"""A capture initramfs with no kdump-agent in it: busybox sh + makedumpfile.

It proves the harness on its own (a failure here is the harness's or the kernel's, never the
agent's), and it is the yardstick the agent is benchmarked against: the least a capture
initramfs can do, which is what RHEL's shell-script kdump boils down to on a local disk.
"""

from __future__ import annotations

import gzip
import shlex
from collections.abc import Sequence
from pathlib import Path

from .cpio import Cpio
from .kernels import Kernel, add_modules

MAKEDUMPFILE = Path("/usr/bin/makedumpfile")

# virtio_pci finds the disk, virtio_blk makes it /dev/vda; ext4 is built into Debian's cloud
# kernel today, and is listed so a kernel with it as a module still works.
BASELINE_MODULES = ("virtio_pci", "virtio_blk", "ext4")
DEFAULT_COLLECTOR = "makedumpfile -l -d 31"

_INIT = """\
#!/bin/sh
# Capture kernel: save the crashed kernel's log and a filtered dump to an ext4 disk.
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
echo "BASELINE: start uptime=$(cut -d' ' -f1 /proc/uptime)"
for m in {modules}; do
    insmod "$m" || echo "BASELINE: insmod $m failed"
done
i=0
while [ ! -b {device} ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
rc=0
if ! mount -t ext4 {device} /mnt; then
    echo "BASELINE: cannot mount {device}"
    rc=32
elif [ ! -e /proc/vmcore ]; then
    echo "BASELINE: no /proc/vmcore"
    rc=2
else
    makedumpfile --dump-dmesg /proc/vmcore /mnt/vmcore-dmesg.txt
    rc=$?
    echo "BASELINE: dmesg rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
    if [ $rc -eq 0 ]; then
        {collector} /proc/vmcore /mnt/vmcore
        rc=$?
    fi
    echo "BASELINE: vmcore rc=$rc uptime=$(cut -d' ' -f1 /proc/uptime)"
    sync
    if ! umount /mnt; then
        echo "BASELINE: umount failed"
        [ $rc -ne 0 ] || rc=16
    fi
fi
echo "BASELINE: done rc=$rc"
reboot -f
"""


def build_shell_capture_initrd(kernel: Kernel, out: Path, *, device: str = "/dev/vda",
                               collector: str = DEFAULT_COLLECTOR,
                               modules: Sequence[str] = BASELINE_MODULES) -> Path:
    """Build (or reuse, by content) the baseline capture initramfs at `out`.

    /init loads the virtio and ext4 modules with insmod in dependency order (resolved from
    modules.dep on the host), mounts `device` (ext4) at /mnt, runs
    `makedumpfile --dump-dmesg` then `<collector> /proc/vmcore /mnt/vmcore`, syncs, unmounts,
    prints `BASELINE: done rc=<rc>` and reboots (QEMU's -no-reboot turns that into an exit).
    `collector` is a command line whose first word must be makedumpfile, the only collector
    in the image; it lets a benchmark vary compression and dump level.
    """
    if shlex.split(collector)[0] != "makedumpfile":
        raise ValueError(f"the baseline image only carries makedumpfile: {collector!r}")
    archive = Cpio()
    archive.add_base_layout()
    archive.add_busybox()
    archive.add_binary(MAKEDUMPFILE)
    loaded = add_modules(archive, kernel, modules)
    init = _INIT.format(modules=" ".join(shlex.quote(m) for m in loaded),
                        device=shlex.quote(device), collector=collector)
    archive.add_file("init", init.encode(), 0o755)
    return archive.write_cached(out)


def with_ssh_server(initrd: Path, out: Path, *, server: str, port: int, directory: str,
                    key: Path, known_hosts: Path) -> Path:
    """The bench's SSH baseline image (bench/baseline-module/55kdump-baseline-ssh) with one
    run's server laid over it as /etc/baseline-ssh/: `target` (server, port, path, sourced
    by the hook), the client key `id` (0600, or ssh refuses it) and the pinned `known_hosts`.

    A second cpio archive after the first, so the dracut build is cached once for every
    run's sshd (its port and keys change each time).
    """
    for name, value in (("server", server), ("directory", directory)):
        if not value or any(c.isspace() or c in "'\"$`\\" for c in value):
            raise ValueError(f"{name} must be one word without quotes for the hook's shell: {value!r}")
    overlay = Cpio()
    overlay.add_dir("etc/baseline-ssh", 0o700)
    overlay.add_file("etc/baseline-ssh/target",
                     f"server={server}\nport={int(port)}\npath={directory}\n".encode())
    overlay.add_file("etc/baseline-ssh/id", key, 0o600)
    overlay.add_file("etc/baseline-ssh/known_hosts", known_hosts)
    archive = overlay.archive()
    archive += b"\0" * (-len(archive) % 512)
    out.write_bytes(initrd.read_bytes() + gzip.compress(archive))
    return out
