"""`kdump-agent dumps` (the frozen binary) on dump directories made by real captures: real
makedumpfile on the real vmcore, one dump that failed, plus what is not a dump; listed from
the directory and through a real sshd on 127.0.0.1, with the vmcores' sha256 recomputed."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness import sshd as servers
from harness.scenario import BINARY
from harness.sshd import ClientKey, Sshd
from kdump_agent import system
from kdump_agent.capture import capture
from kdump_agent.context import Paths

pytestmark = pytest.mark.qemu  # the vmcore comes from a real panic, made once and cached

client_key = servers.client_key
sshd = servers.sshd

def run_capture(work: Path, vmcore: Path, config_text: str) -> Path:
    config = work / "kdump.conf"
    config.write_text(config_text)
    done = capture(Paths(config=str(config), recorded_target=str(work / "none.json"),
                         mountpoint=str(work / "root"), vmcore=str(vmcore)))
    assert done.dump_dir is not None
    return done.dump_dir


@pytest.fixture(scope="module")
def crash_dir(tmp_path_factory: pytest.TempPathFactory, elf_vmcore: Path) -> Iterator[Path]:
    """/var/crash after two good captures of the same panic and one that failed, with a
    directory of the admin's and restore-raw's partial one beside them."""
    work = tmp_path_factory.mktemp("captures")
    truncated = work / "truncated-vmcore"
    with open(elf_vmcore, "rb") as source:
        truncated.write_bytes(source.read(64 << 10))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(system, "mount", lambda s, t, f, o="": os.makedirs(t, exist_ok=True))
        patch.setattr(system, "umount", lambda target, force=False: None)
        patch.setattr(system, "power", lambda command, sync=True: None)
        first = run_capture(work, elf_vmcore, "ext4 /dev/null\n")
        failed = run_capture(work, truncated, "ext4 /dev/null\n")
        newest = run_capture(work, elf_vmcore, "ext4 /dev/null\n")
    crash = first.parent
    assert {first.parent, failed.parent, newest.parent} == {crash}
    (crash / "my-notes").mkdir()
    (crash / "restore-raw.partial").mkdir()
    (crash / "restore-raw.partial" / "vmcore-incomplete").write_bytes(b"KDUMP   ")
    yield crash


def dumps(*args: str) -> subprocess.CompletedProcess[str]:
    assert BINARY.exists(), f"{BINARY} missing: build it first"
    return subprocess.run([str(BINARY), "dumps", *args], capture_output=True, text=True, timeout=300,
                          check=False)


def names(crash: Path) -> list[str]:
    """The dump directories, newest first, as `ls` shows them to the admin."""
    return sorted((p.name for p in crash.iterdir() if p.name[0].isdigit()), reverse=True)


def test_real_dumps_are_listed_newest_first_grouped_and_verified(crash_dir: Path, tmp_path: Path) -> None:
    newest, failed, first = names(crash_dir)
    listed = dumps("--path", str(crash_dir))
    assert listed.returncode == 0, listed.stderr
    lines = listed.stdout.splitlines()
    signature = json.loads((crash_dir / first / "kdump-agent.json").read_text())["panic"]["signature"]
    assert lines[0] == f"{crash_dir}: 3 dumps, newest first"
    assert "127.0.0.1" in lines[1] and " complete " in lines[1]
    assert lines[1].endswith(f'sysrq: "sysrq triggered crash" signature {signature}; '
                             "same signature as 1 earlier dump")
    assert " incomplete  no vmcore  panic unknown" in lines[2]
    assert lines[3].endswith(f'sysrq: "sysrq triggered crash" signature {signature}')

    verified = dumps("--path", str(crash_dir), "--json", "--verify")
    assert verified.returncode == 0, verified.stderr
    report = json.loads(verified.stdout)
    assert [(d["directory"], d["complete"], d["verify"]) for d in report] == [
        (str(crash_dir / newest), True, "OK"), (str(crash_dir / failed), False, "NOT HASHED"),
        (str(crash_dir / first), True, "OK")]
    assert report[0]["size"] == (crash_dir / newest / "vmcore").stat().st_size
    assert report[1]["result"] == "failure"

    copy = tmp_path / "crash"
    shutil.copytree(crash_dir / newest, copy / newest)
    with open(copy / newest / "vmcore", "r+b") as vmcore:
        vmcore.seek(1 << 20)
        byte = vmcore.read(1)
        vmcore.seek(1 << 20)
        vmcore.write(bytes([byte[0] ^ 0xFF]))
    tampered = dumps("--path", str(copy), "--verify")
    assert tampered.returncode == 1
    assert tampered.stdout.splitlines()[1].endswith("sha256 MISMATCH")


def ssh_config(tmp_path: Path, server: Sshd, key: ClientKey, crash: Path) -> Path:
    config = tmp_path / "kdump.conf"
    config.write_text(f"ssh root@127.0.0.1:{server.port}\nsshkey {key.path}\npath {crash}\n")
    return config


def test_the_same_dumps_are_listed_and_verified_through_a_real_sshd(
        crash_dir: Path, tmp_path: Path, sshd: Sshd, client_key: ClientKey) -> None:
    config = ssh_config(tmp_path, sshd, client_key, crash_dir)
    known_hosts = sshd.known_hosts(tmp_path / "known_hosts", "ed25519")
    local = json.loads(dumps("--path", str(crash_dir), "--json", "--verify").stdout)

    remote = dumps("-c", str(config), "--known-hosts", str(known_hosts), "--json", "--verify")

    assert remote.returncode == 0, remote.stderr
    listed = json.loads(remote.stdout)
    where = f"root@127.0.0.1:{sshd.port}:{crash_dir}"
    assert [d["directory"] for d in listed] == [
        d["directory"].replace(str(crash_dir), where, 1) for d in local]
    strip = ("directory",)
    assert [{k: v for k, v in d.items() if k not in strip} for d in listed] == [
        {k: v for k, v in d.items() if k not in strip} for d in local]
    assert [d["verify"] for d in listed] == ["OK", "NOT HASHED", "OK"]
    text = dumps("-c", str(config), "--known-hosts", str(known_hosts))
    assert text.stdout.splitlines()[0] == f"{where}: 3 dumps, newest first"


def test_a_server_whose_host_key_is_not_pinned_is_not_listed(
        crash_dir: Path, tmp_path: Path, sshd: Sshd, client_key: ClientKey) -> None:
    config = ssh_config(tmp_path, sshd, client_key, crash_dir)
    elsewhere = tmp_path / "known_hosts"
    elsewhere.write_text(f"[127.0.0.1]:{sshd.port + 1} {sshd.host_key_line('ed25519')}\n")
    refused = dumps("-c", str(config), "--known-hosts", str(elsewhere))
    assert refused.returncode == 1
    assert f"no host key for [127.0.0.1]:{sshd.port} in {elsewhere}" in refused.stderr
    assert refused.stdout == ""
