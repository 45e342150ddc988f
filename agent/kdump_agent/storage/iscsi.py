"""An iSCSI LUN under the dump target, reached through the software initiator (iscsi_tcp).

The capture kernel logs in to exactly the one session the host has: the recorded portal,
target and portal group, as the recorded initiator, with CHAP (and mutual CHAP) where the
host uses it. `iscsistart` does it: open-iscsi's login tool for initramfs images, which needs
no iscsid, no node database and no configuration file. NETWORK_UP has brought the link up
first (server() is the portal), but the portal may still need seconds to answer: a login
that fails is tried again until the deadline, except for a refused CHAP login, which no
retry mends (it fails at once, naming the portal and target).

The CHAP passwords travel in the record (storage.json, in the 0600 image) and on
iscsistart's command line: they are hidden wherever the agent logs the command, and never
in describe() or repr().
"""

from __future__ import annotations

import glob
import os
import re
from dataclasses import dataclass, field
from typing import ClassVar

from .. import system
from ..errors import CommandFailed, MountError
from .base import NO_UDEV_ENV, Layer, retry_until

SESSIONS = "/sys/class/iscsi_session"
DEFAULT_PORT = 3260
# iscsistart's parent reports the daemon's error as "initiator reported error (24 - iSCSI
# login failed due to authorization failure)": ISCSI_ERR_LOGIN_AUTH_FAILED in iscsi_err.h.
_AUTH_FAILED = re.compile(r"\(24 - |authori[sz]ation failure")


@dataclass(frozen=True)
class IscsiSession(Layer):
    """One session as the host has it (/sys/class/iscsi_session/sessionN, host/stack.py)."""

    kind: ClassVar[str] = "iscsi"

    initiator: str  # the initiator IQN the host logs in as
    target: str  # the target IQN
    address: str  # the portal
    port: int = DEFAULT_PORT
    tpgt: int = 1
    username: str | None = None  # CHAP: the initiator's account on the target
    password: str | None = field(default=None, repr=False)
    username_in: str | None = None  # mutual CHAP: the target's account on the initiator
    password_in: str | None = field(default=None, repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "port", int(self.port))
        object.__setattr__(self, "tpgt", int(self.tpgt))
        for name in ("initiator", "target", "address"):
            if not getattr(self, name):
                raise ValueError(f"iscsi layer: {name} is empty")
        if (self.username is None) != (self.password is None):
            raise ValueError("iscsi layer: CHAP username and password are both given or both null")
        if (self.username_in is None) != (self.password_in is None):
            raise ValueError("iscsi layer: username_in and password_in are both given or both null")

    @property
    def portal(self) -> str:
        return f"[{self.address}]:{self.port}" if ":" in self.address else f"{self.address}:{self.port}"

    @property
    def chap(self) -> bool:
        return self.password is not None

    def describe(self) -> str:
        auth = " (mutual CHAP)" if self.password_in else " (CHAP)" if self.chap else ""
        return f"iSCSI {self.target} at {self.portal}{auth}"

    def programs(self) -> tuple[str, ...]:
        return ("iscsistart",)

    def modules(self) -> tuple[str, ...]:
        return ("iscsi_tcp", "sd_mod")  # dracut and modprobe bring libiscsi* and the transport

    def server(self) -> str | None:
        return self.address

    def secrets(self) -> tuple[str, ...]:
        return tuple(secret for secret in (self.password, self.password_in) if secret)

    def login_argv(self) -> list[str]:
        argv = ["iscsistart", "-i", self.initiator, "-t", self.target, "-g", str(self.tpgt),
                "-a", self.address, "-p", str(self.port)]
        if self.username is not None and self.password is not None:
            argv += ["-u", self.username, "-w", self.password]
        if self.username_in is not None and self.password_in is not None:
            argv += ["-U", self.username_in, "-W", self.password_in]
        return argv

    def bring_up(self, give_up_at: float) -> str:
        def attempt(left: float) -> str | None:
            if session_of(self.target) is None:
                self._log_in(left)
            disks = session_disks(self.target)
            if not disks:
                return None  # logged in; the LUN's disk is still being probed
            return f"logged in to {self.target} at {self.portal}: {', '.join(disks)}"

        return retry_until(give_up_at, self.describe(), attempt)

    def _log_in(self, left: float) -> None:
        """One login; CommandFailed (tried again) unless the target refused our CHAP."""
        result = system.run(self.login_argv(), timeout=max(1.0, left), check=False, extra_env=NO_UDEV_ENV,
                            secrets=self.secrets())
        if result.returncode == 0:
            return
        errors = result.stderr.decode(errors="replace").strip().splitlines()
        refused = [line for line in errors if _AUTH_FAILED.search(line)]
        if refused:
            raise MountError(f"{self.describe()}: the target refused the CHAP login ({refused[-1]})")
        last = errors[-1] if errors else ""
        raise CommandFailed(list(result.args), result.returncode, last)  # args as logged: secrets hidden


def session_of(target: str) -> str | None:
    """The sysfs directory of a session logged in to target, if there is one."""
    for session in sorted(glob.glob(os.path.join(SESSIONS, "session*"))):
        if (system.read_text(os.path.join(session, "targetname")) or "").strip() == target:
            return session
    return None


def session_disks(target: str) -> list[str]:
    """The disks (/dev/sdX) of target's session that the kernel has made so far."""
    session = session_of(target)
    if session is None:
        return []
    found = glob.glob(os.path.join(session, "device", "target*", "*", "block", "*"))
    return sorted(f"/dev/{os.path.basename(block)}" for block in found)
