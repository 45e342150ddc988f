"""Where the agent's messages go: the console, and in the capture kernel the kernel log.

In the capture kernel every line also goes to /dev/kmsg at debug level, so it lands in the
kernel's ring buffer in time order with the kernel's own messages (that buffer becomes
kexec-dmesg.log) without being printed on the console a second time.
"""

from __future__ import annotations

import logging
import sys

LOGGER_NAME = "kdump-agent"
KMSG_PATH = "/dev/kmsg"
DEVKMSG_SYSCTL = "/proc/sys/kernel/printk_devkmsg"


# The kernel refuses a /dev/kmsg write longer than about 1 KiB; longer lines go in pieces.
KMSG_LINE_BYTES = 900


class KmsgHandler(logging.Handler):
    """Writes records to /dev/kmsg as `<7>kdump-agent: message` (one write per line)."""

    def __init__(self, path: str = KMSG_PATH) -> None:
        super().__init__()
        self._kmsg = open(path, "w", encoding="utf-8", buffering=1)  # noqa: SIM115 - lives as long as the process

    def emit(self, record: logging.LogRecord) -> None:
        try:
            for line in self.format(record).splitlines():
                encoded = line.encode(errors="replace")
                for start in range(0, max(len(encoded), 1), KMSG_LINE_BYTES):
                    piece = encoded[start:start + KMSG_LINE_BYTES].decode(errors="replace")
                    self._kmsg.write(f"<7>{LOGGER_NAME}: {piece}\n")
        except OSError:
            self.handleError(record)


def setup(*, to_kernel_log: bool, verbose: bool = False) -> logging.Logger:
    """Configure the agent's logger once, for the host side or the capture kernel."""
    logger = logging.getLogger(LOGGER_NAME)
    logger.setLevel(logging.DEBUG if verbose else logging.INFO)
    logger.propagate = False
    console = logging.StreamHandler(sys.stderr)
    console.setFormatter(logging.Formatter(f"{LOGGER_NAME}: %(message)s"))
    logger.handlers = [console]
    if to_kernel_log:
        _allow_unlimited_kmsg_writes()
        try:
            logger.addHandler(KmsgHandler())
        except OSError as error:
            logger.warning("kernel log not available (%s): the log is on the console only", error)
    return logger


def _allow_unlimited_kmsg_writes() -> None:
    """The kernel rate-limits writes to /dev/kmsg by default; our record must be whole."""
    try:
        with open(DEVKMSG_SYSCTL, "w", encoding="ascii") as sysctl:
            sysctl.write("on\n")
    except OSError:
        pass
