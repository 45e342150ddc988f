"""The seed's operation flow after a failed dump, on a real panic: the kdump shell (step 15),
dump_to_rootfs, and mount_root_run_init (steps 10-14), each ending where the admin said.

Every case makes the dump fail the same way: the target's UUID is on no disk, and
disk_timeout is short. They share the standard mkinitrd image with their config (and the
record of the guest's root file system) laid over it.
"""

from __future__ import annotations

import re
import shutil
import uuid
from pathlib import Path

import pytest

from harness.cache import cache_dir
from harness.disks import make_disk, replay_journal
from harness.dumps import assert_good_dump, find_dumps
from harness.kernels import Kernel
from harness.rootfs import build_root_fs, working_copy
from harness.scenario import (
    BINARY,
    CAPTURE_IMAGES,
    STANDARD_UUID,
    filesystem_record,
    panic_and_capture,
    panic_interactive,
    standard_config,
    standard_initrd,
    with_config_overlay,
)

pytestmark = pytest.mark.qemu

MISSING = "UUID=0badc0de-0000-4000-8000-000000000000"
ROOT_UUID = "6a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d"


@pytest.fixture(scope="module")
def base_initrd(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return standard_initrd(kernel, tmp_path_factory.mktemp("actions-initrd"))


def failing(*lines: str) -> str:
    return standard_config(MISSING, "disk_timeout 3", *lines)


def test_shell_failure_action_gives_a_working_shell_then_final_action(
        kernel: Kernel, base_initrd: Path, tmp_path: Path, console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    initrd = with_config_overlay(base_initrd, failing("failure_action shell", "final_action poweroff"),
                                 tmp_path / "capture.img")
    with panic_interactive(kernel, initrd, [], tmp_path) as console:
        console.expect("This is the kdump shell", timeout=300)
        console.expect("kdump-shell# ", timeout=60)
        console.sendline("echo answer-$((6*7)) from $(cat /proc/sys/kernel/osrelease)")
        console.expect(re.compile(r"answer-42 from \S+cloud-amd64"), timeout=60)
        console.sendline("exit")
        result = console.wait(timeout=120)
    assert "the dump failed: MOUNT_TARGET failed" in result.console
    assert "final action: poweroff" in result.console
    assert "reboot: Power down" in result.console
    assert not result.timed_out


def test_dump_to_rootfs_saves_to_the_root_file_system_after_the_target_fails(
        kernel: Kernel, base_initrd: Path, tmp_path: Path, console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    root = make_disk(tmp_path / "root.img", 256, ROOT_UUID, "ROOT")
    initrd = with_config_overlay(
        base_initrd, failing("failure_action dump_to_rootfs", "final_action poweroff"),
        tmp_path / "capture.img", {"rootfs.json": filesystem_record(ROOT_UUID)})
    result = panic_and_capture(kernel, initrd, [root], tmp_path)
    assert "failure action: dump_to_rootfs" in result.console
    assert "final action: poweroff" in result.console
    replay_journal(root)
    (dump,) = find_dumps(root, tmp_path / "out")
    assert dump.directory.startswith("/var/crash/127.0.0.1-")
    manifest = assert_good_dump(dump, tmp_path)
    assert manifest["failure"]["state"] == "MOUNT_TARGET"
    assert manifest["action"] == "final_action poweroff"


ROOT_RC = """\
mount -t proc proc /proc 2>/dev/null
mount -t sysfs sysfs /sys 2>/dev/null
mount -t devtmpfs devtmpfs /dev 2>/dev/null
echo "ROOT-INIT: /sbin/init of the root file system is running"
if [ -e /proc/vmcore ]; then
    /usr/sbin/kdump-agent capture --from-rootfs
fi
echo "ROOT-INIT: kdump-agent returned; powering off"
poweroff -f
"""


@pytest.fixture(scope="module")
def root_image() -> Path:
    """A root file system whose init runs kdump-agent's service command, as our systemd
    unit does on a real system (ConditionPathExists=/proc/vmcore)."""
    libm = Path("/lib/x86_64-linux-gnu/libm.so.6")
    makedumpfile = Path(shutil.which("makedumpfile") or "")
    return build_root_fs(
        cache_dir(CAPTURE_IMAGES) / "root-fs.img", uuid=ROOT_UUID, label="ROOT", size_mib=256,
        rc_script=ROOT_RC,
        files={"/etc/kdump.conf": b"path /var/crash\nfinal_action reboot\n", str(libm): libm},
        programs={"/usr/sbin/kdump-agent": BINARY, "/usr/bin/makedumpfile": makedumpfile})


def test_mount_root_run_init_lets_the_root_init_save_the_dump_then_reboot(
        kernel: Kernel, base_initrd: Path, root_image: Path, tmp_path: Path,
        console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    root = working_copy(root_image, tmp_path / "root.img")
    initrd = with_config_overlay(base_initrd, failing("default mount_root_run_init"),
                                 tmp_path / "capture.img", {"rootfs.json": filesystem_record(ROOT_UUID)})
    result = panic_and_capture(kernel, initrd, [root], tmp_path)
    console = result.console
    assert "failure action: mount_root_run_init" in console
    assert "ROOT-INIT: /sbin/init of the root file system is running" in console
    assert "running from the root file system: saving to /var/crash" in console
    assert console.index("ROOT-INIT: /sbin/init") < console.index("final action: reboot")
    assert "reboot: Restarting system" in console
    replay_journal(root)
    (dump,) = find_dumps(root, tmp_path / "out")
    assert dump.directory.startswith("/var/crash/127.0.0.1-")
    assert_good_dump(dump, tmp_path)


@pytest.mark.parametrize("directive", ["default", "final_action"])
def test_halt_leaves_the_machine_halted(kernel: Kernel, base_initrd: Path, tmp_path: Path,
                                        console_logs: list[Path], directive: str) -> None:
    # As the failure action, the dump fails; as final_action, it succeeds first.
    console_logs.append(tmp_path / "console.log")
    text = failing("default halt") if directive == "default" else standard_config(
        f"UUID={STANDARD_UUID}", "final_action halt")
    initrd = with_config_overlay(base_initrd, text, tmp_path / "capture.img")
    disk = make_disk(tmp_path / "target.img", 256, STANDARD_UUID, "KDUMP")
    result = panic_and_capture(kernel, initrd, [disk], tmp_path,
                               until=lambda line: "reboot: System halted" in line)
    kind = "failure action" if directive == "default" else "final action"
    assert f"{kind}: halt" in result.console
    assert "reboot: System halted" in result.console
    assert "reboot: Restarting" not in result.console and "Power down" not in result.console
    assert len(find_dumps(disk, tmp_path / "out")) == (1 if directive == "final_action" else 0)


def test_mount_root_run_init_without_a_root_falls_through_to_final_action(
        kernel: Kernel, base_initrd: Path, tmp_path: Path, console_logs: list[Path]) -> None:
    console_logs.append(tmp_path / "console.log")
    initrd = with_config_overlay(
        base_initrd, failing("default mount_root_run_init", "final_action poweroff"),
        tmp_path / "capture.img", {"rootfs.json": filesystem_record(str(uuid.uuid4()))})
    result = panic_and_capture(kernel, initrd, [], tmp_path)
    assert "failure action: mount_root_run_init" in result.console
    assert "final action: poweroff" in result.console
    assert "reboot: Power down" in result.console
