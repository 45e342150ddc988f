"""The harness pieces the failure actions need, proven without kdump-agent.

- An interactive serial console: the `shell` action leaves the admin at a prompt, so a test
  must wait for it, type, and read the answer.
- A root file system on a virtio disk: `mount_root_run_init` and `dump_to_rootfs` need one.
  Here the first kernel's initramfs switches into it and its /etc/rc leaves a file behind.
"""

from __future__ import annotations

import re
import stat
import uuid
from pathlib import Path

import pytest

from harness.commands import run
from harness.cpio import Cpio
from harness.disks import extract, read_tree
from harness.guest import ExpectTimeout, boot, boot_interactive
from harness.kernels import Kernel, add_modules
from harness.rootfs import build_root_fs, working_copy

CMDLINE = "console=ttyS0 panic=1"
BOOT_TIMEOUT_S = 300
PROMPT = "harness-shell# "

_SHELL_INIT = f"""\
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
export PS1='{PROMPT}'
# cttyhack opens the real console (ttyS0) as the controlling tty: /dev/console cannot be one.
setsid cttyhack sh
echo "HARNESS: shell exited"
poweroff -f
"""

_SWITCH_ROOT_INIT = """\
#!/bin/sh
export PATH=/sbin:/bin:/usr/sbin:/usr/bin
mount -t proc proc /proc
mount -t sysfs sysfs /sys
mount -t devtmpfs devtmpfs /dev
for m in {modules}; do
    insmod "$m" || echo "HARNESS: insmod $m failed"
done
i=0
while [ ! -b /dev/vda ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i + 1)); done
if ! mount -t ext4 /dev/vda /newroot; then
    echo "HARNESS: cannot mount /dev/vda"
    poweroff -f
fi
# What util-linux switch_root (dracut's) does and busybox's leaves to us.
for d in dev proc sys; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /sbin/init
"""

MARKER = "written by /etc/rc on the root file system\n"

_ROOT_RC = f"""\
echo "ROOTFS: rc runs as pid $$ under $(readlink /proc/1/exe), root is $(grep ' / ' /proc/mounts)"
printf '{MARKER.strip()}\\n' > /var/crash/marker
# No umount of / is possible; remounting it read-only writes the journal back, so the host
# reads the file with debugfs (which does not replay a journal).
sync
mount -o remount,ro /
echo "ROOTFS: done"
poweroff -f
"""


def _show_markers(line: str) -> None:
    """With `pytest -s`: our own markers, not the whole boot log."""
    if line.startswith(("HARNESS:", "ROOTFS:")) or "Kernel panic" in line:
        print(line, flush=True)


def _shell_initrd(kernel: Kernel, cache_dir: Path) -> Path:
    archive = Cpio()
    archive.add_base_layout()
    archive.add_busybox()
    archive.add_file("init", _SHELL_INIT.encode(), 0o755)
    return archive.write_cached(cache_dir / "initrds" / f"harness-shell-{kernel.kver}.img")


@pytest.mark.qemu
def test_console_answers_a_typed_command(kernel: Kernel, cache_dir: Path, tmp_path: Path,
                                        console_logs: list[Path]) -> None:
    log_path = tmp_path / "console.log"
    console_logs.append(log_path)

    with boot_interactive(kernel, _shell_initrd(kernel, cache_dir), append=CMDLINE,
                          timeout_s=BOOT_TIMEOUT_S, log_path=log_path,
                          progress=_show_markers) as console:
        console.expect(PROMPT, timeout=BOOT_TIMEOUT_S)
        console.sendline("echo hello-$((6*7))")
        # The tty echoes what was typed, "hello-$((6*7))", so only the shell's answer matches.
        assert console.expect(re.compile(r"hello-(\d+)"), timeout=60).group(1) == "42"
        console.expect(PROMPT, timeout=60)
        with pytest.raises(ExpectTimeout, match="not seen within 1s"):
            console.expect("never printed", timeout=1)
        console.sendline("poweroff -f")
        result = console.wait(timeout=120)

    assert not result.timed_out, result.tail()
    assert "hello-42" in result.console
    assert "echo hello-$((6*7))" in log_path.read_text(errors="replace")  # the guest's echo
    assert result.at(PROMPT) is not None


@pytest.mark.qemu
def test_console_hard_timeout_stops_qemu(kernel: Kernel, cache_dir: Path,
                                         tmp_path: Path, console_logs: list[Path]) -> None:
    log_path = tmp_path / "console.log"
    console_logs.append(log_path)

    with boot_interactive(kernel, _shell_initrd(kernel, cache_dir), append=CMDLINE,
                          timeout_s=3, log_path=log_path) as console:
        with pytest.raises(ExpectTimeout, match="hard timeout"):
            console.expect("never printed", timeout=BOOT_TIMEOUT_S)
        result = console.wait(timeout=10)

    assert result.timed_out
    assert result.seconds < 30


@pytest.mark.qemu
def test_switch_root_into_a_built_root_fs(kernel: Kernel, cache_dir: Path,
                                          tmp_path: Path, console_logs: list[Path]) -> None:
    images = cache_dir / "initrds"
    cached_root = build_root_fs(images / f"harness-root-{kernel.kver}.ext4",
                                uuid="5d1f1a86-5a0c-4a39-a1e4-7d1b6c3e2f00", label="harnessroot",
                                size_mib=64, rc_script=_ROOT_RC)
    root = working_copy(cached_root, tmp_path / "root.ext4")
    archive = Cpio()
    archive.add_base_layout()
    archive.add_busybox()
    archive.add_dir("newroot")
    loaded = add_modules(archive, kernel, ("virtio_pci", "virtio_blk", "ext4"))
    archive.add_file("init", _SWITCH_ROOT_INIT.format(modules=" ".join(loaded)).encode(), 0o755)
    initrd = archive.write_cached(images / f"harness-switch-root-{kernel.kver}.img")
    log_path = tmp_path / "console.log"
    console_logs.append(log_path)

    result = boot(kernel, initrd, append=CMDLINE, disks=[root], timeout_s=BOOT_TIMEOUT_S,
                  log_path=log_path, progress=_show_markers)

    assert not result.timed_out, f"guest still running after {BOOT_TIMEOUT_S}s"
    assert re.search(r"ROOTFS: rc runs as pid \d+ under /bin/busybox, root is /dev/vda / ext4",
                     result.console), result.tail()
    assert "ROOTFS: done" in result.console
    tree = read_tree(root)
    assert stat.S_IMODE(tree["/var/crash"].mode) == 0o700
    assert stat.S_ISREG(tree["/var/crash/marker"].mode), sorted(tree)
    marker = extract(root, "/var/crash/marker", tmp_path / "marker")
    assert marker.read_text() == MARKER
    assert "harnessroot" in run(["blkid", "-o", "value", "-s", "LABEL", cached_root]).stdout
    # The boot wrote to its copy only: the cached image is as built.
    assert "/var/crash/marker" not in read_tree(cached_root)


def test_root_fs_is_rebuilt_only_when_an_input_changes(tmp_path: Path) -> None:
    image = tmp_path / "root.ext4"
    fs_uuid = str(uuid.uuid4())

    def build(rc: str) -> int:
        build_root_fs(image, uuid=fs_uuid, label="r", size_mib=32, rc_script=rc,
                      files={"/etc/motd": b"hi\n"})
        return image.stat().st_ino  # a rebuild replaces the file

    first = build("echo one\n")
    assert build("echo one\n") == first
    assert build("echo two\n") != first
    tree = read_tree(image)
    assert stat.S_IMODE(tree["/etc/rc"].mode) == 0o755
    assert stat.S_ISLNK(tree["/sbin/init"].mode)
    assert extract(image, "/etc/rc", tmp_path / "rc").read_text() == "#!/bin/sh\necho two\n"
