"""The NFS test server, proven from a real guest kernel without kdump-agent.

A busybox initramfs brings up virtio-net on QEMU's user-mode network, mounts the host's
ganesha through the gateway (10.0.2.2) with NFSv4.2 and writes a file, then does the same
with NFSv3, where the kernel asks rpcbind on port 111 for the MOUNT port. Both mounts go
through mount(2) with text options: Debian's busybox-static is built without
FEATURE_MOUNT_NFS, so `mount -t nfs*` only appends `addr=<server ip>` and leaves the rest to
the kernel. If this fails, every NFS target test would fail for the same reason.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from harness.cpio import Cpio
from harness.guest import boot
from harness.kernels import Kernel, add_modules
from harness.nfs_server import NfsServer, nfs_server  # noqa: F401 (a fixture, found by name)

CMDLINE = "console=ttyS0 panic=1"
BOOT_TIMEOUT_S = 300
NETWORK = ["-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0"]
MODULES = ["virtio_pci", "virtio_net", "nfsv3", "nfsv4"]
V4_TEXT = "written over NFSv4.2"
V3_TEXT = "written over NFSv3"

_INIT = """\
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do
    insmod "$m" || echo "NFS-TEST: insmod $m failed"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
ip link set eth0 up
ip addr add 10.0.2.15/24 dev eth0
ip route add default via 10.0.2.2

try() {{  # try <version> <file> <text> <mount arguments...>
    version=$1 file=$2 text=$3
    shift 3
    if mount "$@" 10.0.2.2:{export} /mnt; then
        echo "NFS-TEST: $version mounted: $(grep ' /mnt ' /proc/mounts)"
        echo "$text" > "/mnt/$file"
        echo "NFS-TEST: $version write rc=$?"
        umount /mnt
        echo "NFS-TEST: $version umount rc=$?"
    else
        echo "NFS-TEST: $version mount failed rc=$?"
    fi
}}
try v4 from-v4.txt '{v4_text}' -t nfs4 -o vers=4.2,clientaddr=10.0.2.15
try v3 from-v3.txt '{v3_text}' -t nfs -o vers=3,nolock,proto=tcp,mountproto=tcp
echo "NFS-TEST: done"
poweroff -f
"""


def _show_markers(line: str) -> None:
    """With `pytest -s`: our own markers, not the whole boot log."""
    if line.startswith("NFS-TEST:") or "Kernel panic" in line or "nfs:" in line:
        print(line, flush=True)


def _nfs_initrd(kernel: Kernel, cache_dir: Path, export_name: str) -> Path:
    archive = Cpio()
    archive.add_base_layout()
    archive.add_busybox()
    modules = add_modules(archive, kernel, MODULES)
    init = _INIT.format(modules=" ".join(modules), export=export_name, v4_text=V4_TEXT,
                        v3_text=V3_TEXT)
    archive.add_file("init", init.encode(), 0o755)
    return archive.write_cached(cache_dir / "initrds" / f"nfs-harness-{kernel.kver}.img")


@pytest.mark.qemu
def test_guest_mounts_the_export_over_nfs4_and_nfs3(kernel: Kernel, cache_dir: Path,
                                                    nfs_server: NfsServer,  # noqa: F811
                                                    tmp_path: Path, console_logs: list[Path]):
    print(f"ganesha serving after {nfs_server.start_seconds:.2f}s")
    initrd = _nfs_initrd(kernel, cache_dir, nfs_server.export_name)
    log_path = tmp_path / "console.log"
    console_logs.append(log_path)
    console_logs.append(nfs_server.log_path)

    result = boot(kernel, initrd, append=CMDLINE, timeout_s=BOOT_TIMEOUT_S,
                  log_path=log_path, extra_args=NETWORK, progress=_show_markers)

    assert not result.timed_out, f"guest still running after {BOOT_TIMEOUT_S}s"
    assert "NFS-TEST: done" in result.console, result.tail()
    assert "failed" not in "".join(line for line in result.console.splitlines()
                                   if line.startswith("NFS-TEST:")), result.tail()
    for version in ("v4", "v3"):
        assert f"NFS-TEST: {version} write rc=0" in result.console, result.tail()
        assert f"NFS-TEST: {version} umount rc=0" in result.console, result.tail()
    assert "vers=4.2" in result.console and "vers=3" in result.console, result.tail()
    assert (nfs_server.export_path / "from-v4.txt").read_text() == V4_TEXT + "\n"
    assert (nfs_server.export_path / "from-v3.txt").read_text() == V3_TEXT + "\n"
    # no_root_squash: the guest's root wrote as root, not as nobody.
    assert (nfs_server.export_path / "from-v4.txt").stat().st_uid == 0
    assert (nfs_server.export_path / "from-v3.txt").stat().st_uid == 0
    mounted, done = result.at("NFS-TEST: v4 mounted"), result.at("NFS-TEST: done")
    print(f"boot {result.seconds:.1f}s; first mount -> done {done - mounted:.1f}s")
