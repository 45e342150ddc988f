"""A guest that runs one shell script with busybox and the guest kernel's network modules
(virtio_net, bonding, 8021q, bridge): proof that a harness.netlab topology carries what
the guest kernel builds, independent of the agent.

This host's kernel has no bonding or 8021q, so only a guest can put a real bond or a real
802.1Q header on the lab's wire. The initramfs is built once per kernel; each run appends
the caller's script as a second cpio archive. `/init` loads the modules, runs the script
with `sh -ex` and prints OK or FAILED, then powers off. A udhcpc script
(`/udhcpc.script`) puts a DHCPv4 lease on the interface.
"""

from __future__ import annotations

import functools
import gzip
from collections.abc import Callable, Sequence
from pathlib import Path

from .cache import cache_dir
from .cpio import Cpio
from .guest import BootResult, boot
from .kernels import Kernel, add_modules

OK = "NETGUEST-OK"
FAILED = "NETGUEST-FAILED"
BOOT_TIMEOUT_S = 180
MODULES = ("virtio_pci", "virtio_net", "bonding", "8021q", "bridge")

_INIT = """\
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do
    insmod "$m" || echo "NETGUEST: insmod $m failed"
done
if sh -ex /net.sh; then
    echo "{ok}"
else
    echo "{failed} rc=$?"
fi
poweroff -f
"""

_UDHCPC_SCRIPT = """\
#!/bin/sh
[ "$1" = bound ] || exit 0
ifconfig "$interface" "$ip" netmask "$subnet"
echo "NETGUEST: lease $ip on $interface"
"""


@functools.cache
def net_initrd(kernel: Kernel) -> Path:
    """The initramfs, cached by content (its name carries the key)."""
    archive = Cpio()
    archive.add_base_layout()
    archive.add_busybox()
    archive.add_file("udhcpc.script", _UDHCPC_SCRIPT.encode(), 0o755)
    modules = add_modules(archive, kernel, MODULES)
    archive.add_file("init", _INIT.format(modules=" ".join(modules), ok=OK, failed=FAILED).encode(),
                     0o755)
    name = f"net-tools-{kernel.kver}-{archive.digest()[:16]}.img"
    return archive.write_cached(cache_dir("initrds") / name)


def run_script(kernel: Kernel, script: str, *, log_path: Path, extra_args: Sequence[str] = (),
               prefix: Sequence[str] = (), progress: Callable[[str], None] | None = None,
               timeout_s: int = BOOT_TIMEOUT_S) -> BootResult:
    """Boot the guest (inside a lab's namespace with `prefix`, its NICs in `extra_args`) and
    run `script`; raise, with the console's tail, unless it ran to its end. `progress` sees
    each console line as it comes: a test acts on the guest's cue there (QMP set_link)."""
    overlay = Cpio()
    overlay.add_file("net.sh", script.encode(), 0o755)
    archive = overlay.archive()
    archive += b"\0" * (-len(archive) % 512)
    initrd = log_path.with_name(log_path.stem + "-initrd.img")
    initrd.parent.mkdir(parents=True, exist_ok=True)
    initrd.write_bytes(net_initrd(kernel).read_bytes() + gzip.compress(archive))
    try:
        result = boot(kernel, initrd, append="console=ttyS0 panic=-1 loglevel=7", memory_mib=256,
                      timeout_s=timeout_s, log_path=log_path, extra_args=extra_args,
                      prefix=prefix, progress=progress)
    finally:
        initrd.unlink()
    if OK not in result.console.splitlines():
        why = f"timed out after {timeout_s}s" if result.timed_out else "no " + OK
        raise RuntimeError(f"net guest script failed ({why}); console {log_path} ends:\n"
                           + result.tail(40))
    return result
