"""The whole capture flow with the machine boundary mocked: mount(2), reboot(2), commands."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path
from typing import Any

import pytest

from kdump_agent import system
from kdump_agent.capture import capture
from kdump_agent.context import Paths
from kdump_agent.errors import CommandFailed
from kdump_agent.machine import Outcome, State


class FakeMachine:
    """Stands in for system.run/mount/power: records calls, writes what makedumpfile would."""

    def __init__(self, collector_rc: int = 0) -> None:
        self.collector_rc = collector_rc
        self.powered: list[system.Power] = []
        self.mounted: list[tuple[str, str, str]] = []
        self.manifests_at_power: list[dict[str, Any]] = []

    def run(self, argv: list[str], **kwargs: Any) -> Any:
        class Result:
            returncode = 0
            stdout = b""
            stderr = b""
        result = Result()
        if argv[:2] == ["makedumpfile", "--dump-dmesg"]:
            Path(argv[-1]).write_text("[    4.5] sysrq: Trigger a crash\n")
        elif argv[0] == "makedumpfile":
            Path(argv[-1]).write_bytes(b"KDUMP   " + b"\0" * 4088)
            result.returncode = self.collector_rc
            result.stderr = b"write error: No space left on device" if self.collector_rc else b""
        if kwargs.get("check", True) and result.returncode:
            raise CommandFailed(argv, result.returncode, result.stderr.decode())
        return result

    def mount(self, source: str, target: str, fstype: str, options: str = "") -> None:
        os.makedirs(target, exist_ok=True)
        self.mounted.append((source, target, fstype))

    def power(self, command: system.Power, *, sync: bool = True) -> None:
        """On a real machine reboot(2) does not return; here it does, so the flow goes on
        as it would if the kernel refused: the first call is the action taken, and the
        manifest as it was at that moment is kept."""
        self.powered.append(command)
        for _, mountpoint, _ in self.mounted:
            for manifest in Path(mountpoint).glob("**/kdump-agent.json"):
                self.manifests_at_power.append(json.loads(manifest.read_text()))


@pytest.fixture
def machine(mocker: Any) -> FakeMachine:
    fake = FakeMachine()
    mocker.patch.object(system, "run", side_effect=fake.run)
    mocker.patch.object(system, "mount", side_effect=fake.mount)
    mocker.patch.object(system, "umount")
    mocker.patch.object(system, "power", side_effect=fake.power)
    mocker.patch.object(system, "read_kernel_log", return_value="capture kernel log\n")
    return fake


def paths(tmp_path: Path, config_text: str) -> Paths:
    config = tmp_path / "kdump.conf"
    config.write_text(config_text)
    vmcore = tmp_path / "vmcore-source"
    vmcore.write_bytes(b"\0" * 4096)
    return Paths(config=str(config), recorded_target=str(tmp_path / "target.json"),
                 recorded_rootfs=str(tmp_path / "rootfs.json"), newroot=str(tmp_path / "sysroot"),
                 mountpoint=str(tmp_path / "kdumproot"), vmcore=str(vmcore), hooks=str(tmp_path / "hooks"))


def test_successful_capture_saves_every_file_and_runs_final_action(
        tmp_path: Path, machine: FakeMachine) -> None:
    done = capture(paths(tmp_path, "ext4 /dev/null\npath /var/crash\nfinal_action poweroff\n"))
    assert machine.mounted == [("/dev/null", str(tmp_path / "kdumproot"), "ext4")]
    assert machine.powered == [system.Power.POWEROFF]
    assert done.dump_dir is not None
    assert done.dump_dir.parent == tmp_path / "kdumproot" / "var" / "crash"
    assert done.dump_dir.name.startswith("127.0.0.1-")
    names = sorted(p.name for p in done.dump_dir.iterdir())
    assert names == ["kdump-agent.json", "kexec-dmesg.log", "vmcore", "vmcore-dmesg.txt"]
    for path in done.dump_dir.iterdir():
        assert stat.S_IMODE(path.stat().st_mode) == 0o600
    manifest = json.loads((done.dump_dir / "kdump-agent.json").read_text())
    assert manifest["result"] == "success"
    assert manifest["action"] == "final_action poweroff"
    assert [s["state"] for s in manifest["states"]] == [
        "START", "LOAD_CONFIG", "RUN_PRE", "NETWORK_UP", "MOUNT_TARGET", "PREPARE_DIR",
        "SAVE_DMESG", "COLLECT", "FINALIZE", "RUN_POST"]
    assert {f["name"]: f["size"] for f in manifest["files"]} == {"vmcore-dmesg.txt": 33, "vmcore": 4096}
    assert (done.dump_dir / "kexec-dmesg.log").read_text() == "capture kernel log\n"


def test_collector_failure_keeps_vmcore_incomplete_and_runs_failure_action(
        tmp_path: Path, machine: FakeMachine) -> None:
    machine.collector_rc = 1
    done = capture(paths(tmp_path, "ext4 /dev/null\ndefault halt\n"))
    assert machine.powered[0] == system.Power.HALT
    assert done.dump_dir is not None
    assert (done.dump_dir / "vmcore-incomplete").exists()
    assert not (done.dump_dir / "vmcore").exists()
    manifest = machine.manifests_at_power[0]
    assert manifest["result"] == "failure"
    assert manifest["failure"]["state"] == "COLLECT"
    assert "No space left on device" in manifest["failure"]["reason"]
    assert manifest["collector"]["exit_code"] == 1
    assert manifest["action"] == "failure_action halt"


def test_config_error_in_capture_kernel_reboots_by_default(
        tmp_path: Path, machine: FakeMachine, caplog: pytest.LogCaptureFixture) -> None:
    config_paths = paths(tmp_path, "ext4 /dev/null\ndefault shutdown\n")
    done = capture(config_paths)
    assert machine.powered[0] == system.Power.REBOOT
    assert machine.mounted == []
    assert done.journal.entries[1].state is State.LOAD_CONFIG
    assert done.journal.entries[1].outcome is Outcome.FAILED
    assert f"{config_paths.config}:2: 'default' must be one of" in caplog.text


def test_shell_failure_action_opens_a_shell_then_runs_final_action(
        tmp_path: Path, machine: FakeMachine, mocker: Any) -> None:
    shell = mocker.patch.object(system, "interactive_shell", return_value=0)
    machine.collector_rc = 1
    done = capture(paths(tmp_path, "ext4 /dev/null\nfailure_action shell\nfinal_action poweroff\n"))
    banner = shell.call_args.args[0]
    assert "the dump failed: COLLECT failed: makedumpfile exited 1" in banner
    assert "final_action poweroff runs" in banner
    assert machine.powered == [system.Power.POWEROFF]
    assert [e.state for e in done.journal.entries][-3:] == [State.FAILURE_ACTION, State.SHELL,
                                                            State.FINAL_ACTION]
    manifest = json.loads((done.dump_dir / "kdump-agent.json").read_text())  # type: ignore[operator]
    assert manifest["result"] == "failure"


def test_a_shell_that_cannot_start_still_ends_in_final_action(
        tmp_path: Path, machine: FakeMachine, mocker: Any) -> None:
    mocker.patch.object(system, "interactive_shell", side_effect=CommandFailed(["sh"], 127, "no shell"))
    machine.collector_rc = 1
    done = capture(paths(tmp_path, "ext4 /dev/null\nfailure_action shell\n"))
    assert machine.powered == [system.Power.REBOOT]
    assert done.journal.entries[-2].outcome is Outcome.FAILED


def rootfs_record(config_paths: Paths) -> None:
    Path(config_paths.recorded_rootfs).write_text('{"spec": "/dev/zero", "fstype": "ext4", "directory": "/"}')


def test_dump_to_rootfs_saves_the_dump_on_the_root_file_system_after_the_target_failed(
        tmp_path: Path, machine: FakeMachine, mocker: Any) -> None:
    config_paths = paths(tmp_path, "ext4 UUID=nowhere\ndisk_timeout 0\nfailure_action dump_to_rootfs\n")
    rootfs_record(config_paths)
    done = capture(config_paths)
    assert machine.mounted == [("/dev/zero", str(tmp_path / "kdumproot"), "ext4")]
    assert done.dump_dir is not None and done.dump_dir.parent == tmp_path / "kdumproot" / "var" / "crash"
    assert (done.dump_dir / "vmcore").exists()
    assert machine.powered == [system.Power.REBOOT]
    manifest = json.loads((done.dump_dir / "kdump-agent.json").read_text())
    assert manifest["result"] == "success"
    assert manifest["failure"]["state"] == "MOUNT_TARGET"
    assert any(note.startswith("dump_to_rootfs:") for note in manifest["notes"])


def test_dump_to_rootfs_without_a_recorded_root_falls_through_to_final_action(
        tmp_path: Path, machine: FakeMachine) -> None:
    done = capture(paths(tmp_path, "ext4 UUID=nowhere\ndisk_timeout 0\nfailure_action dump_to_rootfs\n"))
    assert machine.powered == [system.Power.REBOOT]
    assert "no root file system recorded" in done.journal.entries[-2].detail


def test_mount_root_run_init_mounts_the_root_and_hands_over(
        tmp_path: Path, machine: FakeMachine) -> None:
    config_paths = paths(tmp_path, "ext4 UUID=nowhere\ndisk_timeout 0\ndefault mount_root_run_init\n")
    rootfs_record(config_paths)
    (Path(config_paths.newroot) / "sbin").mkdir(parents=True)
    (Path(config_paths.newroot) / "sbin" / "init").touch()
    done = capture(config_paths)
    assert machine.mounted == [("/dev/zero", config_paths.newroot, "ext4")]
    assert machine.powered == []
    assert done.journal.entries[-1].state is State.ROOT_INIT
    assert done.journal.entries[-2].outcome is Outcome.HANDED_OVER


def test_mount_root_run_init_without_init_falls_through_to_final_action(
        tmp_path: Path, machine: FakeMachine) -> None:
    config_paths = paths(tmp_path, "ext4 UUID=nowhere\ndisk_timeout 0\ndefault mount_root_run_init\n")
    rootfs_record(config_paths)
    done = capture(config_paths)
    assert machine.powered == [system.Power.REBOOT]
    assert "has no /sbin/init" in done.journal.entries[-2].detail


def test_from_rootfs_saves_to_path_on_the_running_root(
        tmp_path: Path, machine: FakeMachine, mocker: Any) -> None:
    config_paths = paths(tmp_path, "ext4 UUID=elsewhere\npath /var/crash\n")
    root = tmp_path / "root"
    mocker.patch("kdump_agent.steps.mount.ROOT", str(root))
    done = capture(config_paths, from_rootfs=True)
    assert machine.mounted == []
    assert done.dump_dir is not None and done.dump_dir.parent == root / "var" / "crash"
    assert (done.dump_dir / "vmcore").exists()
    assert machine.powered == [system.Power.REBOOT]


def test_no_target_line_uses_the_target_recorded_by_mkinitrd(
        tmp_path: Path, machine: FakeMachine) -> None:
    config_paths = paths(tmp_path, "path /var/crash\n")
    Path(config_paths.recorded_target).write_text(
        '{"spec": "/dev/null", "fstype": "xfs", "directory": "/crash"}')
    done = capture(config_paths)
    assert machine.mounted == [("/dev/null", str(tmp_path / "kdumproot"), "xfs")]
    assert done.dump_dir is not None and done.dump_dir.parent == tmp_path / "kdumproot" / "crash"
    assert machine.powered == [system.Power.REBOOT]


# ---- network targets ---------------------------------------------------------------------

class FakeRemote:
    """Stands in for ssh.connection.SshTarget: keeps what would land on the server."""

    local_address = "192.0.2.10"

    def __init__(self, fail_transfer: bool = False) -> None:
        from kdump_agent.targets.sshdest import SshDestination

        self.destination = SshDestination("root", "192.0.2.9")
        self.fail_transfer = fail_transfer
        self.files: dict[str, bytes] = {}
        self.closed = False

    def make_dump_dir(self, name: str) -> str:
        return f"/var/crash/{name}"

    def put_file(self, source: Any, remote_name: str) -> int:
        data = source if isinstance(source, bytes) else Path(source).read_bytes()
        self.files[remote_name] = data
        return len(data)

    def receive_flattened(self, stream: Any) -> Any:
        from kdump_agent.errors import TransferError
        from kdump_agent.targets.base import Transfer

        data = stream.read()
        if self.fail_transfer:
            raise TransferError("root@192.0.2.9: writing vmcore-incomplete: the server closed the connection")
        return Transfer(path="/var/crash/d/vmcore", size=len(data), records=1, stream_bytes=len(data),
                               seconds=0.5, flattened=False, sha256=None)

    def close(self) -> None:
        self.closed = True


@pytest.fixture
def ssh_machine(machine: FakeMachine, mocker: Any) -> tuple[FakeMachine, list[FakeRemote]]:
    from kdump_agent.network import bringup
    from kdump_agent.ssh.connection import SshTarget

    remotes: list[FakeRemote] = []

    def connect(destination: Any, timeout: float, *, address: str | None = None) -> FakeRemote:
        remotes.append(FakeRemote(fail_transfer=machine.collector_rc != 0))
        return remotes[-1]

    mocker.patch.object(SshTarget, "connect", side_effect=connect)
    mocker.patch.object(bringup, "bring_up", return_value="eth0 10.0.2.15/24 via DHCP")
    mocker.patch.object(bringup, "source_address", return_value="192.0.2.10")

    def streaming(argv: list[str], consume: Any, *, timeout: float) -> Any:
        import io

        class Result:
            returncode = 0
            stderr = b""
        return consume(io.BytesIO(b"flattened stream")), Result()

    mocker.patch.object(system, "run_streaming", side_effect=streaming)
    return machine, remotes


def network_paths(tmp_path: Path, config: str) -> Paths:
    base = paths(tmp_path, config)
    (tmp_path / "cmdline").write_text("ip=dhcp\n")
    from dataclasses import replace
    return replace(base, cmdline=str(tmp_path / "cmdline"), recorded_network=str(tmp_path / "none.json"),
                   resolv_conf=str(tmp_path / "resolv.conf"), scratch=str(tmp_path))


def test_ssh_capture_sends_dmesg_vmcore_and_record_then_final_action(
        tmp_path: Path, ssh_machine: tuple[FakeMachine, list[FakeRemote]]) -> None:
    machine, remotes = ssh_machine
    done = capture(network_paths(tmp_path, "ssh root@192.0.2.9\n"))
    (remote,) = remotes
    assert machine.powered == [system.Power.REBOOT]
    assert sorted(remote.files) == ["kdump-agent.json", "kexec-dmesg.log", "vmcore-dmesg.txt"]
    manifest = json.loads(remote.files["kdump-agent.json"])
    assert manifest["result"] == "success"
    assert manifest["collector"]["argv"][-2:] == ["-F", str(tmp_path / "vmcore-source")]
    assert manifest["dump_dir"].startswith("root@192.0.2.9:/var/crash/192.0.2.10-")
    assert [f["name"] for f in manifest["files"]] == ["vmcore-dmesg.txt", "vmcore"]
    assert remote.closed and done.vmcore_saved
    assert not list(tmp_path.glob("vmcore-dmesg*.txt"))  # the RAM copy is gone once sent


def test_ssh_transfer_failure_runs_the_failure_action_and_still_sends_the_record(
        tmp_path: Path, ssh_machine: tuple[FakeMachine, list[FakeRemote]]) -> None:
    machine, remotes = ssh_machine
    machine.collector_rc = 1
    capture(network_paths(tmp_path, "ssh root@192.0.2.9\nfailure_action halt\n"))
    (remote,) = remotes
    assert machine.powered[0] == system.Power.HALT
    manifest = json.loads(remote.files["kdump-agent.json"])
    assert manifest["result"] == "failure" and manifest["failure"]["state"] == "COLLECT"
    assert "the server closed the connection" in manifest["failure"]["reason"]
    assert remote.closed


def test_nfs_capture_mounts_the_export_and_names_the_dump_by_our_address(
        tmp_path: Path, machine: FakeMachine, mocker: Any) -> None:
    from kdump_agent.network import bringup

    mocker.patch.object(bringup, "bring_up", return_value="eth0 up")
    mocker.patch.object(bringup, "source_address", return_value="192.0.2.10")
    done = capture(network_paths(tmp_path, "nfs 192.0.2.9:/export\npath /dumps\n"))
    assert machine.mounted == [("192.0.2.9:/export", str(tmp_path / "kdumproot"), "nfs4")]
    assert done.dump_dir is not None and done.dump_dir.name.startswith("192.0.2.10-")
    assert done.dump_dir.parent == tmp_path / "kdumproot" / "dumps"
    assert machine.powered == [system.Power.REBOOT] and done.vmcore_saved
    system.umount.assert_called_with(str(tmp_path / "kdumproot"), force=True)  # type: ignore[attr-defined]
