"""`make install` and `make deb` as an admin or a distribution uses them: real make, the frozen
binary `make test` built, real dpkg-deb and dpkg (into a throw-away root), groff, and
systemd-analyze when this machine has it.

make runs with `-o dist/kdump-agent`: the binary is taken as it is, never rebuilt by a test.
"""

from __future__ import annotations

import gzip
import os
import re
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from harness.scenario import BINARY, REPO
from kdump_agent import __version__
from kdump_agent import config as kdump_config

UNITS = ("kdump-agent.service", "kdump-agent-vmcore.service")
DRACUT_FILES = ("module-setup.sh", "kdump-agent-capture.sh", "kdump-agent-root.sh")
MAN_PAGES = {"docs/man/kdump-agent.8": "usr/share/man/man8/kdump-agent.8.gz",
             "docs/man/kdump.conf.5": "usr/share/man/man5/kdump.conf.5.gz"}
DEFAULT_CONF = REPO / "etc" / "kdump.conf"

# Everything `make install DESTDIR=...` puts down, with its mode.
INSTALLED: dict[str, int] = {
    "usr/sbin/kdump-agent": 0o755,
    **{f"usr/lib/dracut/modules.d/55kdump-agent/{name}": 0o755 for name in DRACUT_FILES},
    **{f"usr/lib/systemd/system/{unit}": 0o644 for unit in UNITS},
    **{installed: 0o644 for installed in MAN_PAGES.values()},
    "etc/kdump.conf": 0o644,
}
INSTALLED_DIRS: dict[str, int] = {
    "etc/kdump/pre.d": 0o755,
    "etc/kdump/post.d": 0o755,
    "etc/kdump/emergency.d": 0o755,
    "var/crash": 0o700,
}

# Every directive kdump.conf(5) and etc/kdump.conf describe; the parser must know exactly
# these (virtiofs is parsed but not yet a target, and is not offered).
DOCUMENTED_DIRECTIVES = (
    "raw", "nfs", "nfs4", "ssh", "net", *[fs for fs in kdump_config.FILESYSTEM_TYPES if fs != "virtiofs"],
    "path", "core_collector", "sshkey", "link_delay", "disk_timeout", "kdump_pre", "kdump_post",
    "kdump_emergency", "failure_action", "default", "final_action", "extra_bins", "extra_modules",
    "dracut_args", "force_rebuild", "force_no_rebuild", "debug_mem_level",
    "fence_kdump_args", "fence_kdump_nodes", "auto_reset_crashkernel", "keep_old_dumps", "free_disk_size",
)


def make(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    assert BINARY.exists(), f"{BINARY} missing: run `make binary` first"
    # A clean make: not the jobserver or variables of a `make test` this may run under.
    env = {key: value for key, value in os.environ.items()
           if key not in ("MAKEFLAGS", "MFLAGS", "MAKELEVEL", "DESTDIR", "PREFIX")}
    result = subprocess.run(["make", "--no-print-directory", "-C", str(REPO),
                             "-o", str(BINARY.relative_to(REPO)), *args],
                            capture_output=True, text=True, timeout=timeout, env=env, check=False)
    assert result.returncode == 0, f"make {' '.join(args)}:\n{result.stdout}\n{result.stderr}"
    return result


def tree(root: Path) -> dict[str, int]:
    """Every file, link and directory under root, relative, with its permission bits."""
    return {str(path.relative_to(root)): stat.S_IMODE(path.lstat().st_mode) for path in root.rglob("*")}


def run(*argv: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(list(argv), capture_output=True, text=True, timeout=60, env=env, check=False)


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A DESTDIR after one `make install`."""
    root = tmp_path_factory.mktemp("destdir")
    make("install", f"DESTDIR={root}")
    return root


@pytest.fixture(scope="module")
def deb(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The package `make deb` builds (into a temporary directory, not dist/)."""
    out = tmp_path_factory.mktemp("deb")
    make("deb", f"DEB_DIR={out}", f"DEB_STAGING={out / 'staging'}")
    arch = run("dpkg", "--print-architecture").stdout.strip()
    package = out / f"kdump-agent_{__version__}_{arch}.deb"
    assert package.exists(), sorted(p.name for p in out.iterdir())
    return package


# ---- make install ------------------------------------------------------------------------

def test_install_puts_every_file_in_place_with_its_mode(installed: Path) -> None:
    found = tree(installed)
    files = {path: mode for path, mode in found.items() if not (installed / path).is_dir()}
    assert files == INSTALLED
    for directory, mode in INSTALLED_DIRS.items():
        assert (installed / directory).is_dir(), directory
        assert found[directory] == mode, f"{directory}: {oct(found[directory])}"
    # What was installed is what the tree holds.
    assert (installed / "usr/sbin/kdump-agent").read_bytes() == BINARY.read_bytes()
    for name in DRACUT_FILES:
        assert (installed / "usr/lib/dracut/modules.d/55kdump-agent" / name).read_bytes() == \
            (REPO / "dracut-module/55kdump-agent" / name).read_bytes()
    for unit in UNITS:  # PREFIX=/usr: the units' /usr/sbin/kdump-agent stays as written
        assert (installed / "usr/lib/systemd/system" / unit).read_bytes() == \
            (REPO / "build/systemd" / unit).read_bytes()
    for source, target in MAN_PAGES.items():
        assert gzip.decompress((installed / target).read_bytes()) == (REPO / source).read_bytes()
    assert (installed / "etc/kdump.conf").read_bytes() == DEFAULT_CONF.read_bytes()


def test_install_never_overwrites_an_admins_config_or_crash_directory(tmp_path: Path) -> None:
    make("install", f"DESTDIR={tmp_path}")
    conf = tmp_path / "etc/kdump.conf"
    edited = conf.read_text() + "ext4 LABEL=kdump   # the admin's edit\n"
    conf.write_text(edited)
    (tmp_path / "var/crash").chmod(0o755)  # the admin's choice
    second = make("install", f"DESTDIR={tmp_path}")
    assert conf.read_text() == edited
    assert f"keeping {conf}" in second.stdout
    assert stat.S_IMODE((tmp_path / "var/crash").stat().st_mode) == 0o755
    # Everything else is refreshed.
    assert (tmp_path / "usr/sbin/kdump-agent").read_bytes() == BINARY.read_bytes()


def test_install_honours_prefix(tmp_path: Path) -> None:
    make("install", f"DESTDIR={tmp_path}", "PREFIX=/usr/local")
    assert (tmp_path / "usr/local/sbin/kdump-agent").is_file()
    assert (tmp_path / "usr/local/lib/dracut/modules.d/55kdump-agent/module-setup.sh").is_file()
    assert (tmp_path / "usr/local/share/man/man5/kdump.conf.5.gz").is_file()
    unit = (tmp_path / "usr/local/lib/systemd/system/kdump-agent.service").read_text()
    assert "ExecStart=/usr/local/sbin/kdump-agent start\n" in unit
    assert "ExecStop=/usr/local/sbin/kdump-agent stop\n" in unit
    assert not (tmp_path / "usr/sbin").exists()
    assert (tmp_path / "etc/kdump.conf").is_file()  # /etc is /etc whatever the prefix


# ---- the default config --------------------------------------------------------------------

def test_installed_config_passes_check_config(installed: Path) -> None:
    conf = installed / "etc/kdump.conf"
    result = run(str(installed / "usr/sbin/kdump-agent"), "check-config", "-c", str(conf))
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == f"{conf}: valid"
    # RHEL 9's active lines and the default actions...
    for setting in ("path: /var/crash", "core_collector: makedumpfile -l --message-level 7 -d 31",
                    "failure_action: reboot", "final_action: reboot"):
        assert f"  {setting}" in lines, result.stdout
    # ... and no notes: nothing in the shipped file is ignored or deprecated.
    assert not [line for line in lines if "note:" in line], result.stdout


def test_every_example_in_the_default_config_is_valid_when_uncommented() -> None:
    lines = DEFAULT_CONF.read_text().splitlines()
    active = [line for line in lines if line and not line.startswith("#")]
    # Examples are '#directive value' (no blank after '#'); descriptions are '# text'.
    examples = [line[1:] for line in lines if re.match(r"#[a-z]", line)]
    assert len(examples) >= 20
    for example in examples:
        kdump_config.parse("\n".join([*active, example]) + "\n", f"uncommented: {example}")
    text = DEFAULT_CONF.read_text()
    for directive in set(DOCUMENTED_DIRECTIVES) - set(kdump_config.FILESYSTEM_TYPES):
        # Each has its own entry: '# directive <value>' (or in a '# a, b, c' list).
        assert re.search(rf"^# (?:\w+, )*{directive}\b", text, re.MULTILINE), directive


def test_the_documented_directives_are_the_ones_the_parser_knows() -> None:
    parsed = set(kdump_config._DIRECTIVES) - {"virtiofs"}
    assert parsed == set(DOCUMENTED_DIRECTIVES)


# ---- man pages -------------------------------------------------------------------------------

def render(source: bytes) -> str:
    """The page as text, asserting groff has nothing to warn about."""
    groff = shutil.which("groff")
    assert groff, "groff is missing (Debian: groff-base, installed by tools/install-deps.sh)"
    # -P-cbou: plain text, no SGR or overstrike for bold and italics.
    result = subprocess.run([groff, "-man", "-Tutf8", "-ww", "-rLL=80n", "-P-cbou"], input=source,
                            capture_output=True, timeout=60, env={**os.environ, "LC_ALL": "C.UTF-8"},
                            check=False)
    assert result.returncode == 0 and result.stderr == b"", result.stderr.decode()
    return result.stdout.decode()


@pytest.mark.parametrize("source", sorted(MAN_PAGES))
def test_man_pages_render_without_warnings(source: str, installed: Path) -> None:
    text = render(gzip.decompress((installed / MAN_PAGES[source]).read_bytes()))
    assert "NAME" in text and "SEE ALSO" in text


def test_kdump_conf_5_documents_every_directive() -> None:
    text = render((REPO / "docs/man/kdump.conf.5").read_bytes())
    for directive in DOCUMENTED_DIRECTIVES:
        assert re.search(rf"(?<![\w-]){directive}(?![\w-])", text), directive
    for section in ("DUMP TARGETS", "DIRECTIVES", "DUMP DIRECTORY", "EXAMPLES", "FILES"):
        assert f"\n{section}\n" in text, section


def test_kdump_conf_5_examples_are_valid() -> None:
    page = (REPO / "docs/man/kdump.conf.5").read_text()
    examples = page.split(".SH EXAMPLES", 1)[1].split(".SH ", 1)[0]
    blocks = re.findall(r"^\.nf\n(.*?)^\.fi\n", examples, re.DOTALL | re.MULTILINE)
    assert len(blocks) == 4
    for block in blocks:
        kdump_config.parse(block.replace("\\-", "-"), "kdump.conf.5 example")


def test_kdump_agent_8_documents_every_command() -> None:
    usage = run(str(BINARY), "--help").stdout
    commands = re.findall(r"^    (\w[\w-]*)", usage, re.MULTILINE)
    assert "check-config" in commands and "capture" in commands
    text = render((REPO / "docs/man/kdump-agent.8").read_bytes())
    documented = text.split("\nCOMMANDS\n", 1)[1].split("\nOPTIONS\n", 1)[0]
    coming = ("load", "unload", "start", "stop", "status", "estimate", "test", "propagate")
    for command in {*commands, *coming}:
        assert re.search(rf"^       {command}\b|^       \w[\w-]*, {command}\b", documented,
                         re.MULTILINE), command


def test_kdump_agent_8_documents_every_option() -> None:
    text = render((REPO / "docs/man/kdump-agent.8").read_bytes())
    usage = run(str(BINARY), "--help").stdout
    for command in re.findall(r"^    (\w[\w-]*)", usage, re.MULTILINE):
        options = set(re.findall(r"(?<![\w-])(--[a-z][\w-]*)", run(str(BINARY), command, "--help").stdout))
        for option in options - {"--help"}:
            assert re.search(rf"(?<![\w-]){option}(?![\w-])", text), f"{command} {option}"


# ---- systemd units ---------------------------------------------------------------------------

def unit_settings(path: Path) -> dict[str, list[str]]:
    """`Section.Key` -> values, in order (a key may repeat)."""
    settings: dict[str, list[str]] = {}
    section = ""
    for line in path.read_text().splitlines():
        if line.startswith("["):
            section = line.strip("[]")
        elif "=" in line and not line.startswith("#"):
            key, value = line.split("=", 1)
            settings.setdefault(f"{section}.{key}", []).append(value)
    return settings


def test_boot_service_loads_the_capture_kernel_when_memory_is_reserved(installed: Path) -> None:
    unit = unit_settings(installed / "usr/lib/systemd/system/kdump-agent.service")
    assert unit["Unit.ConditionKernelCommandLine"] == ["crashkernel"]
    assert unit["Unit.ConditionPathExists"] == ["!/proc/vmcore"]
    assert unit["Service.Type"] == ["oneshot"]
    assert unit["Service.RemainAfterExit"] == ["yes"]
    assert unit["Service.ExecStart"] == ["/usr/sbin/kdump-agent start"]
    assert unit["Service.ExecStop"] == ["/usr/sbin/kdump-agent stop"]
    assert "network-online.target" in " ".join(unit["Unit.After"])
    assert unit["Unit.Wants"] == ["network-online.target"]
    assert unit["Install.WantedBy"] == ["multi-user.target"]
    vmcore = unit_settings(installed / "usr/lib/systemd/system/kdump-agent-vmcore.service")
    assert vmcore["Service.ExecStart"] == ["/usr/sbin/kdump-agent capture --from-rootfs"]


def test_units_pass_systemd_analyze_verify(installed: Path, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # The installed units, pointed at the installed binary (verify checks it is executable)
    # and, through MANPATH, the installed man pages (verify runs man on Documentation=).
    binary = installed / "usr/sbin/kdump-agent"
    for unit in UNITS:
        text = (installed / "usr/lib/systemd/system" / unit).read_text()
        (tmp_path / unit).write_text(text.replace("/usr/sbin/kdump-agent", str(binary)))
    man = "yes" if shutil.which("man") else "no"
    result = run(analyze, "verify", f"--man={man}", *[str(tmp_path / unit) for unit in UNITS],
                 env={**os.environ, "MANPATH": str(installed / "usr/share/man")})
    assert result.returncode == 0 and result.stderr == "", result.stderr


# ---- make deb --------------------------------------------------------------------------------

def test_deb_declares_package_conffiles_and_dependencies(deb: Path) -> None:
    def field(name: str) -> str:
        return run("dpkg-deb", "-f", str(deb), name).stdout.strip()

    assert field("Package") == "kdump-agent"
    assert field("Version") == __version__
    assert field("Architecture") == run("dpkg", "--print-architecture").stdout.strip()
    assert "@" in field("Maintainer")
    depends = [item.strip() for item in field("Depends").split(",")]
    assert re.fullmatch(r"libc6 \(>= \d+\.\d+\)", depends[0]), depends
    assert set(depends[1:]) == {"zlib1g", "kexec-tools", "makedumpfile", "dracut-core"}
    assert run("dpkg-deb", "-I", str(deb), "conffiles").stdout == "/etc/kdump.conf\n"
    info = run("dpkg-deb", "-I", str(deb)).stdout
    for script in ("postinst", "prerm", "postrm"):
        assert re.search(rf"^ .*\* +{script} +#!/bin/sh$", info, re.MULTILINE), info


def test_deb_holds_what_make_install_installs(deb: Path, installed: Path, tmp_path: Path) -> None:
    listing = run("dpkg-deb", "-c", str(deb)).stdout.splitlines()
    owners = {line.split()[1] for line in listing}
    assert owners == {"root/root"}
    extracted = tmp_path / "x"
    subprocess.run(["dpkg-deb", "-x", str(deb), str(extracted)], check=True, timeout=60)
    expected = {path: mode for path, mode in tree(installed).items() if not path.startswith("var")}
    assert tree(extracted) == expected  # /var/crash is the postinst's, never a packaged dir
    for path in INSTALLED:
        assert (extracted / path).read_bytes() == (installed / path).read_bytes(), path
    for script in ("postinst", "prerm", "postrm"):
        assert run("sh", "-n", str(REPO / "packaging/debian" / script)).returncode == 0, script


@pytest.fixture
def dpkg_root(tmp_path: Path) -> Iterator[tuple[Path, list[str]]]:
    """An empty root with a dpkg database, and the dpkg command that acts on it.

    The maintainer scripts run outside a chroot with $DPKG_ROOT set (what
    --force-script-chrootless is for); dpkg logs into the root, not this machine's log.
    """
    if os.geteuid() != 0:
        pytest.skip("dpkg --root installs files owned by root")
    root = tmp_path / "root"
    for directory in ("var/lib/dpkg/info", "var/lib/dpkg/updates", "var/log"):
        (root / directory).mkdir(parents=True)
    (root / "var/lib/dpkg/status").touch()
    yield root, ["dpkg", f"--root={root}", "--force-script-chrootless", "--force-depends",
                 f"--log={root}/var/log/dpkg.log"]


def test_deb_installs_enables_keeps_config_and_purges(deb: Path, dpkg_root: tuple[Path, list[str]]) -> None:
    root, dpkg = dpkg_root
    result = run(*dpkg, "--install", str(deb))
    assert result.returncode == 0, result.stdout + result.stderr
    assert stat.S_IMODE((root / "var/crash").stat().st_mode) == 0o700
    wants = root / "etc/systemd/system"
    assert os.readlink(wants / "multi-user.target.wants/kdump-agent.service") == \
        "/usr/lib/systemd/system/kdump-agent.service"
    assert os.readlink(wants / "sysinit.target.wants/kdump-agent-vmcore.service") == \
        "/usr/lib/systemd/system/kdump-agent-vmcore.service"
    conf = root / "etc/kdump.conf"
    check = run(str(root / "usr/sbin/kdump-agent"), "check-config", "-c", str(conf))
    assert check.returncode == 0, check.stderr

    # An admin's edit survives a reinstall: /etc/kdump.conf is a registered conffile.
    edited = conf.read_text() + "failure_action shell\n"
    conf.write_text(edited)
    (root / "var/crash/127.0.0.1-2026-11-29-03:40:08").mkdir()
    result = run(*dpkg, "--force-confold", "--install", str(deb))
    assert result.returncode == 0, result.stdout + result.stderr
    assert conf.read_text() == edited
    admin = str(root / "var/lib/dpkg")
    conffiles = run("dpkg-query", f"--admindir={admin}", "-W", "-f=${Conffiles}", "kdump-agent").stdout
    assert conffiles.split()[0] == "/etc/kdump.conf"

    # Remove keeps the config; purge takes it and the units' links, never the dumps.
    assert run(*dpkg, "--remove", "kdump-agent").returncode == 0
    assert not (root / "usr/sbin/kdump-agent").exists()
    assert conf.read_text() == edited
    assert run(*dpkg, "--purge", "kdump-agent").returncode == 0
    assert not conf.exists()
    assert not (wants / "multi-user.target.wants/kdump-agent.service").is_symlink()
    assert (root / "var/crash/127.0.0.1-2026-11-29-03:40:08").is_dir()
