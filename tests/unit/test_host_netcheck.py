"""`load` refuses network parameters the capture kernel could not carry out (host/netcheck.py).

lsinitrd is the system boundary: system.run is replaced by a listing of a made-up image.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

from kdump_agent.host.netcheck import network_problems

KVER = "6.1.0-57-cloud-amd64"


def image(tmp_path: Path, mocker: Any, modules: list[str], builtin: list[str] | None = None) -> str:
    """An image file whose lsinitrd listing holds these module paths (and modules.builtin)."""
    path = tmp_path / "initramfs.img"
    path.write_bytes(b"image")
    listing = [f"-rw-r--r--   1 root root 1000 Dec  1 10:00 usr/lib/modules/{KVER}/{m}" for m in modules]
    if builtin is not None:
        listing.append(f"-rw-r--r--   1 root root 10 Dec  1 10:00 usr/lib/modules/{KVER}/modules.builtin")

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        if "-f" in argv:
            return subprocess.CompletedProcess(argv, 0, "\n".join(builtin or []).encode(), b"")
        return subprocess.CompletedProcess(argv, 0, "\n".join(listing).encode(), b"")

    mocker.patch("kdump_agent.system.run", side_effect=run)
    return str(path)


def test_a_malformed_ip_is_reported_before_any_panic(tmp_path: Path, mocker: Any) -> None:
    problems = network_problems("root=/dev/sda1 ip=10.0.0.5::10.0.0.1", image(tmp_path, mocker, []))
    assert len(problems) == 1
    assert problems[0].startswith("the capture kernel's command line: ip=10.0.0.5::10.0.0.1")


def test_a_plain_nic_needs_no_listing(tmp_path: Path, mocker: Any) -> None:
    path = image(tmp_path, mocker, [])
    assert network_problems("ip=eth0:dhcp", path) == []
    assert network_problems("quiet", path) == []


BOND_VLAN = "bond=bond0:eth0,eth1:mode=active-backup vlan=bond0.77:bond0 ip=bond0.77:dhcp"


def test_a_bond_without_its_module_in_the_image_is_refused_at_load(tmp_path: Path, mocker: Any) -> None:
    path = image(tmp_path, mocker, ["kernel/net/8021q/8021q.ko.xz"])
    problems = network_problems(BOND_VLAN, path)
    assert problems == [(f"the capture kernel's command line builds a bond but {path} has no bonding module: "
                         "add it to extra_modules in kdump.conf and rebuild (`kdump-agent mkinitrd`)")]


def test_links_whose_modules_are_packed_or_built_in_pass(tmp_path: Path, mocker: Any) -> None:
    packed = image(tmp_path, mocker, ["kernel/drivers/net/bonding/bonding.ko",
                                      "kernel/net/8021q/8021q.ko.xz"])
    assert network_problems(BOND_VLAN, packed) == []
    built_in = image(tmp_path, mocker, ["kernel/drivers/net/bonding/bonding.ko"],
                     builtin=["kernel/net/8021q/8021q.ko"])
    assert network_problems(BOND_VLAN, built_in) == []
