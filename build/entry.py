"""PyInstaller entry point for the single kdump-agent binary."""

import sys

from kdump_agent.__main__ import run

sys.exit(run())
