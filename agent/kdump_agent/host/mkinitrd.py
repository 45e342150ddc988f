"""`kdump-agent mkinitrd`: build the capture initramfs with dracut and our module.

The image is lean by default: dracut's `base` module and ours (no systemd), and in hostonly
mode only the drivers on the path to the dump target; the agent goes in already unpacked
(programdir.py) and the image is zstd-compressed where the kernel can unpack it
(compression.py). The reservation is spent on the initramfs before anything else, so
everything left out is memory the collector can use.

Like kdumpctl, it rebuilds only when something the image is made of changed: the build's
inputs are compared with the stamp kept next to the image (stamp.py), and dracut, which
takes a minute, does not run when they are equal.

dracut writes a temporary file next to the image, and only a finished build replaces the
image: a failed one (a full /boot) leaves the old image and its stamp as they were.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
import os
import platform
import posixpath
import re
import shutil
import stat
import sys
import tempfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from .. import system
from ..config import Action, Config, DumpTarget
from ..context import HOOK_ROOT
from ..dracutargs import check_dracut_args
from ..errors import KdumpError
from ..steps.hooks import HOOK_KINDS, hook_programs
from ..targets.local import FilesystemTarget
from ..targets.nfs import NfsTarget
from ..targets.raw import RawTarget, signature
from ..targets.sshdest import SshDestination
from .blockdev import filesystem_holding, nearest_existing, uuid_of
from .compression import compression_args
from .hostpaths import THIS_MACHINE, HostPaths, writable_dir
from .netpack import DEFAULT_KNOWN_HOSTS, network_pack, write_pack
from .programdir import lay_out
from .stackpack import storage_pack
from .stamp import changes, describe, read_stamp, remove_stamp, stamped_binary, write_stamp

log = logging.getLogger("kdump-agent")

MODULE_NAME = "kdump-agent"
MODULE_DIR_NAME = "55kdump-agent"
SYSTEM_DRACUT_DIR = Path("/usr/lib/dracut")
DRACUT_TIMEOUT = 900.0
HOSTONLY_FLAGS = {"--hostonly": True, "--host-only": True, "-H": True,
                  "--no-hostonly": False, "--no-host-only": False, "-N": False}
ROOTFS_ACTIONS = frozenset({Action.DUMP_TO_ROOTFS, Action.MOUNT_ROOT_RUN_INIT})
IMAGE_MODE = 0o600  # an ssh target's image holds the private key
MODULE_COLLECTOR = "makedumpfile"  # module-setup.sh installs it wherever it is on the host
# findmnt's SOURCE for a bind mount: the device, then the mounted directory of its file system.
_BIND_SOURCE = re.compile(r"^(?P<device>[^\[]+)\[(?P<root>/.*)\]$")


@dataclass(frozen=True)
class BuildPlan:
    """Everything dracut is told, worked out before it runs (and printed with --dry-run)."""

    argv: list[str]
    env: dict[str, str]
    recorded_target: FilesystemTarget | None
    recorded_rootfs: FilesystemTarget | None = None
    recorded_network: str | None = None  # network.json's text (hostonly, network targets)
    output: Path | None = None
    skipped: str | None = None  # why dracut did not run: "up to date", force_no_rebuild
    reasons: tuple[str, ...] = ()  # why it ran (or, with --dry-run, would run)
    program_ssh: bool = False  # the laid-out program keeps paramiko's libraries (programdir.py)
    program_network: bool = False  # ... and the network stack's modules: a server to reach


def default_output(kver: str, paths: HostPaths = THIS_MACHINE) -> Path:
    """RHEL's name and place, /boot/initramfs-<kver>kdump.img; under /var/lib/kdump-agent
    when /boot cannot be written (a read-only or shared /boot) and holds no image yet.

    `load` and `status` find the image by the same rule.
    """
    name = f"initramfs-{kver}kdump.img"
    boot = Path(paths.boot_dir) / name
    if boot.exists() or writable_dir(paths.boot_dir):
        return boot
    return Path(paths.state_dir) / name


def bundled_module_dir() -> Path:
    """Our dracut module: inside the frozen binary, or in the source tree."""
    frozen_root = getattr(sys, "_MEIPASS", None)
    if frozen_root:
        return Path(frozen_root) / "dracut-module" / MODULE_DIR_NAME
    return Path(__file__).resolve().parents[3] / "dracut-module" / MODULE_DIR_NAME


def default_binary() -> Path:
    """The agent binary to pack: this very program when it is the frozen single file."""
    if getattr(sys, "frozen", False):
        return Path(sys.executable)
    raise KdumpError("not running as the frozen binary: pass --binary PATH (see `make binary`)")


def overlay_dracut_dir(into: Path, module: Path, system_dir: Path = SYSTEM_DRACUT_DIR) -> Path:
    """A dracut base directory: the system's files, plus our module in its modules.d.

    dracut reads its modules from $dracutbasedir/modules.d; linking the system's entries
    next to ours lets the binary carry its own module without installing anything.
    """
    if not (system_dir / "modules.d").is_dir():
        raise KdumpError(f"dracut is not installed ({system_dir}/modules.d missing)")
    into.mkdir(parents=True, exist_ok=True)
    for entry in system_dir.iterdir():
        if entry.name != "modules.d":
            (into / entry.name).symlink_to(entry)
    modules = into / "modules.d"
    modules.mkdir()
    for entry in (system_dir / "modules.d").iterdir():
        if entry.name != module.name:
            (modules / entry.name).symlink_to(entry)
    (modules / module.name).symlink_to(module)
    return into


def refuse_raw_with_filesystem(config: Config, device: str) -> None:
    """A raw target is overwritten from its first byte: it must be a block device that holds
    nothing blkid recognises (a file system, a RAID or LVM member, a partition table).

    Checked when building for this machine (hostonly); an image for another machine cannot
    see that machine's disks (the capture kernel asks blkid again before writing).
    """
    if not os.path.exists(device):
        return  # hostonly resolution below reports a missing device
    where = f"{config.source}:{config.target.line}" if config.target else config.source
    if not stat.S_ISBLK(os.stat(device).st_mode):
        raise KdumpError(f"{where}: raw target {device} is not a block device; a raw dump would "
                         "write over it. Point `raw` at an empty partition or LV.")
    found = signature(device)
    if found:
        raise KdumpError(f"{where}: raw target {device} holds {found} (blkid); a raw dump would "
                         "destroy it. Point `raw` at an empty partition or LV.")


def record_filesystem(path: str, source: str) -> FilesystemTarget:
    """The file system that holds path on this machine, as the capture kernel finds it.

    path is resolved first (symlinks followed, as far as it exists): /var/crash linked to a
    data disk must be recorded on that disk, not on the file system of the link. It is
    recorded by UUID, which survives device renames in the capture kernel; a file system
    without one is recorded by its device path.
    """
    resolved = os.path.realpath(path)
    held_by = filesystem_holding(resolved)
    bind = _BIND_SOURCE.match(held_by.device)
    device = bind["device"] if bind else held_by.device
    uuid = uuid_of(device) if bind else held_by.uuid
    if uuid:
        spec = f"UUID={uuid}"
    elif device.startswith("/dev/"):
        spec = device
        log.warning("%s has no file system UUID: recording it as %s", device, spec)
    else:
        raise KdumpError(f"{path} is on {device} ({held_by.fstype}), which the "
                         f"capture kernel cannot mount: name a target in {source}")
    directory = directory_on(path, resolved, held_by.mountpoint, bind["root"] if bind else "/")
    log.info("%s is on %s (%s, %s) at %s", path, device, held_by.fstype, spec, directory)
    return FilesystemTarget(spec=spec, fstype=held_by.fstype, directory=directory)


def directory_on(path: str, resolved: str, mountpoint: str, fs_root: str) -> str:
    """Where resolved lies inside its file system: below the directory of the file system
    mounted at mountpoint (fs_root, "/" unless it is a bind mount). Never above it."""
    relative = os.path.relpath(resolved, mountpoint)
    if relative == os.pardir or relative.startswith(os.pardir + os.sep):
        raise KdumpError(f"{path} resolves to {resolved}, which is not under {mountpoint}, "
                         "the mount point findmnt gave for it")
    return posixpath.normpath(posixpath.join(fs_root, relative))


def find_program(name: str) -> str | None:
    """A program by bare name, on the PATH the agent and dracut use."""
    return shutil.which(name, path=system.CLEAN_PATH)


def collector_program(config: Config) -> str:
    """The host file core_collector's program is, as the capture kernel will run it.

    A bare name is looked up on the agent's PATH, an absolute path must be an executable
    file: a collector that is not there fails every dump with 127, after the panic.
    """
    program = config.core_collector[0]
    if os.path.isabs(program):
        if os.path.isfile(program) and os.access(program, os.X_OK):
            return program
        raise KdumpError(f"{config.source}: core_collector {program}: no such executable on this host "
                         "(install it, or give its path here: `command -v "
                         f"{os.path.basename(program)}`)")
    found = find_program(program)
    if found is None:
        raise KdumpError(f"{config.source}: core_collector {program} is not installed on this host "
                         f"(not in {system.CLEAN_PATH})")
    return found


def collector_to_pack(config: Config) -> list[str]:
    """core_collector's program, unless it is the makedumpfile module-setup.sh installs anyway."""
    program = collector_program(config)
    if os.path.basename(program) == MODULE_COLLECTOR:
        installed = find_program(MODULE_COLLECTOR)
        if installed and os.path.realpath(installed) == os.path.realpath(program):
            return []
    return [program]


def files_to_pack(config: Config, hook_root: str = HOOK_ROOT) -> list[str]:
    """extra_bins, the collector's program and every hook program, installed at the same
    paths (with their libraries or interpreters, which dracut resolves). A missing one stops
    the build: a program that is not there in the capture kernel would fail the dump."""
    files = list(config.extra_bins)
    files += [f for f in collector_to_pack(config) if f not in files]
    for kind in HOOK_KINDS:
        files += [f for f in hook_programs(kind, config, hook_root) if f not in files]
    missing = [f for f in files if not os.path.exists(f)]
    if missing:
        raise KdumpError(f"{config.source}: cannot pack {', '.join(missing)}: no such file")
    return files


def local_device(target: DumpTarget | None) -> str:
    """The disk a local target is on, as kdump.conf names it ("" for a network target):
    its drivers go into a hostonly image."""
    if isinstance(target, FilesystemTarget):
        return target.spec
    if isinstance(target, RawTarget):
        return target.device
    return ""


def target_device(config: Config) -> str:
    """The device the config's target is on, as this machine names it: its line's, or with no
    target line the file system that holds `path` (RHEL's rule); "" for a network target."""
    target = config.dump_target
    return local_device(target) if target else filesystem_holding(config.path).device


def hostonly_wanted(dracut_args: Sequence[str]) -> bool:
    """Whether dracut builds for this machine: hostonly unless dracut_args say otherwise,
    and as dracut reads them, the last word of the two kinds wins."""
    wanted = True
    for word in dracut_args:
        wanted = HOSTONLY_FLAGS.get(word, wanted)
    return wanted


def plan(config: Config, *, config_file: Path, output: Path, binary: Path, kver: str,
         kmoddir: str | None, staging: Path, dracut_dir: Path,
         known_hosts_files: Sequence[str] = DEFAULT_KNOWN_HOSTS) -> BuildPlan:
    """Work out dracut's argv and environment for this config."""
    target = config.dump_target
    # RHEL's rule for a config without a target: the file system that holds `path`.
    recorded = record_filesystem(config.path, config.source) if target is None else None
    # The failure actions that need the root file system find it by this record.
    rootfs = record_filesystem("/", config.source) if config.failure_action in ROOTFS_ACTIONS else None
    mounted = recorded or (target if isinstance(target, (FilesystemTarget, NfsTarget)) else None)
    problems = check_dracut_args(config.dracut_args)  # config.load refused them already; a
    if problems:                                       # Config made otherwise gets the same rule
        raise KdumpError(f"{config.source}: dracut_args: {'; '.join(problems)}")
    hostonly = hostonly_wanted(config.dracut_args)
    if hostonly and isinstance(target, RawTarget):
        refuse_raw_with_filesystem(config, target.device)
    # The disks' drivers and what their storage stacks need (hostonly: found on this machine).
    storage = storage_pack(config, local_device(recorded or target), rootfs.spec if rootfs else "",
                           hostonly=hostonly)
    reach = network_pack(config, hostonly=hostonly, known_hosts_files=known_hosts_files,
                         portal=storage.portal())

    # The admin's dracut_args come first: if they end in an option that takes a value
    # (`--add-drivers`), it swallows our --force (dracut then refuses to overwrite the
    # temporary file and fails), never the output, which is always the one word after `--`.
    argv = ["dracut", *config.dracut_args, "--force", "--kver", kver, "--modules", MODULE_NAME,
            "--no-early-microcode"]
    argv += ["--hostonly"] if hostonly else []
    argv += compression_args(config.dracut_args, kver, kmoddir)
    if kmoddir:
        argv += ["--kmoddir", kmoddir]
    filesystems = [f for f in dict.fromkeys([mounted.fstype if mounted else None,
                                             rootfs.fstype if rootfs else None]) if f]
    if filesystems:
        argv += ["--filesystems", " ".join(filesystems)]
    drivers = list(config.extra_modules) + [d for d in reach.drivers if d not in config.extra_modules]
    drivers += [d for d in storage.modules if d not in drivers]
    if drivers:
        argv += ["--add-drivers", " ".join(drivers)]
    argv += ["--", str(output)]

    env = {
        "dracutbasedir": str(dracut_dir),
        "KDUMP_AGENT_BINARY": str(binary),  # what the stamp hashes; build_image lays it out
        "KDUMP_AGENT_PROGRAM": str(staging / "program"),
        "KDUMP_AGENT_CONF": str(config_file),
        "KDUMP_AGENT_INSTALL": "\n".join(files_to_pack(config) + storage.programs),
        **write_pack(reach, staging),
    }
    storage_record = storage.record()
    if storage_record:
        (staging / "storage.json").write_text(storage_record + "\n", encoding="utf-8")
        env["KDUMP_AGENT_STORAGE"] = str(staging / "storage.json")
    for record, name, variable in ((recorded, "target.json", "KDUMP_AGENT_TARGET"),
                                   (rootfs, "rootfs.json", "KDUMP_AGENT_ROOTFS")):
        if record:
            record_file = staging / name
            record_file.write_text(record.as_json() + "\n", encoding="utf-8")
            env[variable] = str(record_file)
    return BuildPlan(argv=argv, env=env, recorded_target=recorded, recorded_rootfs=rootfs,
                     recorded_network=reach.record, program_ssh=isinstance(target, SshDestination),
                     program_network=reach.host is not None)


@contextlib.contextmanager
def _planned(config: Config, *, output: Path, binary: Path, kver: str, kmoddir: str | None,
             known_hosts_files: Sequence[str]) -> Iterator[tuple[BuildPlan, dict[str, str], Path]]:
    """The plan, the inputs it would build from (for the stamp), and its staging directory,
    which lives as long as the context."""
    with tempfile.TemporaryDirectory(prefix="kdump-agent-mkinitrd.") as scratch:
        staging = Path(scratch)
        build_plan = plan(config, config_file=Path(config.source).resolve(), output=output,
                          binary=binary.resolve(), kver=kver, kmoddir=kmoddir, staging=staging,
                          dracut_dir=staging / "dracut", known_hosts_files=known_hosts_files)
        modules_dep = Path(kmoddir or f"/lib/modules/{kver}") / "modules.dep"
        inputs = describe(build_plan.argv, build_plan.env, kver=kver, modules_dep=modules_dep,
                          module_dir=bundled_module_dir())
        yield dataclasses.replace(build_plan, output=output), inputs, staging


def _rebuild_reasons(output: Path, inputs: dict[str, str]) -> list[str]:
    if not output.exists():
        return [f"{output} does not exist"]
    return changes(read_stamp(output), inputs)


def image_changes(config: Config, *, output: Path, binary: Path | None = None, kver: str | None = None,
                  kmoddir: str | None = None,
                  known_hosts_files: Sequence[str] = DEFAULT_KNOWN_HOSTS) -> list[str]:
    """Why `mkinitrd` would rebuild output now; [] when it is up to date (`status` asks this).

    Run from the source tree, the binary to compare is the one the image's stamp names.
    """
    kver = kver or platform.release()
    if binary is None:
        binary = default_binary() if getattr(sys, "frozen", False) else stamped_binary(output)
    if binary is None:
        return [f"{output} does not exist" if not output.exists() else f"{output} has no stamp"]
    if not binary.is_file():
        return [f"the agent binary {binary} it was built with no longer exists"]
    with _planned(config, output=output, binary=binary, kver=kver, kmoddir=kmoddir,
                  known_hosts_files=known_hosts_files) as (_, inputs, _staging):
        return _rebuild_reasons(output, inputs)


def make_output_dir(output: Path) -> None:
    """The image's directory, created if needed; an ancestor that is a file is named."""
    existing = Path(nearest_existing(str(output.parent)))
    if not existing.is_dir():
        raise KdumpError(f"cannot write {output}: {existing} is not a directory")
    output.parent.mkdir(parents=True, exist_ok=True)


def build_image(build_plan: BuildPlan, output: Path) -> None:
    """Run dracut into a temporary file next to output, then put it in place.

    The image is replaced only by a finished, non-empty build (dracut deletes its output
    when it fails: building in place would leave nothing to load). Its stamp goes just
    before the rename, so an image is never taken for one built from other inputs.
    """
    lay_out(Path(build_plan.env["KDUMP_AGENT_BINARY"]), Path(build_plan.env["KDUMP_AGENT_PROGRAM"]),
            ssh=build_plan.program_ssh, network=build_plan.program_network)
    handle, name = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    os.close(handle)
    partial = Path(name)
    try:
        system.run([*build_plan.argv[:-1], name], timeout=DRACUT_TIMEOUT, stdout=None,
                   extra_env=build_plan.env)
        _seal(partial, output)
        remove_stamp(output)
        os.replace(partial, output)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    system.fsync(output.parent)


def _seal(partial: Path, output: Path) -> None:
    """A built image: non-empty, 0600 whatever umask dracut ran with, and on disk."""
    if partial.stat().st_size == 0:
        raise KdumpError(f"dracut exited 0 but wrote nothing to {partial}: {output} is left as it was")
    os.chmod(partial, IMAGE_MODE)
    system.fsync(partial)


def mkinitrd(config: Config, *, output: Path | None = None, binary: Path | None = None,
             kver: str | None = None, kmoddir: str | None = None, dry_run: bool = False,
             known_hosts_files: Sequence[str] = DEFAULT_KNOWN_HOSTS, force: bool = False,
             paths: HostPaths = THIS_MACHINE) -> BuildPlan:
    """Build the capture initramfs for a validated config unless it is up to date; returns
    what was run (or, with dry_run, would run) and why."""
    kver = kver or platform.release()
    output = output or default_output(kver, paths)
    if config.force_no_rebuild and output.exists() and not dry_run:
        log.info("force_no_rebuild is set in %s and %s exists: not rebuilding", config.source, output)
        return BuildPlan(argv=[], env={}, recorded_target=None, output=output,
                         skipped=f"force_no_rebuild is set in {config.source}")
    binary = binary or default_binary()
    if not os.access(binary, os.X_OK):
        raise KdumpError(f"agent binary {binary} is not executable")
    with _planned(config, output=output, binary=binary, kver=kver, kmoddir=kmoddir,
                  known_hosts_files=known_hosts_files) as (build_plan, inputs, staging):
        forced = "--force was given" if force else (
            f"force_rebuild is set in {config.source}" if config.force_rebuild else None)
        reasons = [forced] if forced else _rebuild_reasons(output, inputs)
        if not reasons:
            log.info("%s is up to date: not rebuilding", output)
            return dataclasses.replace(build_plan, skipped="up to date")
        build_plan = dataclasses.replace(build_plan, reasons=tuple(reasons))
        if dry_run:
            return build_plan
        log.info("building %s: %s", output, "; ".join(reasons))
        make_output_dir(output)
        overlay_dracut_dir(staging / "dracut", bundled_module_dir())
        build_image(build_plan, output)
        write_stamp(output, inputs, binary.resolve())
    log.info("capture initramfs written to %s (%d bytes)", output, output.stat().st_size)
    return build_plan
