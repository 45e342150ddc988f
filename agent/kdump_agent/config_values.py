"""kdump.conf's lines and values: how one line is read, and each directive's value checked.

config.py holds the file's model (Config) and the parser that walks the lines; each
converter here takes one line with a non-empty value and returns the setting, or raises
Invalid saying what is wrong and how to fix it. The parser turns that into a ConfigError
at the line. No I/O.
"""

from __future__ import annotations

import enum
import posixpath
import re
import shlex
from collections.abc import Callable
from dataclasses import dataclass

from .dracutargs import check_dracut_args
from .targets.netspec import parse_nfs_spec
from .targets.sshdest import parse_spec as parse_ssh_spec

DEFAULT_COLLECTOR: tuple[str, ...] = ("makedumpfile", "-l", "--message-level", "7", "-d", "31")
# kdumpctl's list of file systems a dump can be written to directly.
FILESYSTEM_TYPES: tuple[str, ...] = ("ext2", "ext3", "ext4", "xfs", "btrfs", "minix", "virtiofs")
# The programs RHEL documents as core collectors (kdump.conf(5), EXAMPLES) that the COLLECT
# step can drive. RHEL's `scp` is not one: an SSH target takes makedumpfile's flattened stream.
COLLECTORS: tuple[str, ...] = ("makedumpfile", "cp", "cat")
NOT_COLLECTORS: dict[str, str] = {
    "scp": "kdump-agent sends an SSH dump itself: name the server with 'ssh user@host' and keep "
           f"makedumpfile as core_collector (e.g. 'core_collector {shlex.join(DEFAULT_COLLECTOR)}')",
}
DEVICE_TAGS: tuple[str, ...] = ("UUID=", "LABEL=", "PARTUUID=", "PARTLABEL=")

# kdumpctl splits a line with `read`, i.e. on ASCII blanks; other Unicode spaces are text.
BLANKS = re.compile(r"[ \t\r\f\v]+")
DIGITS = re.compile(r"[0-9]{1,9}")  # ASCII only (str.isdigit takes '²'); far from int()'s limit
# The longest waits an admin can configure. Every wait adds to the time the machine is down
# before the dump even starts, and a typo (`disk_timeout 999999999` is 31 years) must not keep
# it there: an hour covers the slowest SAN or multipath discovery, ten minutes the slowest
# switch port (spanning tree needs 30 to 50 s before it forwards).
MAX_SECONDS: dict[str, int] = {"disk_timeout": 3600, "link_delay": 600}


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


def printable(text: str) -> str:
    """text with every non-printing character (C0 and C1 controls, DEL, bidi and other format
    characters) escaped as Python writes it (\\x1b, \\r, \\u202e). Everything config.py tells
    the admin goes through here, so a value quoted from the file cannot move the cursor, recolour
    or repaint the terminal, or hide the rest of the message."""
    return "".join(c if c.isprintable() else c.encode("unicode_escape").decode("ascii") for c in text)


class Invalid(Exception):
    """A value is wrong; the parser turns it into a ConfigError with file and line."""


@dataclass(frozen=True)
class Line:
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


def unquote(value: str) -> str:
    """Drop one pair of quotes that wraps the whole value, as in `core_collector "cp -a"`.

    `"a" "b"` is left alone: its first quote does not pair with its last.
    """
    if len(value) >= 2 and value[0] in "'\"" and value[-1] == value[0] and value[0] not in value[1:-1]:
        return value[1:-1]
    return value


def split_line(number: int, text: str) -> Line | None:
    """A file line as directive and value, or None for a blank or comment-only line."""
    if "\0" in text:
        raise Invalid("line contains a NUL byte; kdump.conf must be plain text")
    kept = text.split("#", 1)[0].strip(" \t\r\f\v")
    if not kept:
        return None
    name, *rest = BLANKS.split(kept, maxsplit=1)
    raw = unquote(rest[0]) if rest else ""
    return Line(number, name, raw, tuple(word for word in BLANKS.split(raw) if word), "#" in text)


# ---- value converters: each takes a line with a non-empty value and returns the setting,
# ---- or raises Invalid saying what is wrong and how to fix it.

def one_word(line: Line) -> str:
    """The one word a single-valued directive takes; RHEL's scripts would silently take the
    whole rest of the line, so extra words are an error here rather than a surprise there."""
    if len(line.words) > 1:
        raise Invalid(f"'{line.name}' takes one value, not {len(line.words)} ({line.value!r})")
    return line.words[0]


# Why a path with '..' is refused: it is looked up again somewhere else than where it was written.
DOTDOT_WHY: dict[str, str] = {
    "path": "the capture kernel resolves it below the dump target's mount point, where '..' can "
            "lead off the target",
}
DOTDOT_FILE = "the file is copied into the initramfs under this same path, where '..' can point outside it"


def no_dotdot(what: str, path: str, why: str) -> None:
    """Refuse a path with a '..' component, saying why it makes no sense there."""
    if ".." in path.split("/"):
        raise Invalid(f"{what} {path!r} must not contain '..': {why}; write the path without it")


def absolute(line: Line) -> str:
    path = one_word(line)
    if not posixpath.isabs(path):
        raise Invalid(f"'{line.name}' needs an absolute path, not {path!r} (start it with /)")
    no_dotdot(f"'{line.name}'", path, DOTDOT_WHY.get(line.name, DOTDOT_FILE))
    return path


def absolutes(line: Line) -> tuple[str, ...]:
    relative = [word for word in line.words if not posixpath.isabs(word)]
    if relative:
        raise Invalid(f"'{line.name}' needs absolute paths: {' '.join(relative)}")
    for path in line.words:
        no_dotdot(f"'{line.name}'", path, DOTDOT_WHY.get(line.name, DOTDOT_FILE))
    return line.words


def words(line: Line) -> tuple[str, ...]:
    return line.words


def text(line: Line) -> str:
    return line.value


def shell_words(line: Line) -> tuple[str, ...]:
    """Split like a shell would, since RHEL hands these values to one; never run a shell."""
    try:
        return tuple(shlex.split(line.raw))
    except ValueError as error:
        hint = " ('#' starts a comment anywhere on the line, even inside quotes)" if line.cut else ""
        raise Invalid(f"cannot split the value of '{line.name}': {error}{hint}") from None


def collector(line: Line) -> tuple[str, ...]:
    """The collector's argv. Only programs the COLLECT step knows how to drive are allowed,
    by bare name (found on the initramfs PATH) or by absolute path."""
    argv = shell_words(line)
    program = argv[0]
    name = posixpath.basename(program)
    if name in NOT_COLLECTORS:
        raise Invalid(f"core_collector {name!r} is not supported: {NOT_COLLECTORS[name]}")
    if name not in COLLECTORS or (program != name and not posixpath.isabs(program)):
        raise Invalid(f"core_collector {program!r} is not one of {', '.join(COLLECTORS)} "
                       f"(e.g. 'core_collector {shlex.join(DEFAULT_COLLECTOR)}')")
    return argv


def action_named(line: Line) -> Action:
    word = one_word(line)
    try:
        return Action(word)
    except ValueError:
        raise Invalid(f"'{line.name}' must be one of {', '.join(a.value for a in Action)}, "
                       f"not {word!r}") from None


def final_action(line: Line) -> Action:
    action = action_named(line)
    if action not in FINAL_ACTIONS:
        raise Invalid(f"'final_action' must be one of {', '.join(a.value for a in FINAL_ACTIONS)}, "
                       f"not {action.value!r} (shell and the like belong in failure_action)")
    return action


def seconds(line: Line) -> int:
    word = one_word(line)
    if not DIGITS.fullmatch(word):
        raise Invalid(f"'{line.name}' must be a whole number of seconds (at most 9 digits), not {word!r}")
    seconds, most = int(word), MAX_SECONDS[line.name]
    if seconds > most:
        raise Invalid(f"'{line.name}' {seconds} is too long: at most {most} seconds "
                       f"({most // 60} minutes); the machine stays down while the capture waits")
    return seconds


def count(line: Line) -> int:
    """A whole number: keep_old_dumps (dumps), free_disk_size (MiB); 0 turns it off."""
    word = one_word(line)
    if not DIGITS.fullmatch(word):
        unit = "MiB" if line.name == "free_disk_size" else "dumps"
        raise Invalid(f"'{line.name}' must be a whole number of {unit} (at most 9 digits; 0: off), "
                       f"not {word!r}")
    return int(word)


def dracut_args(line: Line) -> tuple[str, ...]:
    """dracut_args as dracut will read them; see dracutargs.py for what is refused and why."""
    words = shell_words(line)
    problems = check_dracut_args(words)
    if problems:
        raise Invalid("dracut_args: " + "; ".join(problems))
    return words


def mem_level(line: Line) -> int:
    word = one_word(line)
    if word not in ("0", "1", "2", "3"):
        raise Invalid(f"'{line.name}' must be 0, 1, 2 or 3, not {word!r}")
    return int(word)


def flag(line: Line) -> bool:
    word = one_word(line)
    if word not in ("0", "1"):
        raise Invalid(f"'{line.name}' must be 0 or 1, not {word!r}")
    return word == "1"


def yes_no(line: Line) -> bool:
    word = one_word(line)
    if word not in ("yes", "no"):
        raise Invalid(f"'{line.name}' must be yes or no, not {word!r}")
    return word == "yes"


DEVICE_DOTDOT = "name the device node itself"


def raw(line: Line) -> Target:
    device = one_word(line)
    if not device.startswith("/dev/") or device == "/dev/":
        raise Invalid(f"raw target {device!r} must be a device under /dev/ (e.g. /dev/vg/lv_kdump)")
    no_dotdot("raw target", device, DEVICE_DOTDOT)
    return Target(TargetKind.RAW, device, None, line.number)


def check_spec(parse: Callable[[str], object], spec: str) -> None:
    """Check a network spec with the parser the capture kernel uses (LOAD_CONFIG), so both
    refuse the same specs with the same message."""
    try:
        parse(spec)
    except ValueError as error:
        raise Invalid(str(error)) from None


def nfs_target(spec: str, fstype: str, number: int) -> Target:
    check_spec(parse_nfs_spec, spec)
    return Target(TargetKind.NFS, spec, fstype, number)


def nfs(line: Line) -> Target:
    return nfs_target(one_word(line), line.name, line.number)


def ssh_target(spec: str, number: int) -> Target:
    check_spec(parse_ssh_spec, spec)
    return Target(TargetKind.SSH, spec, None, number)


def ssh(line: Line) -> Target:
    return ssh_target(one_word(line), line.number)


def net(line: Line) -> Target:
    """The seed's `net`: NFS when it names an export, SSH when it names a user; a value that
    looks like both or neither is refused rather than guessed."""
    spec = one_word(line)
    is_nfs, is_ssh = ":/" in spec, "@" in spec
    if is_nfs == is_ssh:
        raise Invalid(f"cannot tell whether 'net {spec}' is NFS (host:/export) or SSH (user@host); "
                       "write 'nfs ...' or 'ssh ...' instead")
    return nfs_target(spec, "nfs", line.number) if is_nfs else ssh_target(spec, line.number)


def filesystem(line: Line) -> Target:
    spec = one_word(line)
    if line.name != "virtiofs":  # a virtiofs target is the tag the host exported, not a device
        tag = next((tag for tag in DEVICE_TAGS if spec.startswith(tag)), None)
        if not ((spec.startswith("/dev/") and spec != "/dev/") or (tag is not None and spec != tag)):
            raise Invalid(f"{line.name} target {spec!r} must be a device under /dev/ or "
                           f"{', '.join(t + '...' for t in DEVICE_TAGS)}")
        # A tag's value is found as /dev/disk/by-*/<value>, with '/' escaped but not '.'.
        no_dotdot(f"{line.name} target", spec if tag is None else spec[len(tag):], DEVICE_DOTDOT)
    return Target(TargetKind.FILESYSTEM, spec, line.name, line.number)
