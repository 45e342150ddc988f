"""/etc/kdump.conf -> a frozen Config, validated the way RHEL's kdumpctl validates it.

The file format is Red Hat's (kdump.conf(5)): one `directive value` per line, `#` starts a
comment anywhere on the line (kdumpctl strips `#.*` before it looks at a line, even inside
quotes), one pair of quotes around the whole value is dropped, and every directive may
appear at most once. Where the seed article's spellings differ from current RHEL (`default`
for `failure_action`, `net` for `nfs`/`ssh`) both are accepted.

This module does no I/O except `load()` reading the one file, so `check-config` on the
host and LOAD_CONFIG in the capture kernel give the same verdict, and the tests run
without root. Every problem in the file is reported at once, each with file and line: an
admin fixing a config before the next crash should not have to iterate one error per run.
"""

from __future__ import annotations

import dataclasses
import difflib
import enum
import hashlib
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .dracutargs import check_dracut_args
from .errors import ConfigError, ConfigErrors
from .targets.local import FilesystemTarget
from .targets.netspec import parse_nfs_spec
from .targets.nfs import NfsTarget
from .targets.raw import RawTarget
from .targets.sshdest import SshDestination
from .targets.sshdest import parse_spec as parse_ssh_spec

__all__ = ["COLLECTORS", "DEFAULT_COLLECTOR", "DEVICE_TAGS", "FILESYSTEM_TYPES", "FINAL_ACTIONS",
           "MAX_BYTES", "MAX_SECONDS", "NOTICES", "Action", "Config", "ConfigError", "ConfigErrors",
           "DumpTarget", "Notice", "Target", "TargetKind", "load", "parse", "parse_bytes", "printable"]

DEFAULT_COLLECTOR: tuple[str, ...] = ("makedumpfile", "-l", "--message-level", "7", "-d", "31")
# kdumpctl's list of file systems a dump can be written to directly.
FILESYSTEM_TYPES: tuple[str, ...] = ("ext2", "ext3", "ext4", "xfs", "btrfs", "minix", "virtiofs")
# The programs RHEL documents as core collectors (kdump.conf(5), EXAMPLES) that the COLLECT
# step can drive. RHEL's `scp` is not one: an SSH target takes makedumpfile's flattened stream.
COLLECTORS: tuple[str, ...] = ("makedumpfile", "cp", "cat")
_NOT_COLLECTORS: dict[str, str] = {
    "scp": "kdump-agent sends an SSH dump itself: name the server with 'ssh user@host' and keep "
           f"makedumpfile as core_collector (e.g. 'core_collector {shlex.join(DEFAULT_COLLECTOR)}')",
}
DEVICE_TAGS: tuple[str, ...] = ("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=")
# A real kdump.conf is a few kB; the cap keeps `load("/dev/zero")` from eating the memory
# the capture kernel does not have.
MAX_BYTES = 1 << 20

# kdumpctl splits a line with `read`, i.e. on ASCII blanks; other Unicode spaces are text.
_BLANKS = re.compile(r"[ \t\r\f\v]+")
_DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII only (str.isdigit takes '²'); far from int()'s limit
# The longest waits an admin can configure. Every wait adds to the time the machine is down
# before the dump even starts, and a typo (`disk_timeout 999999999` is 31 years) must not keep
# it there: an hour covers the slowest SAN or multipath discovery, ten minutes the slowest
# switch port (spanning tree needs 30 to 50 s before it forwards).
MAX_SECONDS: dict[str, int] = {"disk_timeout": 3600, "link_delay": 600}
_BOM = b"\xef\xbb\xbf"  # some Windows editors start a UTF-8 file with it


class Action(enum.Enum):
    """What the capture kernel does when the dump fails (failure_action) or ends (final_action)."""

    REBOOT = "reboot"
    HALT = "halt"
    POWEROFF = "poweroff"
    SHELL = "shell"
    MOUNT_ROOT_RUN_INIT = "mount_root_run_init"  # RHEL 6/7 and the seed
    DUMP_TO_ROOTFS = "dump_to_rootfs"  # RHEL 7.x and later


# kdump.conf(5): final_action must end the capture kernel, so it cannot be shell & co.
FINAL_ACTIONS: tuple[Action, ...] = (Action.REBOOT, Action.HALT, Action.POWEROFF)


class TargetKind(enum.Enum):
    """The four kinds of dump target kdump.conf can name."""

    FILESYSTEM = "filesystem"
    RAW = "raw"
    NFS = "nfs"
    SSH = "ssh"


@dataclass(frozen=True)
class Target:
    """The one dump target named in the file, with its line for later messages."""

    kind: TargetKind
    spec: str  # FILESYSTEM: /dev/..., UUID=..., LABEL=... (virtiofs: a tag); RAW: /dev/...;
    #            NFS: host:/export; SSH: user@host
    fstype: str | None  # FILESYSTEM: ext4, xfs, ...; NFS: nfs or nfs4; else None
    line: int


# The configured target as the objects that act on it (targets/registry.py maps each to its
# Destination); `path` and `sshkey` are part of it.
DumpTarget = FilesystemTarget | RawTarget | NfsTarget | SshDestination

# Targets that take the collector's output as a stream of flattened records.
_STREAM_TARGETS: dict[TargetKind, str] = {
    TargetKind.RAW: "a raw target needs makedumpfile as core_collector: restore-raw reads its "
                    "flattened (-F) output back",
    TargetKind.SSH: "an ssh target needs makedumpfile as core_collector: its flattened (-F) stream "
                    "is rebuilt into a vmcore on the server",
}


@dataclass(frozen=True)
class Notice:
    """Something the admin should know that is not an error: a setting this version ignores."""

    line: int
    message: str


@dataclass(frozen=True)
class Config:
    """A validated kdump.conf. The defaults are RHEL's for a file that says nothing."""

    source: str
    target: Target | None = None  # None: RHEL's rule, the file system that holds `path`
    path: str = "/var/crash"
    core_collector: tuple[str, ...] = DEFAULT_COLLECTOR
    failure_action: Action = Action.REBOOT
    final_action: Action = Action.REBOOT
    dracut_args: tuple[str, ...] = ()
    extra_modules: tuple[str, ...] = ()
    extra_bins: tuple[str, ...] = ()
    kdump_pre: str | None = None
    kdump_post: str | None = None
    kdump_emergency: str | None = None
    link_delay: int | None = None
    disk_timeout: int | None = None
    debug_mem_level: int = 0
    sshkey: str = "/root/.ssh/kdump_id_rsa"
    force_rebuild: bool = False
    force_no_rebuild: bool = False
    fence_kdump_args: str | None = None
    fence_kdump_nodes: tuple[str, ...] = ()
    auto_reset_crashkernel: bool | None = None
    keep_old_dumps: int = 0  # ours (SUSE's KDUMP_KEEP_OLD_DUMPS): dumps of this host kept, 0 all
    free_disk_size: int = 0  # ours (SUSE's KDUMP_FREE_DISK_SIZE): MiB left free after the dump
    notices: tuple[Notice, ...] = ()
    digest: str = ""  # sha256 of the file's bytes, so a dump's manifest names the exact config

    @property
    def dump_target(self) -> DumpTarget | None:
        """The target line as a typed target, from the same parse check-config gave it; None
        without a target line (RHEL's rule: the file system that holds `path`)."""
        target = self.target
        if target is None:
            return None
        if target.kind is TargetKind.RAW:
            return RawTarget(device=target.spec)
        if target.kind is TargetKind.NFS:
            return NfsTarget(spec=target.spec, fstype=target.fstype or "nfs", directory=self.path)
        if target.kind is TargetKind.SSH:
            return parse_ssh_spec(target.spec, directory=self.path, key_path=self.sshkey)
        return FilesystemTarget(spec=target.spec, fstype=target.fstype or "", directory=self.path)

    def summary(self) -> list[str]:
        """What `check-config` prints: the settings that decide where the dump goes, always,
        then every other setting that differs from the default, then the notices."""
        target = self.target
        lines = [
            f"target: {target.fstype or target.kind.value} {target.spec}" if target
            else f"target: none (RHEL's rule: the file system holding {self.path})",
            f"path: {self.path}",
            f"core_collector: {shlex.join(self.core_collector)}",
            f"failure_action: {self.failure_action.value}",
            f"final_action: {self.final_action.value}",
        ]
        for field in dataclasses.fields(self):
            value = getattr(self, field.name)
            if field.name not in _ALWAYS_SUMMARISED and value != field.default:
                lines.append(f"{field.name}: {_render(value)}")
        lines += [f"note: {self.source}:{notice.line}: {notice.message}" for notice in self.notices]
        return [printable(line) for line in lines]


_ALWAYS_SUMMARISED = frozenset({"source", "target", "path", "core_collector", "failure_action",
                                "final_action", "notices", "digest"})


def _render(value: object) -> str:
    """A setting as the admin would write it back into kdump.conf."""
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, tuple):
        return shlex.join(value)
    return str(value)


def printable(text: str) -> str:
    """text with every non-printing character (C0 and C1 controls, DEL, bidi and other format
    characters) escaped as Python writes it (\\x1b, \\r, \\u202e). Everything this module tells
    the admin goes through here, so a value quoted from the file cannot move the cursor, recolour
    or repaint the terminal, or hide the rest of the message."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


def _error(source: str, number: int, message: str) -> ConfigError:
    """The one way this module makes a ConfigError: its message is printable()."""
    return ConfigError(source, number, printable(message))


class _Invalid(Exception):
    """A value is wrong; the parser turns it into a ConfigError with file and line."""


@dataclass(frozen=True)
class _Line:
    """One directive line, after comment, blanks and one pair of wrapping quotes are dropped."""

    number: int
    name: str
    raw: str  # the value as written (for shlex-split values, whose quotes matter)
    words: tuple[str, ...]  # the value split on blanks
    cut: bool  # a '#' cut the line short, perhaps inside quotes

    @property
    def value(self) -> str:
        """The value with its blanks normalised, as messages and notices quote it."""
        return " ".join(self.words)


def _unquote(value: str) -> str:
    """Drop one pair of quotes that wraps the whole value, as in `core_collector "cp -a"`.

    `"a" "b"` is left alone: its first quote does not pair with its last.
    """
    if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0] and value[0] not in value[1:-1]:
        return value[1:-1]
    return value


def _split_line(number: int, text: str) -> _Line | None:
    """A file line as directive and value, or None for a blank or comment-only line."""
    if "\0" in text:
        raise _Invalid("line contains a NUL byte; kdump.conf must be plain text")
    kept = text.split("#", 1)[0].strip(" \t\r\f\v")
    if not kept:
        return None
    name, *rest = _BLANKS.split(kept, maxsplit=1)
    raw = _unquote(rest[0]) if rest else ""
    return _Line(number, name, raw, tuple(word for word in _BLANKS.split(raw) if word), "#" in text)


# ---- value converters: each takes a line with a non-empty value and returns the setting,
# ---- or raises _Invalid saying what is wrong and how to fix it.

def _word(line: _Line) -> str:
    """The one word a single-valued directive takes; RHEL's scripts would silently take the
    whole rest of the line, so extra words are an error here rather than a surprise there."""
    if len(line.words) > 1:
        raise _Invalid(f"'{line.name}' takes one value, not {len(line.words)} ({line.value!r})")
    return line.words[0]


# Why a path with '..' is refused: it is looked up again somewhere else than where it was written.
_DOTDOT_WHY: dict[str, str] = {
    "path": "the capture kernel resolves it below the dump target's mount point, where '..' can "
            "lead off the target",
}
_DOTDOT_FILE = "the file is copied into the initramfs under this same path, where '..' can point outside it"


def _no_dotdot(what: str, path: str, why: str) -> None:
    """Refuse a path with a '..' component, saying why it makes no sense there."""
    if ".." in path.split("/"):
        raise _Invalid(f"{what} {path!r} must not contain '..': {why}; write the path without it")


def _absolute(line: _Line) -> str:
    path = _word(line)
    if not posixpath.isabs(path):
        raise _Invalid(f"'{line.name}' needs an absolute path, not {path!r} (start it with /)")
    _no_dotdot(f"'{line.name}'", path, _DOTDOT_WHY.get(line.name, _DOTDOT_FILE))
    return path


def _absolutes(line: _Line) -> tuple[str, ...]:
    relative = [word for word in line.words if not posixpath.isabs(word)]
    if relative:
        raise _Invalid(f"'{line.name}' needs absolute paths: {' '.join(relative)}")
    for path in line.words:
        _no_dotdot(f"'{line.name}'", path, _DOTDOT_WHY.get(line.name, _DOTDOT_FILE))
    return line.words


def _words(line: _Line) -> tuple[str, ...]:
    return line.words


def _text(line: _Line) -> str:
    return line.value


def _shell_words(line: _Line) -> tuple[str, ...]:
    """Split like a shell would, since RHEL hands these values to one; never run a shell."""
    try:
        return tuple(shlex.split(line.raw))
    except ValueError as error:
        hint = " ('#' starts a comment anywhere on the line, even inside quotes)" if line.cut else ""
        raise _Invalid(f"cannot split the value of '{line.name}': {error}{hint}") from None


def _collector(line: _Line) -> tuple[str, ...]:
    """The collector's argv. Only programs the COLLECT step knows how to drive are allowed,
    by bare name (found on the initramfs PATH) or by absolute path."""
    argv = _shell_words(line)
    program = argv[0]
    name = posixpath.basename(program)
    if name in _NOT_COLLECTORS:
        raise _Invalid(f"core_collector {name!r} is not supported: {_NOT_COLLECTORS[name]}")
    if name not in COLLECTORS or (program != name and not posixpath.isabs(program)):
        raise _Invalid(f"core_collector {program!r} is not one of {', '.join(COLLECTORS)} "
                       f"(e.g. 'core_collector {shlex.join(DEFAULT_COLLECTOR)}')")
    return argv


def _action(line: _Line) -> Action:
    word = _word(line)
    try:
        return Action(word)
    except ValueError:
        raise _Invalid(f"'{line.name}' must be one of {', '.join(a.value for a in Action)}, "
                       f"not {word!r}") from None


def _final_action(line: _Line) -> Action:
    action = _action(line)
    if action not in FINAL_ACTIONS:
        raise _Invalid(f"'final_action' must be one of {', '.join(a.value for a in FINAL_ACTIONS)}, "
                       f"not {action.value!r} (shell and the like belong in failure_action)")
    return action


def _seconds(line: _Line) -> int:
    word = _word(line)
    if not _DIGITS.fullmatch(word):
        raise _Invalid(f"'{line.name}' must be a whole number of seconds (at most 9 digits), not {word!r}")
    seconds, most = int(word), MAX_SECONDS[line.name]
    if seconds > most:
        raise _Invalid(f"'{line.name}' {seconds} is too long: at most {most} seconds "
                       f"({most // 60} minutes); the machine stays down while the capture waits")
    return seconds


def _count(line: _Line) -> int:
    """A whole number: keep_old_dumps (dumps), free_disk_size (MiB); 0 turns it off."""
    word = _word(line)
    if not _DIGITS.fullmatch(word):
        unit = "MiB" if line.name == "free_disk_size" else "dumps"
        raise _Invalid(f"'{line.name}' must be a whole number of {unit} (at most 9 digits; 0: off), "
                       f"not {word!r}")
    return int(word)


def _dracut_args(line: _Line) -> tuple[str, ...]:
    """dracut_args as dracut will read them; see dracutargs.py for what is refused and why."""
    words = _shell_words(line)
    problems = check_dracut_args(words)
    if problems:
        raise _Invalid("dracut_args: " + "; ".join(problems))
    return words


def _mem_level(line: _Line) -> int:
    word = _word(line)
    if word not in ("0", "1", "2", "3"):
        raise _Invalid(f"'{line.name}' must be 0, 1, 2 or 3, not {word!r}")
    return int(word)


def _flag(line: _Line) -> bool:
    word = _word(line)
    if word not in ("0", "1"):
        raise _Invalid(f"'{line.name}' must be 0 or 1, not {word!r}")
    return word == "1"


def _yes_no(line: _Line) -> bool:
    word = _word(line)
    if word not in ("yes", "no"):
        raise _Invalid(f"'{line.name}' must be yes or no, not {word!r}")
    return word == "yes"


_DEVICE_DOTDOT = "name the device node itself"


def _raw(line: _Line) -> Target:
    device = _word(line)
    if not device.startswith("/dev/") or device == "/dev/":
        raise _Invalid(f"raw target {device!r} must be a device under /dev/ (e.g. /dev/vg/lv_kdump)")
    _no_dotdot("raw target", device, _DEVICE_DOTDOT)
    return Target(TargetKind.RAW, device, None, line.number)


def _spec(parse: Callable[[str], object], spec: str) -> None:
    """Check a network spec with the parser the capture kernel uses (LOAD_CONFIG), so both
    refuse the same specs with the same message."""
    try:
        parse(spec)
    except ValueError as error:
        raise _Invalid(str(error)) from None


def _nfs_target(spec: str, fstype: str, number: int) -> Target:
    _spec(parse_nfs_spec, spec)
    return Target(TargetKind.NFS, spec, fstype, number)


def _nfs(line: _Line) -> Target:
    return _nfs_target(_word(line), line.name, line.number)


def _ssh_target(spec: str, number: int) -> Target:
    _spec(parse_ssh_spec, spec)
    return Target(TargetKind.SSH, spec, None, number)


def _ssh(line: _Line) -> Target:
    return _ssh_target(_word(line), line.number)


def _net(line: _Line) -> Target:
    """The seed's `net`: NFS when it names an export, SSH when it names a user; a value that
    looks like both or neither is refused rather than guessed."""
    spec = _word(line)
    is_nfs, is_ssh = ":/" in spec, "@" in spec
    if is_nfs == is_ssh:
        raise _Invalid(f"cannot tell whether 'net {spec}' is NFS (host:/export) or SSH (user@host); "
                       "write 'nfs ...' or 'ssh ...' instead")
    return _nfs_target(spec, "nfs", line.number) if is_nfs else _ssh_target(spec, line.number)


def _filesystem(line: _Line) -> Target:
    spec = _word(line)
    if line.name != "virtiofs":  # a virtiofs target is the tag the host exported, not a device
        tag = next((tag for tag in DEVICE_TAGS if spec.startswith(tag)), None)
        if not ((spec.startswith("/dev/") and spec != "/dev/") or (tag is not None and spec != tag)):
            raise _Invalid(f"{line.name} target {spec!r} must be a device under /dev/ or "
                           f"{', '.join(t + '...' for t in DEVICE_TAGS)}")
        # A tag's value is found as /dev/disk/by-*/<value>, with '/' escaped but not '.'.
        _no_dotdot(f"{line.name} target", spec if tag is None else spec[len(tag):], _DEVICE_DOTDOT)
    return Target(TargetKind.FILESYSTEM, spec, line.name, line.number)


@dataclass(frozen=True)
class _Directive:
    """How one directive is read: the Config field it sets and the converter for its value."""

    field: str
    convert: Callable[[_Line], object]


_DIRECTIVES: dict[str, _Directive] = {
    "raw": _Directive("target", _raw),
    "nfs": _Directive("target", _nfs),
    "nfs4": _Directive("target", _nfs),
    "ssh": _Directive("target", _ssh),
    "net": _Directive("target", _net),
    **{fstype: _Directive("target", _filesystem) for fstype in FILESYSTEM_TYPES},
    "path": _Directive("path", _absolute),
    "core_collector": _Directive("core_collector", _collector),
    "default": _Directive("failure_action", _action),
    "failure_action": _Directive("failure_action", _action),
    "final_action": _Directive("final_action", _final_action),
    "dracut_args": _Directive("dracut_args", _dracut_args),
    "extra_modules": _Directive("extra_modules", _words),
    "extra_bins": _Directive("extra_bins", _absolutes),
    "kdump_pre": _Directive("kdump_pre", _absolute),
    "kdump_post": _Directive("kdump_post", _absolute),
    "kdump_emergency": _Directive("kdump_emergency", _absolute),
    "link_delay": _Directive("link_delay", _seconds),
    "disk_timeout": _Directive("disk_timeout", _seconds),
    "debug_mem_level": _Directive("debug_mem_level", _mem_level),
    "sshkey": _Directive("sshkey", _absolute),
    "force_rebuild": _Directive("force_rebuild", _flag),
    "force_no_rebuild": _Directive("force_no_rebuild", _flag),
    "fence_kdump_args": _Directive("fence_kdump_args", _text),
    "fence_kdump_nodes": _Directive("fence_kdump_nodes", _words),
    "auto_reset_crashkernel": _Directive("auto_reset_crashkernel", _yes_no),
    "keep_old_dumps": _Directive("keep_old_dumps", _count),
    "free_disk_size": _Directive("free_disk_size", _count),
}

# Directives older RHEL releases had and current kdumpctl rejects; the hint says what replaced them.
_RETIRED: dict[str, str] = {
    "options": "pass module options on the capture kernel's command line instead "
               "(KDUMP_COMMANDLINE_APPEND in /etc/sysconfig/kdump)",
    "blacklist": "add rd.driver.blacklist=<module> to KDUMP_COMMANDLINE_APPEND in /etc/sysconfig/kdump",
    "override_resettable": "remove the line",
}

_RAW_ROTATION = "'{name}' is ignored with a raw target: a raw device holds one dump, no directories"
_NO_TARGET = "{name} target not yet supported by this version"
_IGNORED = "'{name}' is not supported by kdump-agent (it is ignored)"

# The one place that decides what the admin is told about settings this version does not
# carry out, or carries out differently from RHEL. Key: (directive, value), or (directive,
# None) for any value; the exact value wins. Directives absent here (path, the file-system,
# raw, nfs, nfs4 and ssh targets, core_collector, the actions, dracut_args, extra_modules,
# extra_bins, the hooks, sshkey, link_delay, force_rebuild, force_no_rebuild, and our own
# keep_old_dumps and free_disk_size) are acted on and need no notice.
NOTICES: dict[tuple[str, str | None], str] = {
    ("virtiofs", None): _NO_TARGET,
    ("net", None): "'net' is the seed's spelling of the nfs and ssh targets and works here; RHEL 8 "
                   "and later reject it: write 'nfs' or 'ssh' there",
    # The mount step does wait disk_timeout seconds for the target device (targets/local.py).
    ("disk_timeout", None): "'disk_timeout' is used as the wait for the target device; RHEL "
                            "deprecated it (its equivalent there is dracut's rd.timeout)",
    ("debug_mem_level", None): "'debug_mem_level' prints memory use at every capture state; RHEL "
                               "moved it to dracut (rd.memdebug=<0-3> in KDUMP_COMMANDLINE_APPEND "
                               "in /etc/sysconfig/kdump)",
    ("fence_kdump_args", None): _IGNORED,
    ("fence_kdump_nodes", None): _IGNORED,
    ("auto_reset_crashkernel", None): _IGNORED,
}


def _notice(line: _Line) -> Notice | None:
    """What NOTICES says about this line, if anything."""
    template = NOTICES.get((line.name, line.value), NOTICES.get((line.name, None)))
    if template is None:
        return None
    return Notice(line.number, printable(template.format(name=line.name, value=line.value)))


def _unknown(name: str) -> str:
    """Why a directive is refused: retired by RHEL (with what replaced it), or a likely typo."""
    if name in _RETIRED:
        return f"'{name}' is no longer supported: {_RETIRED[name]}"
    close = difflib.get_close_matches(name, _DIRECTIVES, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else " (see kdump.conf(5) for the directives)"
    return f"unknown directive {name!r}{hint}"


def _parse_lines(lines: list[str], source: str, errors: list[ConfigError]) -> Config:
    """The parser proper. `errors` may already hold problems found in the bytes."""
    values: dict[str, Any] = {}  # Config field -> value; each converter returns its field's type
    first_seen: dict[str, tuple[str, int]] = {}  # Config field -> (directive, line)
    notices: list[Notice] = []

    def fail(number: int, message: str) -> None:
        errors.append(_error(source, number, message))

    for number, text in enumerate(lines, start=1):
        try:
            line = _split_line(number, text)
        except _Invalid as error:
            fail(number, str(error))
            continue
        if line is None:
            continue
        directive = _DIRECTIVES.get(line.name)
        if directive is None:
            fail(number, _unknown(line.name))
            continue
        first = first_seen.setdefault(directive.field, (line.name, number))
        if first[1] != number:
            if directive.field == "target":
                fail(number, f"more than one dump target (first at line {first[1]})")
            elif first[0] != line.name:
                fail(number, f"'{line.name}' and '{first[0]}' (line {first[1]}) both set "
                             f"{directive.field}; keep one")
            else:
                fail(number, f"duplicated directive '{line.name}' (first at line {first[1]})")
        if not line.words:
            fail(number, f"'{line.name}' needs a value")
            continue
        try:
            value = directive.convert(line)
        except _Invalid as error:
            fail(number, str(error))
            continue
        values.setdefault(directive.field, value)
        notice = _notice(line)
        if notice:
            notices.append(notice)

    target, collector = values.get("target"), values.get("core_collector", DEFAULT_COLLECTOR)
    if target is not None and target.kind in _STREAM_TARGETS and \
            posixpath.basename(collector[0]) != "makedumpfile":
        fail(target.line, _STREAM_TARGETS[target.kind])
    if target is not None and target.kind is TargetKind.RAW:
        notices += [Notice(first_seen[name][1], _RAW_ROTATION.format(name=name))
                    for name in ("keep_old_dumps", "free_disk_size") if values.get(name)]
        notices.sort(key=lambda notice: notice.line)
    if values.get("force_rebuild") and values.get("force_no_rebuild"):
        later = max(first_seen["force_rebuild"][1], first_seen["force_no_rebuild"][1])
        fail(later, "force_rebuild and force_no_rebuild cannot both be set; set only one to 1")
    if errors:
        raise ConfigErrors(sorted(errors, key=lambda error: error.line))
    return dataclasses.replace(Config(source), notices=tuple(notices), **values)


def parse(text: str, source: str) -> Config:
    """Parse kdump.conf text; raise ConfigErrors naming every problem, each with its line."""
    return _parse_lines(text.split("\n"), source, [])


def parse_bytes(data: bytes, source: str) -> Config:
    """Parse the file's bytes and record their digest.

    Each line is decoded on its own so a stray Latin-1 byte is reported at its line, and the
    rest of the file is still checked. A UTF-8 byte order mark before the first line is
    skipped; the digest is still that of the file as it is.
    """
    errors: list[ConfigError] = []
    lines: list[str] = []
    text = data.removeprefix(_BOM)
    for number, raw in enumerate(text.split(b"\n"), start=1):
        try:
            lines.append(raw.decode("utf-8"))
        except UnicodeDecodeError as error:
            errors.append(_error(source, number, f"not valid UTF-8 (byte 0x{raw[error.start]:02x} "
                                                 f"at column {error.start + 1})"))
            lines.append("")
    config = _parse_lines(lines, source, errors)
    return dataclasses.replace(config, digest=hashlib.sha256(data).hexdigest())


def load(path: str) -> Config:
    """Read and parse one kdump.conf; an unreadable file is a ConfigError at line 0."""
    try:
        with open(path, "rb") as file:
            data = file.read(MAX_BYTES + 1)
    except OSError as error:
        raise ConfigErrors([_error(path, 0, f"cannot read: {error.strerror or error}")]) from error
    if len(data) > MAX_BYTES:
        raise ConfigErrors([_error(path, 0, f"larger than {MAX_BYTES} bytes: not a kdump.conf")])
    return parse_bytes(data, path)
