"""One panic, end to end: build the capture initramfs with the real binary, panic a guest,
read back what the capture kernel saved. Shared by the e2e tests and `make demo`.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import json
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path

from .cache import cache_dir
from .cpio import Cpio
from .guest import BootResult, Console, boot, boot_interactive
from .kernels import Kernel
from .panic_initrd import SYSRQ_CRASH, Trigger, build_panic_initrd

REPO = Path(__file__).resolve().parents[2]
BINARY = REPO / "dist" / "kdump-agent"
CAPTURE_CMDLINE = "console=ttyS0 irqpoll nr_cpus=1 reset_devices panic=1 rootfstype=ramfs"
FIRST_KERNEL_CMDLINE = "console=ttyS0 crashkernel=256M panic=1"
LEAN_DRACUT_ARGS = 'dracut_args --no-hostonly --drivers "virtio_blk virtio_pci"'
STANDARD_UUID = "3f0c2a9e-6d5b-4c1e-9a57-0d1e2f3a4b5c"
# The guest's NIC on QEMU's user-mode network; the tests talk to nothing but 10.0.2.2.
USER_NETWORK = ("-netdev", "user,id=n0", "-device", "virtio-net-pci,netdev=n0")
GUEST_ADDRESS = "10.0.2.15"  # what QEMU's DHCP server hands out
HOST_FROM_GUEST = "10.0.2.2"  # QEMU's gateway: connections to it reach 127.0.0.1 here
DHCP_CMDLINE = f"{CAPTURE_CMDLINE} ip=dhcp"
CAPTURE_IMAGES = "capture-initrds"  # the cache's subdirectory for mkinitrd and panic images


def build_capture_initrd(kernel: Kernel, config_text: str, workdir: Path,
                         packed: Sequence[Path] = (), mkinitrd_args: Sequence[str] = ()) -> Path:
    """`kdump-agent mkinitrd` as an admin runs it; cached by binary (which carries the
    dracut module), config, kernel, extra arguments and the files the config packs (hooks,
    extra_bins, the SSH key and known_hosts)."""
    key = hashlib.sha256()
    key.update(BINARY.read_bytes())
    key.update(config_text.encode())
    key.update(kernel.kver.encode())
    key.update("\0".join(mkinitrd_args).encode())
    for path in packed:
        key.update(path.read_bytes())
    output = cache_dir(CAPTURE_IMAGES) / f"capture-{key.hexdigest()[:16]}.img"
    if output.exists():
        return output
    config = workdir / "kdump.conf"
    config.write_text(config_text, encoding="utf-8")
    partial = output.with_suffix(".part")
    subprocess.run(
        [str(BINARY), "mkinitrd", "--config", str(config), "--kver", kernel.kver,
         "--kmoddir", str(kernel.kmoddir), "-o", str(partial), *mkinitrd_args],
        check=True, timeout=900,
    )
    partial.rename(output)
    return output


def with_config_overlay(initrd: Path, config_text: str, out: Path,
                        records: Mapping[str, str] | None = None, program: Path | None = None) -> Path:
    """The same initramfs with another /etc/kdump.conf (and mkinitrd's records, by name:
    "target.json", "rootfs.json"; and the agent's executable, `program`) laid over it.

    The kernel unpacks concatenated cpio archives in order and later files win, so a
    second archive replaces the packed config without another dracut run. Used for cases
    whose config is deliberately broken (mkinitrd refuses those), differs only in values
    the agent reads at capture time, or needs records of the guest's disks rather than
    of the host mkinitrd ran on.
    """
    overlay = Cpio()
    overlay.add_file("etc/kdump.conf", config_text.encode())
    overlay.add_dir("etc/kdump-agent")
    for name, text in sorted((records or {}).items()):
        overlay.add_file(f"etc/kdump-agent/{name}", text.encode())
    if program is not None:
        overlay.add_file("usr/lib/kdump-agent/kdump-agent", program, 0o755)
    archive = overlay.archive()
    archive += b"\0" * (-len(archive) % 512)
    out.write_bytes(initrd.read_bytes() + gzip.compress(archive))
    return out


def network_program(workdir: Path) -> Path:
    """The executable mkinitrd packs when the capture reaches a server (an iSCSI portal
    included): with the network stack's modules, which a plain-disk build leaves out
    (host/pyzarchive.py). For an image built here whose storage.json is laid over it."""
    from kdump_agent.host.programdir import lay_out

    return lay_out(BINARY, workdir / "network-program", ssh=False, network=True)


def filesystem_record(uuid: str, fstype: str = "ext4", directory: str = "/") -> str:
    """A record as mkinitrd writes it (targets.local.FilesystemTarget.as_json)."""
    return json.dumps({"spec": f"UUID={uuid}", "fstype": fstype, "directory": directory})


def standard_initrd(kernel: Kernel, workdir: Path) -> Path:
    """The one mkinitrd build most cases share: ext4 target by UUID, default actions.
    Cases that differ only in what the agent reads at capture time lay their config over it."""
    return build_capture_initrd(kernel, standard_config(), workdir)


def standard_config(target: str = f"UUID={STANDARD_UUID}", *extra: str) -> str:
    return "\n".join([f"ext4 {target}", "path /var/crash", LEAN_DRACUT_ARGS, *extra, ""])


def panic_interactive(kernel: Kernel, capture_initrd: Path, disks: list[Path], workdir: Path,
                      timeout_s: int = 420) -> Console:
    """As panic_and_capture, with a console the test can type into (the kdump shell)."""
    panic_initrd = build_panic_initrd(kernel, capture_initrd, CAPTURE_CMDLINE,
                                      cache_dir(CAPTURE_IMAGES) / f"panic-for-{capture_initrd.name}")
    return boot_interactive(kernel, panic_initrd, append=FIRST_KERNEL_CMDLINE, disks=disks,
                            timeout_s=timeout_s, log_path=workdir / "console.log")


def panic_and_capture(kernel: Kernel, capture_initrd: Path, disks: list[Path], workdir: Path,
                      timeout_s: int = 420, progress: Callable[[str], None] | None = None,
                      until: Callable[[str], bool] | None = None,
                      capture_cmdline: str = CAPTURE_CMDLINE, network: bool = False,
                      trigger: Trigger = SYSRQ_CRASH, extra_args: Sequence[str] = (),
                      prefix: Sequence[str] = ()) -> BootResult:
    """Boot the first kernel, load the capture kernel, panic it, let the capture run.

    The serial console is kept in workdir/console.log. `until` ends the boot at a console
    line (a halted machine never exits QEMU by itself). `trigger` is how the first kernel
    dies (sysrq-c by default). With `network` the guest has a
    virtio NIC on QEMU's user-mode network: 10.0.2.2 is this host's loopback, DHCP hands
    out 10.0.2.15.
    """
    key = hashlib.sha256(capture_cmdline.encode()).hexdigest()[:8]
    named = "" if trigger == SYSRQ_CRASH else f"{trigger.name}-"
    out = cache_dir(CAPTURE_IMAGES) / f"panic-{named}{key}-for-{capture_initrd.name}"
    panic_initrd = build_panic_initrd(kernel, capture_initrd, capture_cmdline, out, trigger)
    return boot(kernel, panic_initrd, append=FIRST_KERNEL_CMDLINE, disks=disks,
                timeout_s=timeout_s, log_path=workdir / "console.log", progress=progress,
                until=until, extra_args=[*(USER_NETWORK if network else ()), *extra_args],
                prefix=prefix)


def network_dump_dirs(parent: Path, address: str = GUEST_ADDRESS) -> list[Path]:
    """The dump directories a network dump made under parent: <guest-ip>-<date>, RHEL's name.
    `address` is the guest's own (a harness.netlab guest has others than QEMU's 10.0.2.15)."""
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir() if p.name.startswith(f"{address}-"))


@contextlib.contextmanager
def kill_when_partial_grows(parent: Path, kill: Callable[[], None], threshold: int,
                            address: str = GUEST_ADDRESS) -> Iterator[None]:
    """While the block runs, call kill() once a vmcore-incomplete under parent holds more
    than threshold bytes: a server that dies in the middle of the dump (or any other
    event a test sets off there, such as a NIC losing its link). `address` as for
    network_dump_dirs."""
    stop = threading.Event()

    def watch() -> None:
        while not stop.is_set():
            for directory in network_dump_dirs(parent, address):
                partial = directory / "vmcore-incomplete"
                if partial.exists() and partial.stat().st_size > threshold:
                    kill()
                    return
            time.sleep(0.02)

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        yield
    finally:
        stop.set()
        watcher.join()
