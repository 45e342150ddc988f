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
