"""/etc/default/kdump-agent: the admin's edits to the capture kernel's command line.

The Debian place for a service's settings, in the KEY="value" form RHEL's
/etc/sysconfig/kdump uses, so its two command-line settings can be copied over as they are:

    KDUMP_COMMANDLINE_APPEND="rd.memdebug=2 nr_cpus=2"
    KDUMP_COMMANDLINE_REMOVE="nokaslr"

One assignment a line, `#` comments, the value in double or single quotes or bare (one
word). The file is read, never run by a shell. Other keys RHEL's file has (KEXEC_ARGS,
KDUMP_KERNELVER, ...) are reported and ignored rather than refused, so a copied file does
not stop the service at boot.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass

from ..errors import KdumpError
from ..system import read_text

log = logging.getLogger("kdump-agent")

APPEND_KEY = "KDUMP_COMMANDLINE_APPEND"
REMOVE_KEY = "KDUMP_COMMANDLINE_REMOVE"
_ASSIGNMENT = re.compile(r"(?:export\s+)?([A-Za-z_][A-Za-z0-9_]*)=(.*)")


@dataclass(frozen=True)
class Defaults:
    """The settings the file gives; empty when there is no file."""

    append: str = ""
    remove: str = ""
    ignored: tuple[str, ...] = ()  # "FILE:LINE: KEY" for keys this version does not use


def _value(text: str, where: str) -> str:
    """The assigned value with its quotes (and a trailing `# comment`) removed; a bare value
    must be one word, as the shell that reads RHEL's file would take only that."""
    text = text.strip()
    if text[:1] in ("'", '"'):
        quote = text[0]
        close = text.find(quote, 1)
        rest = text[close + 1:].strip() if close > 0 else ""
        if close < 0 or (rest and not rest.startswith("#")):
            raise KdumpError(f"{where}: unbalanced {quote} in the value (write KEY=\"a b c\")")
        return text[1:close]
    value = text.split("#", 1)[0].strip()
    if any(c.isspace() for c in value):
        raise KdumpError(f"{where}: a value with blanks must be quoted (write KEY=\"a b c\")")
    return value


def parse_defaults(text: str, source: str) -> Defaults:
    """Parse the file's text; raise KdumpError naming file and line for a line it cannot read."""
    values: dict[str, str] = {}
    ignored: list[str] = []
    for number, raw in enumerate(text.splitlines(), start=1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        where = f"{source}:{number}"
        match = _ASSIGNMENT.fullmatch(line)
        if match is None:
            raise KdumpError(f"{where}: expected KEY=\"value\", not {line!r}")
        key, value = match.group(1), _value(match.group(2), where)
        if key in (APPEND_KEY, REMOVE_KEY):
            values[key] = value
        else:
            ignored.append(f"{where}: {key}")
    return Defaults(append=values.get(APPEND_KEY, ""), remove=values.get(REMOVE_KEY, ""),
                    ignored=tuple(ignored))


def load_defaults(path: str) -> Defaults:
    """The file's settings (none when it does not exist); ignored keys are logged."""
    text = read_text(path)
    if text is None:
        return Defaults()
    defaults = parse_defaults(text, path)
    for where in defaults.ignored:
        log.warning("%s is not used by kdump-agent (only %s and %s are); ignored", where, APPEND_KEY,
                    REMOVE_KEY)
    return defaults
