"""The host commands' surface: every one has --help, and local use never imports paramiko."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from kdump_agent import cli

AGENT = Path(__file__).resolve().parents[2] / "agent"
HOST_COMMANDS = ("load", "unload", "start", "stop", "status", "estimate", "test", "propagate", "mkinitrd")


@pytest.mark.parametrize("command", HOST_COMMANDS)
def test_every_host_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as done:
        cli.main([command, "--help"])
    assert done.value.code == 0
    assert capsys.readouterr().out.startswith(f"usage: kdump-agent {command}")


def test_mkinitrd_output_is_optional_and_force_exists() -> None:
    args = cli.build_parser().parse_args(["mkinitrd", "--force"])
    assert args.output is None and args.force


def test_the_cli_does_not_import_paramiko() -> None:
    """A fresh interpreter: this test process has paramiko loaded by other tests."""
    probe = "import sys, kdump_agent.cli; print('paramiko' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(AGENT)})
    assert result.stdout.strip() == "False"


def test_a_local_capture_imports_nothing_only_other_commands_and_targets_need() -> None:
    """What `capture` imports before its first state, in a fresh interpreter: the host
    commands, the network stack, the SSH side and the storage layers are left for the
    commands and targets that use them."""
    probe = ("import sys; from kdump_agent import capture, cli; cli.build_parser(capture_only=True); "
             "from kdump_agent.targets import registry; registry.recorded_stack('/nonexistent', 'target'); "
             "print(' '.join(sorted(sys.modules)))")
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                            env={"PYTHONPATH": str(AGENT)})
    loaded = result.stdout.split()
    left = ("kdump_agent.host.", "kdump_agent.network.", "kdump_agent.ssh.connection",
            "kdump_agent.targets.sshserver", "kdump_agent.storage.kinds", "kdump_agent.steps.network_up",
            "paramiko", "pyroute2", "difflib")
    assert [name for name in loaded if name.startswith(left)] == []
    assert "kdump_agent.steps.collect" in loaded
