"""kdump.conf's dracut_args checked against dracut's own options before dracut sees them.

dracut reads its arguments with getopt, and a word it does not expect changes what it builds
and where: an option that takes a value, followed by the output path (`--add-drivers` last),
takes the path as its value, and dracut writes its default image instead, the system's boot
initramfs; a positional word becomes the output image or the kernel version. mkinitrd puts
dracut_args first and ends with `-- <output>` (host/mkinitrd.py), and on top of that every
word must be an option below, every
option that takes a value must have one, and options that change what, where or whether
dracut writes, or that mkinitrd sets itself, are refused.

The tables are read from dracut 059 (Debian's dracut-core 059-4): the getopt option list in
rearrange_params() of /usr/bin/dracut (dracut.sh upstream) and the option loop after it. Exact
spellings only: getopt would also take an unambiguous prefix (`--add-dr`), which a later dracut
may make ambiguous.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

__all__ = ["FLAG_OPTIONS", "REFUSED", "VALUE_OPTIONS", "check_dracut_args"]

# Long options that take one value: `--opt value` or `--opt=value`.
VALUE_OPTIONS: frozenset[str] = frozenset({
    "--add", "--force-add", "--add-drivers", "--force-drivers", "--omit-drivers", "--modules",
    "--omit", "--drivers", "--filesystems", "--install", "--install-optional", "--fwdir",
    "--libdirs", "--fscks", "--add-fstab", "--mount", "--device", "--add-device", "--tmpdir",
    "--stdlog", "--compress", "--squash-compressor", "--kernel-cmdline", "--sshkey", "--logfile",
    "--hostonly-mode", "--persistent-policy", "--loginstall", "--hostonly-nics",
})

# Long options that take no value.
FLAG_OPTIONS: frozenset[str] = frozenset({
    "--nofscks", "--ro-mnt", "--force", "--strip", "--aggressive-strip", "--nostrip", "--hardlink",
    "--nohardlink", "--noprefix", "--mdadmconf", "--nomdadmconf", "--lvmconf", "--nolvmconf",
    "--debug", "--profile", "--verbose", "--quiet", "--hostonly", "--host-only", "--no-hostonly",
    "--no-host-only", "--hostonly-cmdline", "--no-hostonly-cmdline", "--no-hostonly-default-device",
    "--fstab", "--bzip2", "--lzma", "--xz", "--lzo", "--lz4", "--zstd", "--no-compress", "--gzip",
    "--enhanced-cpio", "--show-modules", "--keep", "--printsize", "--parallel", "--early-microcode",
    "--no-early-microcode", "--reproducible", "--no-reproducible", "--no-uefi", "--no-hostonly-i18n",
    "--hostonly-i18n", "--no-machineid",
})

# dracut's short options, as the long option each one stands for.
_SHORT: dict[str, str] = {
    "-a": "--add", "-m": "--modules", "-o": "--omit", "-d": "--drivers", "-I": "--install",
    "-k": "--kmoddir", "-c": "--conf", "-r": "--sysroot", "-L": "--stdlog", "-f": "--force",
    "-v": "--verbose", "-q": "--quiet", "-l": "--local", "-H": "--hostonly", "-h": "--help",
    "-M": "--show-modules", "-N": "--no-hostonly", "-p": "--parallel", "-i": "--include",
}

_BUILDS_NOTHING = "it makes dracut print something and build no initramfs"
_NOT_KEXECABLE = "it makes dracut build a UEFI executable, which kexec cannot load as an initramfs"
_PARTIAL = "it makes dracut build only part of the initramfs"
_OTHER_CONF = "a dracut configuration file can set what dracut_args may not; put its options in dracut_args"

# Options dracut knows that dracut_args may not carry, and why.
REFUSED: dict[str, str] = {
    "--kver": "kdump-agent mkinitrd sets it to the kernel it builds for",
    "--kmoddir": "kdump-agent mkinitrd sets it to that kernel's modules",
    "--rebuild": "it makes dracut rebuild another image",
    "--regenerate-all": "it makes dracut rebuild every kernel's boot initramfs",
    "--print-cmdline": _BUILDS_NOTHING,
    "--list-modules": _BUILDS_NOTHING,
    "--help": _BUILDS_NOTHING,
    "--version": _BUILDS_NOTHING,
    "--uefi": _NOT_KEXECABLE,
    "--uefi-stub": _NOT_KEXECABLE,
    "--uefi-splash-image": _NOT_KEXECABLE,
    "--kernel-image": _NOT_KEXECABLE,
    "--kernel-only": _PARTIAL,
    "--no-kernel": _PARTIAL,
    "--noimageifnotneeded": "it may make dracut write no initramfs at all",
    "--prefix": "it moves every file of the initramfs below another directory",
    "--local": "it makes dracut use the modules of the current directory, not the installed ones",
    "--sysroot": "it makes dracut take files from another root than the one mkinitrd checked",
    "--conf": _OTHER_CONF,
    "--confdir": _OTHER_CONF,
}

# The refused options that take a value.
_REFUSED_WITH_VALUE = frozenset({"--kver", "--kmoddir", "--rebuild", "--uefi-stub", "--uefi-splash-image",
                                 "--kernel-image", "--prefix", "--sysroot", "--conf", "--confdir"})
_INCLUDE = "--include"  # the one option with two values: SOURCE and TARGET
_KNOWN = sorted(VALUE_OPTIONS | FLAG_OPTIONS | {_INCLUDE})


def check_dracut_args(words: Sequence[str]) -> list[str]:
    """The problems in dracut_args (already split like a shell would), each saying what to do;
    an empty list when dracut will read them as intended. mkinitrd can call this too."""
    problems: list[str] = []
    at = 0
    while at < len(words):
        used, problem = _check_word(words, at)
        if problem:
            problems.append(problem)
        at += used
    return problems


def _check_word(words: Sequence[str], at: int) -> tuple[int, str | None]:
    """How many words the option at `at` uses, and what is wrong with it, if anything."""
    word = words[at]
    name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
    long = _SHORT.get(name, name)
    if not word.startswith("-") or word == "-":
        return 1, _positional(words, at)
    if word == "--":
        return 1, "'--' ends dracut's options: each word after it would be the output image or kernel"
    if not word.startswith("--") and len(word) > 2:
        return 1, (f"{word!r}: write each short option as its own word, with its value as the next "
                   f"word (e.g. '-a lvm', '-N -f')")
    if long in REFUSED:
        skip = _value_follows(words, at, equals) if long in _REFUSED_WITH_VALUE else 0
        return 1 + skip, f"{_shown(word, name)} is not allowed in dracut_args: {REFUSED[long]}"
    if long == _INCLUDE:
        return _include(words, at, name, equals)
    if long in FLAG_OPTIONS:
        return 1, f"{name!r} takes no value (remove '={value}')" if equals else None
    if long in VALUE_OPTIONS:
        return _value(words, at, name, equals, value)
    import difflib  # only a misspelt option needs it, not every capture's start-up
    close = difflib.get_close_matches(name, _KNOWN, n=1)
    hint = f" (did you mean '{close[0]}'?)" if close else " (see dracut(8) for its options)"
    return 1 + _value_follows(words, at, equals), f"{name!r} is not a dracut option{hint}"


def _value_follows(words: Sequence[str], at: int, equals: str) -> int:
    """1 if the word after a refused or unknown option looks like its value: it is skipped, so
    one mistake is reported once."""
    following = words[at + 1] if at + 1 < len(words) else "-"
    return 0 if equals or following.startswith("-") else 1


def _shown(word: str, name: str) -> str:
    return repr(name) if word == name else f"{name!r} (in {word!r})"


def _value(words: Sequence[str], at: int, name: str, equals: str, value: str) -> tuple[int, str | None]:
    """`--opt=value` uses one word, `--opt value` two; the value must be there."""
    if equals:
        return 1, None if value else f"{name!r} needs a value after '='"
    if at + 1 == len(words):
        return 1, (f"{name!r} needs a value and is the last word: dracut would take the output "
                   f"image as its value and overwrite the system's initramfs; write '{name} VALUE' "
                   f"or remove {name!r}")
    following = words[at + 1]
    if following.startswith("-"):
        return 1, (f"{name!r} needs a value, but is followed by the option {following!r}: "
                   f"put the value right after {name!r}")
    return 2, None


def _include(words: Sequence[str], at: int, name: str, equals: str) -> tuple[int, str | None]:
    """`--include SOURCE TARGET`: dracut picks it out by its exact word, so no '=' form."""
    if equals:
        return 1, f"write '{name} SOURCE TARGET' as three words, without '='"
    values = list(itertools.takewhile(lambda value: not value.startswith("-"), words[at + 1:at + 3]))
    if len(values) < 2:
        return 1 + len(values), (f"{name!r} needs two values, SOURCE and TARGET "
                                 f"(e.g. '{name} /etc/kdump/extra /extra')")
    return 3, None


def _positional(words: Sequence[str], at: int) -> str:
    """Why a word that is not an option cannot stay: dracut reads it as the image or kernel."""
    before = words[at - 1] if at else ""
    after = f" (after {before!r}, which takes no value)" if _SHORT.get(before, before) in FLAG_OPTIONS else ""
    return (f"{words[at]!r} is not an option{after}: dracut would take it as the output image or "
            f"kernel version; if it is an option's value, put it right after that option")


def added_modules(words: Sequence[str]) -> list[str]:
    """The dracut modules dracut_args add (`--add lvm`, `-a "lvm mdraid"`, `--force-add=...`),
    in order: a generic image takes its storage stack from them."""
    modules: list[str] = []
    for at, word in enumerate(words):
        name, equals, value = word.partition("=") if word.startswith("--") else (word, "", "")
        if _SHORT.get(name, name) not in ("--add", "--force-add"):
            continue
        given = value if equals else (words[at + 1] if at + 1 < len(words) else "")
        modules += [module for module in given.split() if module not in modules]
    return modules
