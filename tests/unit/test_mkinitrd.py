"""What mkinitrd tells dracut, worked out without running it."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from kdump_agent.config import parse
from kdump_agent.errors import KdumpError
from kdump_agent.host import mkinitrd as mk


def plan_for(text: str, tmp_path: Path) -> mk.BuildPlan:
    return mk.plan(parse(text, "/etc/kdump.conf"), config_file=tmp_path / "kdump.conf",
                   output=tmp_path / "out.img", binary=Path("/usr/sbin/kdump-agent"), kver="6.1.0",
                   kmoddir=None, staging=tmp_path, dracut_dir=tmp_path / "dracut")


def test_lean_image_for_another_machine(tmp_path: Path) -> None:
    built = plan_for('ext4 UUID=abc\ndracut_args --no-hostonly --drivers "virtio_blk virtio_pci"\n',
                     tmp_path)
    argv = built.argv
    assert argv[:2] == ["dracut", "--force"]
    assert argv[argv.index("--modules") + 1] == "kdump-agent"
    assert argv[argv.index("--filesystems") + 1] == "ext4"
    assert "--hostonly" not in argv
    assert argv[-4:] == ["--no-hostonly", "--drivers", "virtio_blk virtio_pci", str(tmp_path / "out.img")]
    assert built.env["KDUMP_AGENT_BINARY"] == "/usr/sbin/kdump-agent"
    assert built.recorded_target is None


def test_hostonly_image_gets_the_drivers_on_the_way_to_the_target(tmp_path: Path, mocker: Any) -> None:
    mocker.patch.object(mk, "resolve_spec", return_value="/dev/sdb1")
    mocker.patch.object(mk, "drivers_for", return_value=["sd_mod", "ahci"])
    built = plan_for("xfs LABEL=dump\nextra_modules dm_mod\n", tmp_path)
    assert "--hostonly" in built.argv
    assert built.argv[built.argv.index("--add-drivers") + 1] == "dm_mod sd_mod ahci"


def test_extra_bins_and_hooks_are_packed_and_must_exist(tmp_path: Path) -> None:
    tool = tmp_path / "tool"
    pre = tmp_path / "pre.sh"
    tool.touch()
    pre.touch()
    built = plan_for(f"ext4 /dev/vdb\nextra_bins {tool}\nkdump_pre {pre}\ndracut_args -N\n", tmp_path)
    assert built.env["KDUMP_AGENT_INSTALL"].splitlines() == [str(tool), str(pre)]
    with pytest.raises(KdumpError, match="cannot pack /nonexistent/post: no such file"):
        plan_for("ext4 /dev/vdb\nkdump_post /nonexistent/post\ndracut_args -N\n", tmp_path)


def test_no_target_records_the_file_system_holding_path(tmp_path: Path, mocker: Any) -> None:
    from kdump_agent.host.blockdev import HostFilesystem

    mocker.patch.object(mk, "filesystem_holding",
                        return_value=HostFilesystem("/dev/sda3", "xfs", "/var", "1234-abcd"))
    built = plan_for("path /var/crash\ndracut_args --no-hostonly\n", tmp_path)
    assert built.recorded_target is not None
    assert (built.recorded_target.spec, built.recorded_target.fstype,
            built.recorded_target.directory) == ("UUID=1234-abcd", "xfs", "/crash")
    assert Path(built.env["KDUMP_AGENT_TARGET"]).read_text().strip() == built.recorded_target.as_json()


def test_force_no_rebuild_keeps_an_existing_image(tmp_path: Path, mocker: Any) -> None:
    run = mocker.patch("kdump_agent.system.run")
    output = tmp_path / "out.img"
    output.write_bytes(b"existing image")
    mk.mkinitrd(parse("ext4 /dev/vdb\nforce_no_rebuild 1\n", "k"), output=output,
                binary=Path("/bin/true"))
    run.assert_not_called()
    assert output.read_bytes() == b"existing image"


# ---- network targets ---------------------------------------------------------------------

def ssh_key(tmp_path: Path) -> Path:
    import subprocess

    key = tmp_path / "kdump_id"
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(key)], check=True)
    return key


def plan_with(text: str, tmp_path: Path, known_hosts: list[str]) -> mk.BuildPlan:
    return mk.plan(parse(text, "/etc/kdump.conf"), config_file=tmp_path / "kdump.conf",
                   output=tmp_path / "out.img", binary=Path("/usr/sbin/kdump-agent"), kver="6.1.0",
                   kmoddir=None, staging=tmp_path, dracut_dir=tmp_path / "dracut",
                   known_hosts_files=known_hosts)


def test_ssh_target_packs_the_key_and_pins_only_that_servers_host_key(tmp_path: Path) -> None:
    key = ssh_key(tmp_path)
    server_key = (tmp_path / "kdump_id.pub").read_text().split()[:2]
    known = tmp_path / "known_hosts"
    known.write_text(f"[dumps.example]:2222 {' '.join(server_key)}\nother.example {' '.join(server_key)}\n")
    built = plan_with(f"ssh kdump@dumps.example:2222\nsshkey {key}\ndracut_args --no-hostonly\n", tmp_path,
                      [str(known)])
    assert built.env["KDUMP_AGENT_SSHKEY"] == str(key)
    pinned = Path(built.env["KDUMP_AGENT_KNOWN_HOSTS"]).read_text()
    assert pinned == f"[dumps.example]:2222 {' '.join(server_key)}\n"
    assert "KDUMP_AGENT_NETWORK" not in built.env  # a generic image records no route


def test_ssh_target_without_a_known_host_key_is_refused_with_the_fix(tmp_path: Path) -> None:
    key = ssh_key(tmp_path)
    with pytest.raises(KdumpError, match=r"/etc/kdump.conf:1: no host key for dumps.example.*ssh-keyscan"):
        plan_with(f"ssh kdump@dumps.example\nsshkey {key}\ndracut_args --no-hostonly\n", tmp_path,
                  [str(tmp_path / "missing")])


def test_ssh_target_with_a_missing_key_says_how_to_make_one(tmp_path: Path) -> None:
    with pytest.raises(KdumpError, match=r"sshkey\) does not exist: create it with `ssh-keygen"):
        plan_with(f"ssh kdump@dumps.example\nsshkey {tmp_path}/none\n", tmp_path, [])


def test_ssh_target_needs_makedumpfile(tmp_path: Path) -> None:
    with pytest.raises(KdumpError, match="an ssh target needs makedumpfile"):
        plan_with("ssh kdump@dumps.example\ncore_collector cp\n", tmp_path, [])


def test_nfs_target_gets_the_client_modules_and_hostonly_the_route_and_nic(tmp_path: Path, mocker: Any) -> None:
    record = ('{"target": "192.0.2.9", "interface": "ens3", "mac": "52:54:00:12:34:56", "mtu": 1500, '
              '"addresses": ["192.0.2.10/24"], "gateway": "192.0.2.1", "dns": [], "dhcp": false, "hostname": "h"}')
    mocker.patch("kdump_agent.network.resolve", return_value="192.0.2.9")
    mocker.patch("kdump_agent.network.record_host_route", return_value=record)
    mocker.patch("kdump_agent.host.netpack.nic_drivers", return_value=["virtio_net", "virtio_pci"])
    built = plan_with("nfs filer.example:/export\n", tmp_path, [])
    argv = built.argv
    assert argv[argv.index("--add-drivers") + 1] == "nfs nfsv3 nfsv4 virtio_net virtio_pci"
    written = Path(built.env["KDUMP_AGENT_NETWORK"]).read_text()
    assert '"host": "filer.example"' in written and '"target": "192.0.2.9"' in written
