"""kdump-agent: saves a Linux crash dump from the capture kernel."""

__version__ = "0.1.0"
