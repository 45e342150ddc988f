"""One version source: kdump_agent.__version__, which pyproject.toml reads as a dynamic version
(and the Makefile's deb rule reads too), so a release bumps one line."""

from __future__ import annotations

import tomllib
from pathlib import Path

import kdump_agent

PYPROJECT = Path(__file__).resolve().parents[2] / "pyproject.toml"


def test_pyproject_takes_the_version_from_the_package() -> None:
    project = tomllib.loads(PYPROJECT.read_text())
    assert "version" not in project["project"], "a second copy of the version in pyproject.toml"
    assert "version" in project["project"]["dynamic"]
    assert project["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "kdump_agent.__version__"}
    assert kdump_agent.__version__
