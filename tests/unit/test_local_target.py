"""Finding and waiting for the target device."""

from pathlib import Path

import pytest

from kdump_agent.errors import MountError
from kdump_agent.targets import local
from kdump_agent.targets.local import FilesystemTarget, udev_link, wait_for_device


def test_udev_link_escapes_like_udev() -> None:
    assert udev_link("UUID=1234-abcd") == "/dev/disk/by-uuid/1234-abcd"
    assert udev_link("LABEL=my dump") == "/dev/disk/by-label/my\\x20dump"
    assert udev_link("/dev/vdb") is None


def test_device_path_is_found_when_it_exists(tmp_path: Path) -> None:
    device = tmp_path / "vdb"
    device.touch()
    assert wait_for_device(str(device), timeout=1) == str(device)


def test_device_that_never_appears_fails_at_the_deadline(mocker) -> None:  # type: ignore[no-untyped-def]
    mocker.patch.object(local, "find_device", return_value=None)
    now = [0.0]
    sleeps: list[float] = []

    def sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    with pytest.raises(MountError, match="UUID=abc did not appear within 3 s"):
        wait_for_device("UUID=abc", timeout=3, clock=lambda: now[0], sleep=sleep)
    assert sum(sleeps) == pytest.approx(3.0)


def test_device_appearing_late_is_used(mocker) -> None:  # type: ignore[no-untyped-def]
    mocker.patch.object(local, "find_device", side_effect=[None, None, "/dev/vdb"])
    mocker.patch("time.sleep")
    assert wait_for_device("LABEL=dump", timeout=10) == "/dev/vdb"


def test_blkid_fallback_when_udev_made_no_link(mocker) -> None:  # type: ignore[no-untyped-def]
    mocker.patch("os.path.exists", return_value=False)
    run = mocker.patch("kdump_agent.system.run")
    run.return_value.stdout = b"/dev/vdc\n"
    assert local.find_device("UUID=abc") == "/dev/vdc"
    assert run.call_args.args[0][:2] == ["blkid", "-c"]


def test_recorded_target_round_trips_through_json() -> None:
    target = FilesystemTarget(spec="UUID=abc", fstype="ext4", directory="/var/crash")
    assert FilesystemTarget.from_json(target.as_json()) == target
