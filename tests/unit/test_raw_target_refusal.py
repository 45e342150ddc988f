"""mkinitrd refuses a raw target that is not an empty block device: a raw dump writes over it
from its first byte. blkid probes real image files; os.stat is told one is a block device."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from rawdevices import as_block_device, empty_image, ext4_image, partitioned_image

from kdump_agent.config import Config, parse
from kdump_agent.errors import KdumpError
from kdump_agent.host import mkinitrd as mk


def raw_config(device: Path) -> Config:
    """`raw <device>` on line 2, whatever the parser thinks of the path (`raw /dev/../etc/shadow`
    passes it): the refusal must not depend on it."""
    config = parse("path /var/crash\nraw /dev/sdc\n", "/etc/kdump.conf")
    assert config.target is not None
    return dataclasses.replace(config, target=dataclasses.replace(config.target, spec=str(device)))


def refuse(device: Path) -> None:
    mk.refuse_raw_with_filesystem(raw_config(device), str(device))


@pytest.mark.parametrize("make", [empty_image, ext4_image])
def test_a_raw_target_that_is_not_a_block_device_is_refused(tmp_path: Path,
                                                           make: Callable[[Path], Path]) -> None:
    device = make(tmp_path / "shadow")  # `raw /dev/../etc/shadow`: a regular file
    with pytest.raises(KdumpError, match=f"^/etc/kdump.conf:2: raw target {device} is not a block device;"):
        refuse(device)


@pytest.mark.parametrize(("make", "found"), [(ext4_image, "ext4"),
                                             (partitioned_image, "dos partition table")])
def test_a_raw_block_device_holding_anything_blkid_knows_is_refused(
        tmp_path: Path, mocker: Any, make: Callable[[Path], Path], found: str) -> None:
    device = make(tmp_path / "sdc")
    as_block_device(mocker, device)
    with pytest.raises(KdumpError, match=f"^/etc/kdump.conf:2: raw target {device} holds {found} "
                                         r"\(blkid\); a raw dump would destroy it"):
        refuse(device)


def test_an_empty_raw_block_device_is_accepted(tmp_path: Path, mocker: Any) -> None:
    device = empty_image(tmp_path / "sdc")
    as_block_device(mocker, device)
    refuse(device)


def test_the_refusal_is_part_of_a_hostonly_build(tmp_path: Path) -> None:
    device = empty_image(tmp_path / "shadow")
    with pytest.raises(KdumpError, match="is not a block device"):
        mk.plan(raw_config(device), config_file=tmp_path / "kdump.conf",
                output=tmp_path / "out.img", binary=Path("/usr/sbin/kdump-agent"), kver="6.1.0",
                kmoddir=None, staging=tmp_path, dracut_dir=tmp_path / "dracut")
