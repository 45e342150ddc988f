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
import hashlib
import posixpath
import shlex
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from . import config_values as values
from .config_values import DEFAULT_COLLECTOR, FILESYSTEM_TYPES, Action, Target, TargetKind, printable
from .errors import ConfigError, ConfigErrors
from .targets.local import FilesystemTarget
from .targets.nfs import NfsTarget
from .targets.raw import RawTarget
from .targets.sshdest import SshDestination
from .targets.sshdest import parse_spec as parse_ssh_spec

__all__ = ["DEFAULT_COLLECTOR", "FILESYSTEM_TYPES", "MAX_BYTES", "NOTICES", "Action", "Config", "ConfigError",
           "ConfigErrors", "DumpTarget", "Notice", "Target", "TargetKind", "load", "parse", "parse_bytes",
           "printable"]

# A real kdump.conf is a few kB; the cap keeps `load("/dev/zero")` from eating the memory
# the capture kernel does not have.
MAX_BYTES = 1 << 20
_BOM = b"\xef\xbb\xbf"  # some Windows editors start a UTF-8 file with it


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


def _error(source: str, number: int, message: str) -> ConfigError:
    """The one way this module makes a ConfigError: its message is printable()."""
    return ConfigError(source, number, printable(message))


@dataclass(frozen=True)
class _Directive:
    """How one directive is read: the Config field it sets and the converter for its value."""

    field: str
    convert: Callable[[values.Line], object]


_DIRECTIVES: dict[str, _Directive] = {
    "raw": _Directive("target", values.raw),
    "nfs": _Directive("target", values.nfs),
    "nfs4": _Directive("target", values.nfs),
    "ssh": _Directive("target", values.ssh),
    "net": _Directive("target", values.net),
    **{fstype: _Directive("target", values.filesystem) for fstype in FILESYSTEM_TYPES},
    "path": _Directive("path", values.absolute),
    "core_collector": _Directive("core_collector", values.collector),
    "default": _Directive("failure_action", values.action_named),
    "failure_action": _Directive("failure_action", values.action_named),
    "final_action": _Directive("final_action", values.final_action),
    "dracut_args": _Directive("dracut_args", values.dracut_args),
    "extra_modules": _Directive("extra_modules", values.words),
    "extra_bins": _Directive("extra_bins", values.absolutes),
    "kdump_pre": _Directive("kdump_pre", values.absolute),
    "kdump_post": _Directive("kdump_post", values.absolute),
    "kdump_emergency": _Directive("kdump_emergency", values.absolute),
    "link_delay": _Directive("link_delay", values.seconds),
    "disk_timeout": _Directive("disk_timeout", values.seconds),
    "debug_mem_level": _Directive("debug_mem_level", values.mem_level),
    "sshkey": _Directive("sshkey", values.absolute),
    "force_rebuild": _Directive("force_rebuild", values.flag),
    "force_no_rebuild": _Directive("force_no_rebuild", values.flag),
    "fence_kdump_args": _Directive("fence_kdump_args", values.text),
    "fence_kdump_nodes": _Directive("fence_kdump_nodes", values.words),
    "auto_reset_crashkernel": _Directive("auto_reset_crashkernel", values.yes_no),
    "keep_old_dumps": _Directive("keep_old_dumps", values.count),
    "free_disk_size": _Directive("free_disk_size", values.count),
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


def _notice(line: values.Line) -> Notice | None:
    """What NOTICES says about this line, if anything."""
    template = NOTICES.get((line.name, line.value), NOTICES.get((line.name, None)))
    if template is None:
        return None
    return Notice(line.number, printable(template.format(name=line.name, value=line.value)))


def _unknown(name: str) -> str:
    """Why a directive is refused: retired by RHEL (with what replaced it), or a likely typo."""
    if name in _RETIRED:
        return f"'{name}' is no longer supported: {_RETIRED[name]}"
    import difflib  # only a config with a typo needs it, not every capture's start-up
    close = difflib.get_close_matches(name, _DIRECTIVES, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else " (see kdump.conf(5) for the directives)"
    return f"unknown directive {name!r}{hint}"


def _parse_lines(lines: list[str], source: str, errors: list[ConfigError]) -> Config:
    """The parser proper. `errors` may already hold problems found in the bytes."""
    settings: dict[str, Any] = {}  # Config field -> value; each converter returns its field's type
    first_seen: dict[str, tuple[str, int]] = {}  # Config field -> (directive, line)
    notices: list[Notice] = []

    def fail(number: int, message: str) -> None:
        errors.append(_error(source, number, message))

    for number, text in enumerate(lines, start=1):
        try:
            line = values.split_line(number, text)
        except values.Invalid as error:
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
        except values.Invalid as error:
            fail(number, str(error))
            continue
        settings.setdefault(directive.field, value)
        notice = _notice(line)
        if notice:
            notices.append(notice)

    target, collector = settings.get("target"), settings.get("core_collector", DEFAULT_COLLECTOR)
    if target is not None and target.kind in _STREAM_TARGETS and \
            posixpath.basename(collector[0]) != "makedumpfile":
        fail(target.line, _STREAM_TARGETS[target.kind])
    if target is not None and target.kind is TargetKind.RAW:
        notices += [Notice(first_seen[name][1], _RAW_ROTATION.format(name=name))
                    for name in ("keep_old_dumps", "free_disk_size") if settings.get(name)]
        notices.sort(key=lambda notice: notice.line)
    if settings.get("force_rebuild") and settings.get("force_no_rebuild"):
        later = max(first_seen["force_rebuild"][1], first_seen["force_no_rebuild"][1])
        fail(later, "force_rebuild and force_no_rebuild cannot both be set; set only one to 1")
    if errors:
        raise ConfigErrors(sorted(errors, key=lambda error: error.line))
    return dataclasses.replace(Config(source), notices=tuple(notices), **settings)


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
