"""The program's compiled modules without the network and SSH sides, for an image whose
capture never imports them."""

from __future__ import annotations

import marshal
import subprocess
import sys
import zlib
from pathlib import Path

import pytest
from pyzfiles import pyz_of

from kdump_agent.errors import KdumpError
from kdump_agent.host import pyzarchive

AGENT = Path(__file__).resolve().parents[2] / "agent"
NAMES = ["kdump_agent", "kdump_agent.capture", "kdump_agent.network", "kdump_agent.network.dhcp",
         "kdump_agent.networking_notes", "pyroute2", "pyroute2.iproute", "paramiko", "asyncio.events"]


def code_of(pyz: bytes, name: str) -> object:
    table = dict(marshal.loads(pyz[int.from_bytes(pyz[8:12], "big"):]))
    _, offset, length = table[name]
    return marshal.loads(zlib.decompress(pyz[offset:offset + length]))


def test_the_packages_left_out_go_with_their_modules_and_the_rest_stays_whole() -> None:
    pyz = pyz_of(NAMES)
    trimmed = pyzarchive.without(pyz, pyzarchive.left_out(network=False, ssh=False))
    # A name that only begins like a package is not inside it.
    assert pyzarchive.module_names(trimmed) == ["kdump_agent", "kdump_agent.capture",
                                                "kdump_agent.networking_notes"]
    for name in pyzarchive.module_names(trimmed):
        assert code_of(trimmed, name) == code_of(pyz, name)
        namespace: dict[str, object] = {}
        exec(code_of(trimmed, name), namespace)  # noqa: S102 - the archive's own code
        assert namespace["NAME"] == name
    assert trimmed[:12 - 4] == pyz[:8]  # same magic, same bytecode magic


def test_an_nfs_image_keeps_the_network_and_an_ssh_image_everything() -> None:
    pyz = pyz_of(NAMES)
    nfs = pyzarchive.module_names(pyzarchive.without(pyz, pyzarchive.left_out(network=True, ssh=False)))
    assert "pyroute2.iproute" in nfs and "asyncio.events" in nfs and "paramiko" not in nfs
    assert pyzarchive.left_out(network=True, ssh=True) == ()


def test_a_file_that_is_no_pyz_archive_is_refused() -> None:
    with pytest.raises(KdumpError, match="not a PYZ archive"):
        pyzarchive.without(b"PK\3\4 a zip file, not a PYZ", ("pyroute2",))
    with pytest.raises(KdumpError, match="no readable table"):
        pyzarchive.without(b"PYZ\0" + b"\0" * 4 + (17).to_bytes(4, "big") + b"\0" * 5 + b"\xff", ("x",))


@pytest.mark.parametrize("network", [False, True], ids=["local", "nfs"])
def test_no_module_a_capture_can_import_is_left_out(network: bool) -> None:
    """In a fresh interpreter: every module of the agent that a capture without SSH (and,
    for a local one, without a server) can reach, imported, pulls in nothing that its
    image's program leaves out. Reachable: all but the host commands and what is left out."""
    left_out = pyzarchive.left_out(network=network, ssh=False)
    package = AGENT / "kdump_agent"
    modules = [".".join(("kdump_agent", *p.relative_to(package).with_suffix("").parts))
               .removesuffix(".__init__") for p in sorted(package.rglob("*.py"))]
    reachable = [m for m in modules if not m.startswith("kdump_agent.host")
                 and not pyzarchive.in_packages(m, left_out) and m != "kdump_agent.__main__"]
    assert "kdump_agent.steps.actions" in reachable and "kdump_agent.storage.iscsi" in reachable
    assert ("kdump_agent.network.dhcp" in reachable) == network
    probe = ("import importlib, sys\n"
             f"for name in {reachable!r}: importlib.import_module(name)\n"
             "print(' '.join(sorted(sys.modules)))")
    loaded = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(AGENT)}).stdout.split()
    assert [name for name in loaded if pyzarchive.in_packages(name, left_out)] == []
