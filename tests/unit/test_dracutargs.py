"""dracut_args checked against dracut's options (issue 11): a dangling value option or a
positional word would make dracut overwrite the system's boot initramfs."""

from __future__ import annotations

import re
import shlex
from pathlib import Path

import pytest

from kdump_agent.config import ConfigErrors, parse
from kdump_agent.dracutargs import FLAG_OPTIONS, REFUSED, VALUE_OPTIONS, check_dracut_args

DRACUT = Path("/usr/bin/dracut")


@pytest.mark.parametrize("args", [
    '--no-hostonly --drivers "virtio_blk virtio_pci"',  # the README's and the e2e tests' line
    "--add lvm", "--hostonly", "-N", '--add-drivers "virtio_blk virtio_pci"', "--omit plymouth",
    "--install /usr/bin/lsblk", "--compress xz", "--compress=zstd", "--no-early-microcode",
    '--omit-drivers "cfg80211 snd" --add-drivers "ext2 ext3"',  # RHEL's template example
    "-a lvm -o plymouth -d virtio_blk -I /usr/bin/lsblk -L 3 -f -v -q -H -M -p",
    "--include /etc/kdump/extra /extra", "-i /etc/kdump/extra /extra", "--force --stdlog=4",
    "--no-host-only --kernel-cmdline 'rd.info'",
])
def test_dracut_args_dracut_reads_as_intended_are_valid(args: str) -> None:
    assert check_dracut_args(shlex.split(args)) == []
    assert parse(f"dracut_args {args}", "k").dracut_args == tuple(shlex.split(args))


@pytest.mark.parametrize(("args", "problem"), [
    # The review's case: dracut takes our output path as the value, writes /boot/initrd.img-<kver>.
    ("--no-hostonly --add-drivers", ("'--add-drivers' needs a value and is the last word: dracut would "
                                     "take the output image as its value and overwrite the system's "
                                     "initramfs")),
    ("-a", "'-a' needs a value and is the last word"),
    ("--compress", "'--compress' needs a value and is the last word"),
    ("--add --hostonly", "'--add' needs a value, but is followed by the option '--hostonly'"),
    ("--add=", "'--add' needs a value after '='"),
    ("--hostonly yes", ("'yes' is not an option (after '--hostonly', which takes no value): dracut would "
                       "take it as the output image or kernel version")),
    ("/tmp/initrd.img", "'/tmp/initrd.img' is not an option: dracut would take it as the output image"),
    ("--add lvm 5.14.0", "'5.14.0' is not an option"),
    ("--", "'--' ends dracut's options"),
    ("--force=yes", "'--force' takes no value (remove '=yes')"),
    ("-Nf", "'-Nf': write each short option as its own word"),
    ("-alvm", "'-alvm': write each short option as its own word"),
    ("--add-dr virtio", "'--add-dr' is not a dracut option (did you mean '--add"),
    ("--frobnicate", "'--frobnicate' is not a dracut option"),
    ("--include /a", "'--include' needs two values, SOURCE and TARGET"),
    ("--include=/a", "write '--include SOURCE TARGET' as three words"),
    ("--kver 5.14.0", "'--kver' is not allowed in dracut_args: kdump-agent mkinitrd sets it"),
    ("--kver=5.14.0", "'--kver' (in '--kver=5.14.0') is not allowed"),
    ("-k /lib/modules/x", "'-k' is not allowed in dracut_args"),
    ("--uefi", "kexec cannot load"),
    ("--kernel-image /boot/vmlinuz", "kexec cannot load"),
    ("--regenerate-all", "rebuild every kernel's boot initramfs"),
    ("--rebuild /boot/initrd.img", "rebuild another image"),
    ("--print-cmdline", "build no initramfs"),
    ("--list-modules", "build no initramfs"),
    ("-h", "build no initramfs"),
    ("--version", "build no initramfs"),
    ("--noimageifnotneeded", "write no initramfs at all"),
    ("--no-kernel", "only part of the initramfs"),
    ("-l", "modules of the current directory"),
    ("--sysroot /mnt", "another root"),
    ("-c /etc/other.conf", "configuration file"),
    ("--prefix /run", "below another directory"),
])
def test_dracut_args_that_change_what_dracut_writes_are_refused(args: str, problem: str) -> None:
    (found,) = check_dracut_args(shlex.split(args))
    assert problem in found
    with pytest.raises(ConfigErrors) as caught:
        parse(f"# 1\ndracut_args {args}", "kdump.conf")
    (error,) = caught.value.errors
    assert error.line == 2 and error.message == f"dracut_args: {found}"


def test_every_problem_is_reported_at_once() -> None:
    assert len(check_dracut_args(["--kver", "x", "--frob", "y", "--add"])) == 3


def test_the_tables_do_not_overlap() -> None:
    assert not VALUE_OPTIONS & FLAG_OPTIONS
    assert not (VALUE_OPTIONS | FLAG_OPTIONS) & set(REFUSED)


@pytest.mark.skipif(not DRACUT.exists(), reason="dracut is not installed")
def test_the_tables_name_every_long_option_of_the_installed_dracut() -> None:
    """A dracut that gains or drops an option shows here, so the table is read again."""
    listed = set(re.findall(r"--long ([a-z0-9-]+:?)", DRACUT.read_text()))
    takes_value = {"--" + option[:-1] for option in listed if option.endswith(":")}
    flags = {"--" + option for option in listed if not option.endswith(":")}
    assert VALUE_OPTIONS <= takes_value and FLAG_OPTIONS <= flags
    assert takes_value | flags == VALUE_OPTIONS | FLAG_OPTIONS | set(REFUSED)
