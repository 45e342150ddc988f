"""`start` / `stop`: the boot service's order, and staying armed when a rebuild fails."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdump_agent.config import parse
from kdump_agent.errors import CommandFailed, KdumpError
from kdump_agent.host import service
from kdump_agent.host.hostpaths import HostPaths
from kdump_agent.host.mkinitrd import BuildPlan
from kdump_agent.host.restore_raw import Outcome, RestoreResult

KVER = "6.1.0"


def host(tmp_path: Path, reserved: str = str(256 << 20)) -> HostPaths:
    (tmp_path / "boot").mkdir()
    (tmp_path / "kexec_crash_size").write_text(reserved + "\n")
    (tmp_path / "cmdline").write_text("root=/dev/sda1 console=ttyS0\n")
    return HostPaths(crash_size=str(tmp_path / "kexec_crash_size"), cmdline=str(tmp_path / "cmdline"),
                     boot_dir=str(tmp_path / "boot"), defaults=str(tmp_path / "none"),
                     state_dir=str(tmp_path / "state"), stat=str(tmp_path / "stat"),
                     boot_id=str(tmp_path / "boot_id"))


class Boot:
    """start's collaborators replaced, recording the order they run in."""

    def __init__(self, mocker: Any) -> None:
        self.order: list[str] = []
        self.restore = mocker.patch.object(service, "restore_raw", side_effect=self._restore)
        self.build = mocker.patch.object(service, "mkinitrd", side_effect=self._build)
        self.load = mocker.patch.object(service, "load", side_effect=self._load)

    def _restore(self, device: str, path: str) -> RestoreResult:
        self.order.append(f"restore {device} into {path}")
        return RestoreResult(Outcome.NOTHING, None, f"{device}: nothing to restore")

    def _build(self, config: Any, **kwargs: Any) -> BuildPlan:
        self.order.append("mkinitrd")
        kwargs["output"].write_bytes(b"image")
        return BuildPlan(argv=["dracut"], env={}, recorded_target=None, output=kwargs["output"])

    def _load(self, plan: Any, paths: HostPaths) -> str:
        self.order.append(f"load {plan.initrd}")
        return "kexec_file_load"


def test_start_restores_a_raw_dump_rebuilds_then_loads(tmp_path: Path, mocker: Any) -> None:
    boot = Boot(mocker)
    line = service.start(parse("raw /dev/vdc\npath /var/crash\n", "k"), host(tmp_path), kver=KVER)
    image = tmp_path / "boot" / f"initramfs-{KVER}kdump.img"
    assert boot.order == ["restore /dev/vdc into /var/crash", "mkinitrd", f"load {image}"]
    assert line.endswith(f"loaded (kexec_file_load) with {image} (rebuilt)")


def test_start_without_a_reservation_fails_loudly_and_touches_nothing(tmp_path: Path, mocker: Any) -> None:
    boot = Boot(mocker)
    with pytest.raises(KdumpError, match="no memory is reserved for a capture kernel"):
        service.start(parse("raw /dev/vdc\n", "k"), host(tmp_path, reserved="0"), kver=KVER)
    assert boot.order == []


def test_a_failed_rebuild_still_loads_the_previous_image_then_fails(tmp_path: Path, mocker: Any) -> None:
    boot = Boot(mocker)
    paths = host(tmp_path)
    image = tmp_path / "boot" / f"initramfs-{KVER}kdump.img"
    image.write_bytes(b"built last week")
    boot.build.side_effect = KdumpError("ssh kdump@dumps: cannot resolve dumps")
    with pytest.raises(KdumpError, match="loaded with the previous .* cannot resolve dumps"):
        service.start(parse("ssh kdump@dumps\n", "k"), paths, kver=KVER)
    assert boot.order == [f"load {image}"]


def test_a_failed_first_build_is_just_a_failure(tmp_path: Path, mocker: Any) -> None:
    boot = Boot(mocker)
    boot.build.side_effect = KdumpError("dracut exited 1")
    with pytest.raises(KdumpError, match="dracut exited 1"):
        service.start(parse("path /var/crash\n", "k"), host(tmp_path), kver=KVER)
    boot.load.assert_not_called()


def test_stop_twice_is_not_an_error(tmp_path: Path, mocker: Any) -> None:
    mocker.patch.object(service, "unload", side_effect=[True, False])
    assert service.stop(host(tmp_path)) == "kdump disarmed: capture kernel unloaded"
    assert service.stop(HostPaths()) == "no capture kernel was loaded: nothing to unload"


@pytest.mark.parametrize("failure", [
    KdumpError("the dump on /dev/vdc needs 900 MiB in /var/crash, which has 12 MiB free: make room there"),
    OSError(28, "No space left on device"),
    PermissionError(13, "Permission denied"),
    ValueError("a bug in restore-raw"),
])
def test_a_failed_restore_still_arms_kdump_then_reports_it(tmp_path: Path, mocker: Any,
                                                           failure: Exception) -> None:
    boot = Boot(mocker)
    boot.restore.side_effect = failure
    image = tmp_path / "boot" / f"initramfs-{KVER}kdump.img"
    with pytest.raises(KdumpError) as caught:
        service.start(parse("raw /dev/vdc\npath /var/crash\n", "k"), host(tmp_path), kver=KVER)
    assert boot.order == ["mkinitrd", f"load {image}"]
    message = str(caught.value)
    assert message.startswith("kdump armed: capture kernel ")
    bug = "ValueError: " if isinstance(failure, ValueError) else ""
    assert message.endswith(f"; but restore-raw /dev/vdc: {bug}{failure}")
    assert "\n" not in message


def test_an_incomplete_restore_still_arms_kdump_then_reports_it(tmp_path: Path, mocker: Any) -> None:
    boot = Boot(mocker)
    boot.restore.side_effect = None
    boot.restore.return_value = RestoreResult(Outcome.INCOMPLETE, tmp_path / "partial",
                                              "/dev/vdc: the dump is incomplete; /dev/vdc is left as it was")
    with pytest.raises(KdumpError, match=r"^kdump armed: .*; but /dev/vdc: the dump is incomplete"):
        service.start(parse("raw /dev/vdc\n", "k"), host(tmp_path), kver=KVER)
    assert boot.order[-2:] == ["mkinitrd", f"load {tmp_path / 'boot' / f'initramfs-{KVER}kdump.img'}"]


def test_a_failed_restore_and_a_failed_first_build_report_both(tmp_path: Path, mocker: Any) -> None:
    boot = Boot(mocker)
    boot.restore.side_effect = OSError(28, "No space left on device")
    boot.build.side_effect = KdumpError("dracut exited 1")
    with pytest.raises(KdumpError, match=r"^dracut exited 1; restore-raw /dev/vdc: .*No space left"):
        service.start(parse("raw /dev/vdc\n", "k"), host(tmp_path), kver=KVER)
    boot.load.assert_not_called()


@pytest.mark.parametrize("failure", [
    OSError(28, "No space left on device"),
    CommandFailed(["dracut"], 1, "dracut-install: failed"),
    RuntimeError("a bug in mkinitrd"),
])
def test_a_rebuild_failing_any_way_still_loads_the_previous_image(tmp_path: Path, mocker: Any,
                                                                  failure: Exception) -> None:
    boot = Boot(mocker)
    image = tmp_path / "boot" / f"initramfs-{KVER}kdump.img"
    paths = host(tmp_path)
    image.write_bytes(b"built last week")
    boot.build.side_effect = failure
    with pytest.raises(KdumpError, match=f"loaded with the previous {image}, ") as caught:
        service.start(parse("path /var/crash\n", "k"), paths, kver=KVER)
    assert str(caught.value).endswith(str(failure))
    assert boot.order == [f"load {image}"]
