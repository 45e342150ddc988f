"""The iSCSI test target, proven from a real guest kernel without kdump-agent.

A busybox initramfs with Debian's iscsistart and the guest kernel's software initiator
(iscsi_tcp) brings up virtio-net on QEMU's user-mode network with a static address, logs
in to the host's tgtd through the gateway (10.0.2.2) with CHAP, waits for the LUN as
/dev/sda, mounts its ext4 and writes a file; the host then reads the file out of the
backing image. A wrong CHAP password must be refused: no disk appears and the image stays
byte for byte as it was. If this fails, every iSCSI target test would fail for the same
reason.

The initramfs is built once per kernel; the login command line (the port is new every run)
is a second cpio archive appended to it, which the kernel unpacks over the first.
"""

from __future__ import annotations

import gzip
import hashlib
import shlex
from collections.abc import Sequence
from pathlib import Path

import pytest

from harness.cpio import Cpio
from harness.disks import extract, make_disk, replay_journal
from harness.guest import BootResult, boot
from harness.iscsi_target import Chap, IscsiTarget, iscsi_target, iscsistart_argv
from harness.kernels import Kernel, add_modules
from harness.scenario import GUEST_ADDRESS, HOST_FROM_GUEST, USER_NETWORK

pytestmark = pytest.mark.qemu

CMDLINE = "console=ttyS0 panic=1"
BOOT_TIMEOUT_S = 240
ISCSISTART = Path("/usr/sbin/iscsistart")
MODULES = ["virtio_pci", "virtio_net", "iscsi_tcp", "libiscsi_tcp", "libiscsi",
           "scsi_transport_iscsi", "sd_mod"]
LUN_UUID = "5d1b9c3e-2a47-4f8e-b6c1-7e0a9d2f4c18"
CHAP = Chap("kdump", "secret-of-sixteen")
MARKER_FILE = "written-over-iscsi.txt"
MARKER_TEXT = "written by the guest over iSCSI"
LOGIN_FILE = "etc/iscsi-login"  # the overlay's one file: set -- iscsistart ...

_INIT = f"""\
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {{modules}}; do
    insmod "$m" || echo "ISCSI-TEST: insmod $m failed"
done
i=0
while [ ! -e /sys/class/net/eth0 ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
ip link set lo up
ip addr add {GUEST_ADDRESS}/24 dev eth0
ip link set eth0 up
ip route add default via {HOST_FROM_GUEST}
. /{LOGIN_FILE}
timeout 60 "$@"
rc=$?
echo "ISCSI-TEST: login rc=$rc"
# A session's LUN shows up within seconds; after a refused login look only briefly.
limit=150
[ $rc -eq 0 ] || limit=20
i=0
while [ ! -b /dev/sda ] && [ $i -lt $limit ]; do sleep 0.1; i=$((i + 1)); done
if [ -b /dev/sda ]; then
    echo "ISCSI-TEST: /dev/sda is" $(cat /sys/block/sda/device/vendor /sys/block/sda/device/model)
    if mount -t ext4 /dev/sda /mnt; then
        echo '{MARKER_TEXT}' > /mnt/{MARKER_FILE}
        echo "ISCSI-TEST: write rc=$?"
        umount /mnt
        echo "ISCSI-TEST: umount rc=$?"
    else
        echo "ISCSI-TEST: mount failed rc=$?"
    fi
    sync
else
    echo "ISCSI-TEST: no disk"
fi
echo "ISCSI-TEST: done"
poweroff -f
"""


def _show_markers(line: str) -> None:
    """With `pytest -s`: our own markers and the initiator's messages, not the whole boot."""
    if line.startswith("ISCSI-TEST:") or "iscsi" in line.lower() or "Kernel panic" in line:
        print(line, flush=True)


def _initrd(kernel: Kernel, cache_dir: Path) -> Path:
    archive = Cpio()
    archive.add_base_layout()
    archive.add_busybox()
    archive.add_binary(ISCSISTART, "usr/sbin/iscsistart")
    modules = add_modules(archive, kernel, MODULES)
    archive.add_file("init", _INIT.format(modules=" ".join(modules)).encode(), 0o755)
    return archive.write_cached(cache_dir / "initrds" / f"iscsi-harness-{kernel.kver}.img")


def _with_login(initrd: Path, login: Sequence[str], out: Path) -> Path:
    """`initrd` with /etc/iscsi-login laid over it: the command the guest logs in with."""
    overlay = Cpio()
    overlay.add_file(LOGIN_FILE, f"set -- {shlex.join(login)}\n".encode())
    out.write_bytes(initrd.read_bytes() + gzip.compress(overlay.archive()))
    return out


def _boot(kernel: Kernel, initrd: Path, target: IscsiTarget, login: Sequence[str],
          tmp_path: Path, console_logs: list[Path]) -> BootResult:
    log_path = tmp_path / "console.log"
    console_logs += [log_path, target.log_path]
    result = boot(kernel, _with_login(initrd, login, tmp_path / "initrd.img"), append=CMDLINE,
                  timeout_s=BOOT_TIMEOUT_S, log_path=log_path, extra_args=USER_NETWORK,
                  progress=_show_markers)
    assert not result.timed_out, f"guest still running after {BOOT_TIMEOUT_S}s"
    assert "ISCSI-TEST: done" in result.console, result.tail()
    return result


def _lun(tmp_path: Path) -> Path:
    return make_disk(tmp_path / "lun.img", 32, LUN_UUID, "iscsi-lun")


def test_guest_logs_in_with_chap_and_writes_to_the_lun(kernel: Kernel, cache_dir: Path,
                                                        tmp_path: Path, console_logs: list[Path]):
    initrd = _initrd(kernel, cache_dir)
    image = _lun(tmp_path)
    with iscsi_target(image, tmp_path / "tgt", chap=CHAP, only_initiator=True) as target:
        result = _boot(kernel, initrd, target, iscsistart_argv(target), tmp_path, console_logs)

    assert "ISCSI-TEST: login rc=0" in result.console, result.tail()
    assert "ISCSI-TEST: /dev/sda is IET VIRTUAL-DISK" in result.console, result.tail()
    assert "ISCSI-TEST: write rc=0" in result.console, result.tail()
    assert "ISCSI-TEST: umount rc=0" in result.console, result.tail()
    # tgtd has exited: what the guest wrote must be in the backing file itself.
    replay_journal(image)
    copied = extract(image, f"/{MARKER_FILE}", tmp_path / "read-back.txt")
    assert copied.read_text() == MARKER_TEXT + "\n"
    login, done = result.at("ISCSI-TEST: login rc="), result.at("ISCSI-TEST: done")
    print(f"boot {result.seconds:.1f}s; login -> done {(done or 0) - (login or 0):.1f}s")


def test_wrong_chap_password_is_refused_and_the_lun_untouched(kernel: Kernel, cache_dir: Path,
                                                              tmp_path: Path,
                                                              console_logs: list[Path]):
    initrd = _initrd(kernel, cache_dir)
    image = _lun(tmp_path)
    before = hashlib.sha256(image.read_bytes()).hexdigest()
    with iscsi_target(image, tmp_path / "tgt", chap=CHAP) as target:
        result = _boot(kernel, initrd, target, iscsistart_argv(target, "not-the-password"),
                       tmp_path, console_logs)

    assert "ISCSI-TEST: login rc=0" not in result.console, result.tail()
    assert "authorization failure" in result.console, result.tail()
    assert "ISCSI-TEST: no disk" in result.console, result.tail()
    assert hashlib.sha256(image.read_bytes()).hexdigest() == before
