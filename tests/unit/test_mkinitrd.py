"""What mkinitrd tells dracut, worked out without running it."""

from __future__ import annotations

import dataclasses
import json
import os
import stat
import subprocess
from pathlib import Path
from typing import Any

import pytest

from kdump_agent import config as kdump_config
from kdump_agent.config import parse
from kdump_agent.errors import CommandFailed, KdumpError
from kdump_agent.host import mkinitrd as mk
from kdump_agent.host import stackpack
from kdump_agent.host.stack import Found
from kdump_agent.network.plan import VirtualLink
from kdump_agent.network.record import HostRecord
from kdump_agent.storage.base import Stack
from kdump_agent.storage.lvm import LvmVolume
from kdump_agent.targets.local import FilesystemTarget


@pytest.fixture(autouse=True)
def host_programs(mocker: Any) -> Any:
    """The host's programs, as find_program sees them: makedumpfile, cp and cat in /usr/bin."""
    return mocker.patch.object(mk, "find_program", side_effect=lambda name: (
        f"/usr/bin/{name}" if name in ("makedumpfile", "cp", "cat") else None))


@pytest.fixture(autouse=True)
def program_layout(mocker: Any) -> Any:
    """The binaries here are stand-ins: test_programdir.py lays out real archives."""
    return mocker.patch.object(mk, "lay_out")


def plan_for(text: str, tmp_path: Path) -> mk.BuildPlan:
    return mk.plan(parse(text, "/etc/kdump.conf"), config_file=tmp_path / "kdump.conf",
                   output=tmp_path / "out.img", binary=Path("/usr/sbin/kdump-agent"), kver="6.1.0",
                   kmoddir=None, staging=tmp_path, dracut_dir=tmp_path / "dracut")


def test_lean_image_for_another_machine(tmp_path: Path) -> None:
    built = plan_for('ext4 UUID=abc\ndracut_args --no-hostonly --drivers "virtio_blk virtio_pci"\n',
                     tmp_path)
    argv = built.argv
    assert argv[:5] == ["dracut", "--no-hostonly", "--drivers", "virtio_blk virtio_pci", "--force"]
    assert argv[argv.index("--modules") + 1] == "kdump-agent"
    assert argv[argv.index("--filesystems") + 1] == "ext4"
    assert "--hostonly" not in argv
    assert argv[-2:] == ["--", str(tmp_path / "out.img")]
    assert built.env["KDUMP_AGENT_BINARY"] == "/usr/sbin/kdump-agent"
    assert built.recorded_target is None
    # A disk target: the laid-out program leaves the network stack and paramiko out.
    assert (built.program_network, built.program_ssh) == (False, False)


def test_hostonly_image_gets_the_drivers_on_the_way_to_the_target(tmp_path: Path, mocker: Any) -> None:
    mocker.patch.object(stackpack, "resolve_spec", return_value="/dev/sdb1")
    mocker.patch.object(stackpack, "stack_under", return_value=Found(Stack(), drivers=["sd_mod", "ahci"]))
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
    assert (built.program_network, built.program_ssh) == (True, True)


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


def test_nfs_target_gets_the_client_modules_and_hostonly_the_route_and_nic(
        tmp_path: Path, mocker: Any) -> None:
    def record(host: str, address: str) -> HostRecord:
        return HostRecord(host=host, target=address, interface="ens3", mac="52:54:00:12:34:56", mtu=1500,
                          addresses=("192.0.2.10/24",), gateway="192.0.2.1", dns=(), dhcp=False, hostname="h")
    mocker.patch("kdump_agent.network.bringup.resolve", return_value="192.0.2.9")
    mocker.patch("kdump_agent.host.netpack.record_host_route", side_effect=record)
    mocker.patch("kdump_agent.host.netpack.nic_drivers", return_value=["virtio_net", "virtio_pci"])
    built = plan_with("nfs filer.example:/export\n", tmp_path, [])
    argv = built.argv
    assert argv[argv.index("--add-drivers") + 1] == "nfs nfsv3 nfsv4 virtio_net virtio_pci"
    written = Path(built.env["KDUMP_AGENT_NETWORK"]).read_text()
    assert '"host": "filer.example"' in written and '"target": "192.0.2.9"' in written
    assert (built.program_network, built.program_ssh) == (True, False)



def test_hostonly_packs_the_drivers_of_every_nic_under_a_bridge_and_the_link_modules(
        tmp_path: Path, mocker: Any, caplog: Any) -> None:
    bond = VirtualLink(kind="bond", name="bond0", members=("ens3", "ens4"), options=(("mode", "802.3ad"),))
    vlan = VirtualLink(kind="vlan", name="bond0.10", members=("bond0",), options=(("id", "10"),))
    bridge = VirtualLink(kind="bridge", name="br0", members=("bond0.10",))
    record = HostRecord(host="fd00::9", target="fd00::9", interface="br0", mac="52:54:00:00:00:b1", mtu=1500,
                        addresses=("fd00::5/64",), gateway=None, dns=(), dhcp=False, hostname="h",
                        links=(bond, vlan, bridge), ipv6="static", gateway6="fe80::1",
                        nic_macs=(("ens3", "52:54:00:00:00:03"), ("ens4", "52:54:00:00:00:04")))
    mocker.patch("kdump_agent.host.netpack.record_host_route", return_value=record)
    drivers = {"ens3": ["e1000e"], "ens4": ["igb", "e1000e"]}
    nic_drivers = mocker.patch("kdump_agent.host.netpack.nic_drivers", side_effect=lambda nic: drivers[nic])
    with caplog.at_level("INFO", logger="kdump-agent"):
        built = plan_with("nfs [fd00::9]:/export\n", tmp_path, [])  # an IPv6 NFS server is fine now
    argv = built.argv
    assert argv[argv.index("--add-drivers") + 1] == "nfs nfsv3 nfsv4 e1000e igb bonding 8021q bridge"
    assert [call.args[0] for call in nic_drivers.call_args_list] == ["ens3", "ens4"]  # not br0
    assert ("fd00::9 is reached through br0 (bridge: bond0.10 (VLAN 10 on bond0 (802.3ad: ens3, ens4))); "
            "fd00::5/64") in caplog.text


def test_hostonly_single_nic_packs_its_driver_and_no_link_module(tmp_path: Path, mocker: Any) -> None:
    record = HostRecord(host="filer.example", target="192.0.2.9", interface="ens3", mac="52:54:00:12:34:56",
                        mtu=1500, addresses=(), gateway=None, dns=(), dhcp=True, hostname="h")
    mocker.patch("kdump_agent.network.bringup.resolve", return_value="192.0.2.9")
    mocker.patch("kdump_agent.host.netpack.record_host_route", return_value=record)
    mocker.patch("kdump_agent.host.netpack.nic_drivers", return_value=["virtio_net"])
    argv = plan_with("nfs filer.example:/export\n", tmp_path, []).argv
    assert argv[argv.index("--add-drivers") + 1] == "nfs nfsv3 nfsv4 virtio_net"


def test_generic_image_warns_that_link_modules_go_in_extra_modules(tmp_path: Path, caplog: Any) -> None:
    with caplog.at_level("WARNING", logger="kdump-agent"):
        plan_with("nfs filer.example:/export\ndracut_args --no-hostonly\n", tmp_path, [])
    assert "knows no NIC driver" in caplog.text
    assert "bond=, vlan= or bridge= on the capture command line need bonding, 8021q or bridge" in caplog.text


# ---- where `path` really is: symlinks and bind mounts ---------------------------------------

def findmnt_and_blkid(mounts: dict[str, str]) -> Any:
    """system.run as findmnt and blkid answer on this machine. mounts maps a mount point to
    findmnt's `SOURCE FSTYPE`; like the real findmnt, --target follows symlinks."""
    uuids = {"/dev/vda1": "root-uuid", "/dev/vdb1": "data-uuid"}

    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        if argv[0] == "findmnt":
            target = os.path.realpath(argv[-1])
            point = max((m for m in mounts if target == m or target.startswith(m.rstrip("/") + "/")), key=len)
            out = f"{mounts[point]} {point}\n"
        else:
            out = uuids.get(argv[-1], "") + "\n"
        return subprocess.CompletedProcess(argv, 0, out.encode(), b"")
    return run


@pytest.mark.parametrize("made", [True, False], ids=["crash dir exists", "crash dir not made yet"])
def test_path_through_a_symlink_is_recorded_on_the_disk_it_points_to(tmp_path: Path, mocker: Any,
                                                                       made: bool) -> None:
    data = tmp_path / "data"
    (data / "crash" if made else data).mkdir(parents=True)
    link = tmp_path / "varcrash"
    link.symlink_to(data / "crash")
    mocker.patch("kdump_agent.system.run",
                 side_effect=findmnt_and_blkid({"/": "/dev/vda1 ext4", str(data): "/dev/vdb1 ext4"}))
    for path, directory in ((str(link), "/crash"), (f"{link}/host1", "/crash/host1")):
        recorded = mk.record_filesystem(path, "/etc/kdump.conf")
        assert (recorded.spec, recorded.directory) == ("UUID=data-uuid", directory)


def test_path_on_a_bind_mount_is_recorded_inside_the_mounted_directory(tmp_path: Path, mocker: Any) -> None:
    bound = tmp_path / "bound"
    bound.mkdir()
    mocker.patch("kdump_agent.system.run", side_effect=findmnt_and_blkid(
        {"/": "/dev/vda1 ext4", str(bound): "/dev/vdb1[/exports/crash] xfs"}))
    recorded = mk.record_filesystem(f"{bound}/host1", "/etc/kdump.conf")
    assert (recorded.spec, recorded.fstype, recorded.directory) == ("UUID=data-uuid", "xfs",
                                                                    "/exports/crash/host1")


def test_a_directory_above_its_mount_point_is_refused_never_recorded() -> None:
    assert mk.directory_on("/var/crash", "/var/crash", "/", "/") == "/var/crash"
    with pytest.raises(KdumpError, match="/x/varcrash resolves to /x/varcrash, which is not under /x/data"):
        mk.directory_on("/x/varcrash", "/x/varcrash", "/x/data", "/")


# ---- dracut writes only our own output -------------------------------------------------------

# dracut's options that take a value (its getopt spec), among those these tests use.
DRACUT_VALUE_OPTIONS = frozenset({"--kver", "--modules", "-m", "--add-drivers", "--drivers", "-d",
                                  "--filesystems", "--kmoddir", "-k", "--omit", "-o", "--add", "-a"})


def positionals(argv: list[str]) -> list[str]:
    """The words dracut takes as <image> [<kernel version>], parsed as GNU getopt does."""
    found: list[str] = []
    words = iter(argv[1:])
    for word in words:
        if word == "--":
            return found + list(words)
        if word in DRACUT_VALUE_OPTIONS:
            next(words, None)
        elif not word.startswith("-"):
            found.append(word)
    return found


def test_dracut_args_ending_in_an_option_cannot_take_the_output(tmp_path: Path, mocker: Any) -> None:
    """`dracut_args --add-drivers` once took our output as its value: dracut then wrote its
    default image, the system's boot initramfs."""
    run = mocker.patch("kdump_agent.system.run", side_effect=dracut_writing(b"image"))
    with pytest.raises(KdumpError, match="dracut_args: .*--add-drivers"):  # refused first of all
        build_in(tmp_path, "ext4 UUID=abc", dracut_args=("--no-hostonly", "--add-drivers"))
    run.assert_not_called()
    # and were the check ever to miss a case, the order still keeps the output out of reach:
    mocker.patch.object(mk, "check_dracut_args", return_value=[])
    output = build_in(tmp_path, "ext4 UUID=abc", dracut_args=("--no-hostonly", "--add-drivers"))
    argv = run.call_args.args[0]
    partial = argv[-1]
    assert argv[-2] == "--" and Path(partial).parent == output.parent
    assert Path(partial).name.startswith(".out.img.")
    assert positionals(argv) == [partial]
    assert argv[1:4] == ["--no-hostonly", "--add-drivers", "--force"]  # the option swallows ours


def build_in(tmp_path: Path, text: str, old_image: bytes | None = None, **settings: Any) -> Path:
    """mkinitrd (forced) of kdump.conf text with settings replaced, into tmp_path/boot/out.img."""
    conf = tmp_path / "kdump.conf"
    conf.write_text(text + "\n")
    output = tmp_path / "boot" / "out.img"
    output.parent.mkdir(exist_ok=True)
    if old_image is not None:
        output.write_bytes(old_image)
    config = dataclasses.replace(kdump_config.load(str(conf)), **settings)
    mk.mkinitrd(config, output=output, binary=Path("/bin/true"), kver="6.1.0", force=True)
    return output


@pytest.mark.parametrize(("words", "hostonly"), [
    ((), True), (("-N",), False), (("--no-host-only",), False), (("-N", "--hostonly"), True),
    (("--hostonly", "--no-hostonly"), False)])
def test_the_last_hostonly_word_wins_as_dracut_reads_it(words: tuple[str, ...], hostonly: bool) -> None:
    assert mk.hostonly_wanted(words) is hostonly


# ---- a failed build keeps the old image -----------------------------------------------------

def dracut_writing(content: bytes) -> Any:
    """system.run as dracut: writes content to its output as a new file (the umask's mode)."""
    def run(argv: list[str], **_: Any) -> subprocess.CompletedProcess[bytes]:
        Path(argv[-1]).unlink()
        Path(argv[-1]).write_bytes(content)
        Path(argv[-1]).chmod(0o644)
        return subprocess.CompletedProcess(argv, 0, b"", b"")
    return run


def test_a_built_image_replaces_the_old_one_mode_0600(tmp_path: Path, mocker: Any) -> None:
    mocker.patch("kdump_agent.system.run", side_effect=dracut_writing(b"new image"))
    output = build_in(tmp_path, "ext4 UUID=abc\ndracut_args -N", old_image=b"old image")
    assert output.read_bytes() == b"new image"
    assert stat.S_IMODE(output.stat().st_mode) == 0o600
    assert sorted(p.name for p in output.parent.iterdir()) == ["out.img", "out.img.stamp"]


@pytest.mark.parametrize("dracut", [dracut_writing(b""),
                                    CommandFailed(["dracut"], 1, "No space left on device")],
                         ids=["writes nothing", "fails"])
def test_a_failed_build_leaves_the_old_image_and_its_stamp(tmp_path: Path, mocker: Any, dracut: Any) -> None:
    mocker.patch("kdump_agent.system.run", side_effect=dracut)
    stamp = tmp_path / "boot" / "out.img.stamp"
    stamp.parent.mkdir()
    stamp.write_text('{"format": 1}\n')
    with pytest.raises(KdumpError, match="No space left|wrote nothing"):
        build_in(tmp_path, "ext4 UUID=abc\ndracut_args -N", old_image=b"old image")
    assert (tmp_path / "boot" / "out.img").read_bytes() == b"old image"
    assert stamp.read_text() == '{"format": 1}\n'
    assert sorted(p.name for p in stamp.parent.iterdir()) == ["out.img", "out.img.stamp"]


# ---- core_collector must be on this host ----------------------------------------------------

def test_a_collector_program_missing_on_this_host_is_refused(tmp_path: Path, host_programs: Any) -> None:
    with pytest.raises(KdumpError, match=rf"/etc/kdump.conf: core_collector {tmp_path}/sbin/makedumpfile: "
                                         "no such executable on this host"):
        plan_for(f"ext4 UUID=abc\ncore_collector {tmp_path}/sbin/makedumpfile -l -d 31\ndracut_args -N\n",
                 tmp_path)
    host_programs.side_effect = lambda name: None
    with pytest.raises(KdumpError, match="/etc/kdump.conf: core_collector cp is not installed on this host"):
        plan_for("ext4 UUID=abc\ncore_collector cp\ndracut_args -N\n", tmp_path)


def test_the_collector_is_packed_unless_it_is_the_makedumpfile_the_module_installs(
        tmp_path: Path, host_programs: Any) -> None:
    elsewhere = tmp_path / "opt" / "makedumpfile"
    elsewhere.parent.mkdir()
    elsewhere.write_text("#!/bin/sh\n")
    elsewhere.chmod(0o755)
    built = plan_for(f"ext4 UUID=abc\ncore_collector {elsewhere} -l\ndracut_args -N\n", tmp_path)
    assert built.env["KDUMP_AGENT_INSTALL"].splitlines() == [str(elsewhere)]
    copy = tmp_path / "opt" / "cp"
    copy.write_text("#!/bin/sh\n")
    host_programs.side_effect = lambda name: {"makedumpfile": str(elsewhere), "cp": str(copy)}.get(name)
    assert plan_for("ext4 UUID=abc\ndracut_args -N\n", tmp_path).env["KDUMP_AGENT_INSTALL"] == ""
    assert plan_for("ext4 UUID=abc\ncore_collector cp\ndracut_args -N\n", tmp_path).env[
        "KDUMP_AGENT_INSTALL"] == str(copy)


# ---- storage stacks: what the image gets ----------------------------------------------------

def test_a_target_on_lvm_packs_its_record_tools_and_modules(tmp_path: Path, mocker: Any) -> None:
    """Issue 13's admin: `ext4 /dev/mapper/<vg>-<lv>` waited out disk_timeout in the capture
    kernel. Now the image says which LV, and holds lvm and dm_mod."""
    mocker.patch.object(stackpack, "resolve_spec", return_value="/dev/dm-1")
    mocker.patch.object(stackpack, "stack_under", return_value=Found(
        Stack((LvmVolume(vg="vgdump", lv="crash"),)), drivers=["virtio_blk"]))
    mocker.patch.object(stackpack, "host_program", side_effect=lambda name: f"/usr/sbin/{name}")
    built = plan_for("path /var/crash\next4 /dev/mapper/vgdump-crash\n", tmp_path)
    assert built.argv[built.argv.index("--add-drivers") + 1] == "virtio_blk dm_mod"
    assert "/usr/sbin/lvm" in built.env["KDUMP_AGENT_INSTALL"].splitlines()
    record = json.loads(Path(built.env["KDUMP_AGENT_STORAGE"]).read_text())
    assert record == {"target": [{"kind": "lvm", "vg": "vgdump", "lv": "crash", "targets": ["linear"]}]}


def test_a_target_on_a_stack_the_capture_kernel_cannot_open_is_refused_naming_the_line(
        tmp_path: Path, mocker: Any) -> None:
    mocker.patch.object(stackpack, "resolve_spec", return_value="/dev/dm-1")
    refused = KdumpError("/dev/dm-1 (luks) is on dm-crypt (LUKS)")
    mocker.patch.object(stackpack, "stack_under", side_effect=refused)
    with pytest.raises(KdumpError, match=r"/etc/kdump.conf:2: the dump target UUID=abc: "
                       r"/dev/dm-1 \(luks\) is on dm-crypt"):
        plan_for("path /var/crash\next4 UUID=abc\n", tmp_path)


def test_a_generic_image_names_the_dracut_module_a_stacked_target_needs(tmp_path: Path) -> None:
    with pytest.raises(KdumpError, match=r"/dev/mapper/vg-crash is on LVM, which a --no-hostonly image holds "
                       r"only if asked: add `--add lvm` to dracut_args"):
        plan_for("ext4 /dev/mapper/vg-crash\ndracut_args --no-hostonly\n", tmp_path)
    with pytest.raises(KdumpError, match="add `--add mdraid`"):
        plan_for("ext4 /dev/md/crash\ndracut_args --no-hostonly --add lvm\n", tmp_path)


def test_a_generic_image_takes_its_stack_from_the_name_and_the_added_modules(tmp_path: Path,
                                                                            mocker: Any) -> None:
    mocker.patch.object(stackpack, "host_program", side_effect=lambda name: f"/usr/sbin/{name}")
    named = plan_for('ext4 /dev/vg-a/crash\ndracut_args --no-hostonly -a "lvm"\n', tmp_path)
    record = json.loads(Path(named.env["KDUMP_AGENT_STORAGE"]).read_text())
    assert [(layer["kind"], layer["vg"], layer["lv"]) for layer in record["target"]] == [
        ("lvm", "vg-a", "crash")]
    assert named.env["KDUMP_AGENT_INSTALL"].splitlines() == ["/usr/sbin/lvm", "/usr/sbin/thin_check"]
    by_label = plan_for("ext4 LABEL=crash\ndracut_args --no-hostonly --add mdraid --add=lvm\n", tmp_path)
    record = json.loads(Path(by_label.env["KDUMP_AGENT_STORAGE"]).read_text())
    assert [layer["kind"] for layer in record["target"]] == ["md", "lvm"]
    assert record["target"][0]["uuid"] is None and record["target"][1]["vg"] is None
    plain = plan_for("ext4 LABEL=crash\ndracut_args --no-hostonly\n", tmp_path)
    assert "KDUMP_AGENT_STORAGE" not in plain.env


def test_a_root_on_dm_crypt_only_warns_for_the_failure_action(tmp_path: Path, mocker: Any,
                                                             caplog: pytest.LogCaptureFixture) -> None:
    mocker.patch.object(stackpack, "resolve_spec", side_effect=lambda spec: "/dev/dm-0" if spec == "UUID=root"
                        else "/dev/vdb1")
    def stack_under(device: str) -> Found:
        if device == "/dev/dm-0":
            raise KdumpError("/dev/dm-0 (root) is on dm-crypt (LUKS)")
        return Found(Stack())

    mocker.patch.object(stackpack, "stack_under", side_effect=stack_under)
    mocker.patch.object(mk, "record_filesystem", return_value=FilesystemTarget("UUID=root", "xfs", "/"))
    built = plan_for("ext4 /dev/vdb1\nfailure_action dump_to_rootfs\n", tmp_path)
    assert built.argv[0] == "dracut"
    assert "the root file system UUID=root: /dev/dm-0 (root) is on dm-crypt" in caplog.text
    assert "dump_to_rootfs cannot reach it and falls through to final_action" in caplog.text
    assert "KDUMP_AGENT_STORAGE" not in built.env
