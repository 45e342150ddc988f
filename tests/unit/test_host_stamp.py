"""Rebuild detection: mkinitrd runs dracut only when an input of the image changed."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kdump_agent import config as kdump_config
from kdump_agent.errors import CommandFailed
from kdump_agent.host import mkinitrd as mk
from kdump_agent.host.hostpaths import HostPaths
from kdump_agent.host.stamp import config_changed, read_stamp, stamp_path, write_stamp

KVER = "6.1.0-56-cloud-amd64"


class Machine:
    """A config, an agent binary, a hook and a modules dir under tmp_path; dracut replaced."""

    def __init__(self, tmp_path: Path, mocker: Any) -> None:
        self.hook = tmp_path / "pre.sh"
        self.hook.write_text("#!/bin/sh\necho pre\n")
        self.conf = tmp_path / "kdump.conf"
        self.write_config("path /var/crash")
        self.binary = tmp_path / "kdump-agent"
        self.binary.write_bytes(b"agent v1")
        self.binary.chmod(0o755)
        self.kmoddir = tmp_path / "modules"
        self.kmoddir.mkdir()
        (self.kmoddir / "modules.dep").write_text("kernel/fs/ext4/ext4.ko:\n")
        self.image = tmp_path / "boot" / f"initramfs-{KVER}kdump.img"
        # The default collector, where module-setup.sh finds it: nothing to pack.
        mocker.patch.object(mk, "find_program", return_value="/usr/bin/makedumpfile")
        # The binary is a stand-in: test_programdir.py lays out real archives.
        mocker.patch.object(mk, "lay_out")
        self.dracut = mocker.patch("kdump_agent.system.run", side_effect=self._dracut)
        self.fail_dracut = False

    def write_config(self, extra: str) -> None:
        self.conf.write_text(f"ext4 UUID=abc\ndracut_args --no-hostonly\nkdump_pre {self.hook}\n{extra}\n")

    def _dracut(self, argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        if self.fail_dracut:
            raise CommandFailed(argv, 1, "dracut: cannot install kernel modules")
        Path(argv[-1]).write_bytes(b"image")
        return subprocess.CompletedProcess(argv, 0, b"", b"")

    def build(self, **options: Any) -> mk.BuildPlan:
        return mk.mkinitrd(kdump_config.load(str(self.conf)), output=self.image, binary=self.binary,
                           kver=KVER, kmoddir=str(self.kmoddir), **options)

    def changes(self) -> list[str]:
        return mk.image_changes(kdump_config.load(str(self.conf)), output=self.image, binary=self.binary,
                                kver=KVER, kmoddir=str(self.kmoddir))


@pytest.fixture
def machine(tmp_path: Path, mocker: Any) -> Machine:
    return Machine(tmp_path, mocker)


def test_first_build_writes_the_stamp_next_to_the_image_and_the_second_is_skipped(machine: Machine) -> None:
    first = machine.build()
    assert first.reasons == (f"{machine.image} does not exist",)
    stamp = json.loads(stamp_path(machine.image).read_text())
    assert stamp["inputs"]["kernel version"] == KVER
    assert any(label.startswith("kdump.conf ") for label in stamp["inputs"])
    assert f"packed file {machine.hook}" in stamp["inputs"]
    assert machine.build().skipped == "up to date"
    assert machine.dracut.call_count == 1
    assert machine.changes() == []


def test_an_edited_config_a_changed_hook_or_a_new_binary_rebuilds(machine: Machine) -> None:
    machine.build()
    machine.write_config("path /var/crash\nfailure_action shell")
    assert machine.changes() == [f"kdump.conf {machine.conf} changed"]
    machine.hook.write_text("#!/bin/sh\necho changed\n")
    machine.binary.write_bytes(b"agent v2")
    expected = [f"agent binary {machine.binary} changed", f"kdump.conf {machine.conf} changed",
                f"packed file {machine.hook} changed"]
    assert machine.changes() == expected
    assert machine.build().reasons == tuple(expected)
    assert machine.build().skipped == "up to date"
    assert machine.dracut.call_count == 2


def test_load_can_tell_the_config_changed_since_the_build(machine: Machine) -> None:
    machine.build()
    assert not config_changed(machine.image, str(machine.conf))
    machine.write_config("path /var/crash\nfinal_action poweroff")
    assert config_changed(machine.image, str(machine.conf))


def test_kernel_modules_updated_under_the_same_version_rebuild(machine: Machine) -> None:
    machine.build()
    (machine.kmoddir / "modules.dep").write_text("kernel/fs/ext4/ext4.ko: kernel/lib/crc16.ko\n")
    assert machine.changes() == [f"kernel modules {machine.kmoddir}/modules.dep changed"]


def test_force_and_force_rebuild_build_anyway(machine: Machine) -> None:
    machine.build()
    assert machine.build(force=True).reasons == ("--force was given",)
    machine.write_config("force_rebuild 1")
    assert machine.build().reasons == (f"force_rebuild is set in {machine.conf}",)
    assert machine.dracut.call_count == 3


def test_dry_run_says_why_and_builds_nothing(machine: Machine) -> None:
    plan = machine.build(dry_run=True)
    assert plan.skipped is None and plan.reasons == (f"{machine.image} does not exist",)
    machine.dracut.assert_not_called()


def test_a_failed_build_keeps_the_old_image_and_its_stamp_so_it_stays_current(machine: Machine) -> None:
    machine.build()
    before = (machine.image.read_bytes(), stamp_path(machine.image).read_text())
    machine.write_config("path /var/crash/other")
    machine.fail_dracut = True
    with pytest.raises(CommandFailed):
        machine.build()
    assert (machine.image.read_bytes(), stamp_path(machine.image).read_text()) == before
    assert sorted(p.name for p in machine.image.parent.iterdir()) == [machine.image.name,
                                                                       stamp_path(machine.image).name]
    machine.write_config("path /var/crash")  # back to what the old image was built from
    assert machine.changes() == []


def test_the_stamp_is_not_written_through_a_link_planted_at_a_temporary_name(machine: Machine,
                                                                              tmp_path: Path) -> None:
    victim = tmp_path / "victim"
    victim.write_text("precious\n")
    machine.image.parent.mkdir(parents=True)
    planted = stamp_path(machine.image).with_name(stamp_path(machine.image).name + ".tmp")
    planted.symlink_to(victim)
    write_stamp(machine.image, {"kernel version": KVER}, machine.binary)
    assert victim.read_text() == "precious\n"
    assert read_stamp(machine.image) == {"format": 1, "image": str(machine.image),
                                         "binary": str(machine.binary), "inputs": {"kernel version": KVER}}
    assert {p.name for p in machine.image.parent.iterdir()} == {planted.name, stamp_path(machine.image).name}


def test_default_output_is_boot_unless_boot_is_read_only(tmp_path: Path, mocker: Any) -> None:
    paths = HostPaths(boot_dir=str(tmp_path / "boot"), state_dir=str(tmp_path / "var-lib"))
    (tmp_path / "boot").mkdir()
    assert mk.default_output(KVER, paths) == tmp_path / "boot" / f"initramfs-{KVER}kdump.img"
    mocker.patch.object(mk, "writable_dir", return_value=False)
    assert mk.default_output(KVER, paths) == tmp_path / "var-lib" / f"initramfs-{KVER}kdump.img"
    (tmp_path / "boot" / f"initramfs-{KVER}kdump.img").write_bytes(b"image built while /boot was writable")
    assert mk.default_output(KVER, paths) == tmp_path / "boot" / f"initramfs-{KVER}kdump.img"
