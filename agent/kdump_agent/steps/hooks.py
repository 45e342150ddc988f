"""RUN_PRE, RUN_POST and the emergency hooks: the admin's own programs, run as RHEL runs them.

The semantics are kdump.conf(5)'s, as kdump-utils' do_kdump_pre and do_kdump_post carry
them out, because admins move these scripts over from RHEL unchanged:

- `kdump_pre` runs before the dump. If it fails the dump is not taken and the failure
  action runs: an admin uses it to decide whether this dump is wanted, or to prepare
  something the dump needs. Then `/etc/kdump/pre.d/*` run in name order; their failures
  are only logged.
- After the dump `/etc/kdump/post.d/*` run in name order, then `kdump_post` (RHEL runs the
  directory first), each with the dump's exit status as `$1`. Failures are logged: the dump
  is already decided.
- Before the failure action `kdump_emergency`, then `/etc/kdump/emergency.d/*`; failures
  are logged.

From the directories only regular files with an execute bit count, the same files
`mkinitrd` packs (see `hook_programs`). Each call is given a total time; every program gets
what is left of it, runs without a shell, and its output goes line by line to the console
and the kernel log, which is where the admin looks for it after the reboot.
"""

from __future__ import annotations

import logging
import os
import stat
import time

from .. import system
from ..config import Config
from ..context import HOOK_ROOT
from ..errors import CommandFailed, KdumpError

log = logging.getLogger("kdump-agent")

HOOK_KINDS: tuple[str, ...] = ("pre", "post", "emergency")


def hook_programs(kind: str, config: Config, hook_root: str) -> list[str]:
    """Every program one kind of hook runs, in the order it runs them.

    mkinitrd packs exactly these, so the capture kernel finds what the admin installed.
    """
    configured = _configured(kind, config)
    directory = _directory_programs(_directory(kind, hook_root))
    return directory + configured if kind == "post" else configured + directory


def run_pre(config: Config, timeout: float, hook_root: str = HOOK_ROOT) -> str:
    """Run kdump_pre, then pre.d. A failing kdump_pre raises: the dump must not be taken."""
    deadline = time.monotonic() + timeout
    notes: list[str] = []
    if config.kdump_pre:
        failure = _run(config.kdump_pre, [], deadline)
        if failure:
            raise KdumpError(f"kdump_pre {failure}")
        notes.append(f"kdump_pre {config.kdump_pre} ok")
    notes += _run_directory("pre", [], deadline, hook_root)
    return _summary(notes)


def run_post(config: Config, status: int, timeout: float, hook_root: str = HOOK_ROOT) -> str:
    """Run post.d, then kdump_post, each with the dump's exit status as $1 (0: saved)."""
    deadline = time.monotonic() + timeout
    notes = _run_directory("post", [str(status)], deadline, hook_root)
    if config.kdump_post:
        notes.append(_run_configured("kdump_post", config.kdump_post, [str(status)], deadline))
    return _summary(notes)


def run_emergency(config: Config, timeout: float, hook_root: str = HOOK_ROOT) -> str:
    """Run kdump_emergency, then emergency.d, before the failure action."""
    deadline = time.monotonic() + timeout
    notes: list[str] = []
    if config.kdump_emergency:
        notes.append(_run_configured("kdump_emergency", config.kdump_emergency, [], deadline))
    notes += _run_directory("emergency", [], deadline, hook_root)
    return _summary(notes)


def _configured(kind: str, config: Config) -> list[str]:
    """The one program kdump.conf names for this kind of hook, if any."""
    programs = {"pre": config.kdump_pre, "post": config.kdump_post,
                "emergency": config.kdump_emergency}
    if kind not in programs:
        raise ValueError(f"unknown hook kind {kind!r} (one of {', '.join(HOOK_KINDS)})")
    program = programs[kind]
    return [program] if program else []


def _directory(kind: str, hook_root: str) -> str:
    return os.path.join(hook_root, f"{kind}.d")


def _directory_programs(directory: str) -> list[str]:
    """The executable regular files in a hook directory, in name order.

    A missing directory means no hooks. Anything else there (a README, a script that lost
    its execute bit, a subdirectory) is skipped, as mkdumprd skips it when it packs them.
    """
    try:
        names = sorted(os.listdir(directory))
    except FileNotFoundError:
        return []
    except OSError as error:
        log.warning("cannot list %s: %s; running none of its hooks", directory, error.strerror)
        return []
    return [os.path.join(directory, name) for name in names
            if _is_executable_file(os.path.join(directory, name))]


def _is_executable_file(path: str) -> bool:
    """A regular file with any execute bit; a symlink counts by its target, as dracut
    installs the target."""
    try:
        mode = os.stat(path).st_mode
    except OSError as error:
        log.debug("%s: skipped (%s)", path, error.strerror)
        return False
    if not stat.S_ISREG(mode) or not mode & 0o111:
        log.debug("%s: skipped (not an executable regular file)", path)
        return False
    return True


def _run(program: str, args: list[str], deadline: float) -> str | None:
    """Run one hook until the shared deadline. None when it succeeded, else what went wrong
    (naming the program and its exit status)."""
    remaining = deadline - time.monotonic()
    if remaining <= 0:
        return f"{program} not started: the time for these hooks is used up"
    try:
        system.run([program, *args], timeout=remaining, log_stdout=True)
    except CommandFailed as error:
        return str(error)
    return None


def _run_configured(directive: str, program: str, args: list[str], deadline: float) -> str:
    """Run the program kdump.conf names, where its failure is only a warning."""
    failure = _run(program, args, deadline)
    if failure:
        log.warning("%s %s; going on", directive, failure)
        return f"{directive} {program} failed"
    return f"{directive} {program} ok"


def _run_directory(kind: str, args: list[str], deadline: float, hook_root: str) -> list[str]:
    """Run a hook directory's programs in name order; a failure is a warning, as on RHEL.

    Returns the note for the journal, or none when the directory held no programs.
    """
    programs = _directory_programs(_directory(kind, hook_root))
    failed = 0
    for program in programs:
        failure = _run(program, args, deadline)
        if failure:
            failed += 1
            log.warning("%s.d: %s; ignored", kind, failure)
    return [f"{kind}.d: {len(programs)} ran, {failed} failed"] if programs else []


def _summary(notes: list[str]) -> str:
    return "; ".join(notes) or "nothing to do"
