"""QEMU's machine protocol (QMP), just enough for a test to act on a running guest's
hardware, e.g. pull a disk out with device_del as a dying disk leaves a server.

QEMU listens on a Unix socket (`qmp_args`); each command opens its own connection, so
nothing stays connected between the moments a test needs the monitor.
"""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

TIMEOUT_S = 10.0


def qmp_args(socket_path: Path) -> list[str]:
    """The QEMU arguments that serve QMP on `socket_path` (keep it short: sun_path holds
    108 bytes)."""
    return ["-qmp", f"unix:{socket_path},server=on,wait=off"]


def qmp_command(socket_path: Path, command: str, arguments: dict[str, Any] | None = None,
                timeout_s: float = TIMEOUT_S) -> Any:
    """Run one QMP command and return its "return" value; raise with QEMU's error text.

    Asynchronous events QEMU sends meanwhile (DEVICE_DELETED, ...) are skipped."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout_s)
        sock.connect(str(socket_path))
        replies = sock.makefile("r", encoding="utf-8")
        _reply(replies, "QMP")  # the greeting
        for execute, args in (("qmp_capabilities", None), (command, arguments)):
            request: dict[str, Any] = {"execute": execute}
            if args:
                request["arguments"] = args
            sock.sendall(json.dumps(request).encode() + b"\n")
            answer = _reply(replies, "return", "error")
            if "error" in answer:
                raise RuntimeError(f"QMP {execute} failed: {answer['error'].get('desc', answer)}")
        return answer["return"]


def _reply(replies: Any, *keys: str) -> dict[str, Any]:
    """The next message from QEMU that holds one of `keys`."""
    for line in replies:
        message = json.loads(line)
        if any(key in message for key in keys):
            return dict(message)
    raise RuntimeError(f"QEMU closed the QMP socket before answering ({', '.join(keys)})")
