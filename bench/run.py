"""`make bench`: what kdump-agent costs a capture kernel, against a bare baseline, in one run.

The baseline is a lean dracut capture image (dracut's base module, virtio drivers,
makedumpfile) whose hook saves the same dump with a shell script and no agent, built here
for the same kernel and guest. Every figure of ours is compared with the baseline measured
in the same run, because this machine's timings drift from run to run.

1. Memory floor: the smallest crashkernel= (16M steps, 1 GiB guest) at which a dump
   completes, found by bisection, for the baseline and for kdump-agent with a local ext4
   target, with ext4 on an LVM logical volume (the stack made and read back in tool guests,
   harness.stacks; the image as a hostonly build makes it: lvm packed, the LV recorded) and
   with an SSH target (OpenSSH on this host's loopback, reached by the guest as
   10.0.2.2 through QEMU's user-mode network; the dump counts once the server holds a
   vmcore the crashed kernel's log reads back from), and with SSH over VLAN 77 on a
   balance-xor bond of two NICs (a harness.netlab namespace: sshd, dnsmasq and QEMU inside
   it, the VLAN terminated by harness.vlan_relay). `bench/run.py bond-vlan` measures that
   floor alone; `bench/run.py links-memfree` (in the full run too: `links_memfree`) the
   MemFree at 176M of one plain NIC, the same with bonding and 8021q loaded, a VLAN on it
   and the VLAN on the bond, where host/estimate.py's LINKS_RUNTIME comes from.
2. Time: panic -> dump saved -> reboot, median of several boots, ours vs the baseline; and
   the agent's own start-up (the initramfs hook's kernel-log line to the agent's first).
   SSH vs local: the same total, and the COLLECT state alone, where the transfer happens.
3. Footprint: binary size, initramfs compressed and unpacked, the agent's peak RSS and the
   size of its program laid out in the image, MemFree when the collector starts.
4. SSH throughput on loopback, no QEMU: one flattened stream (makedumpfile -F of the cached
   real vmcore) sent by the agent's own code (paramiko, positioned SFTP writes, fsync) and by
   OpenSSH's `ssh ... 'cat > f'`, alternately, in the same run.
5. Cost as the work grows (bench/scale.py; `run.py scale|threads|compression` alone): the
   floor, estimate's recommendation and COLLECT with -d 31 and -d 1 in filled guests of 1, 4
   and 8 GiB; one CPU against two; makedumpfile -l against -c.
6. Full systems (bench/peer.py; `bench/run.py peer` alone): Debian's own kdump-tools in a
   whole Debian 12 system, and the same system with our .deb (`ours_full`): floor, panic
   to reboot and dump size of each, measured alike.

Writes bench/results/latest.json (and a dated copy) and bench/results/latest.png. Run by
`make bench`, which puts `agent/` and `tests/` (the harness package) on PYTHONPATH.
"""


from __future__ import annotations

import datetime
import hashlib
import json
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import floors
import peer
import readme_table

from harness import stacks
from harness.baseline import with_ssh_server
from harness.cache import cache_dir
from harness.disks import make_disk, replay_journal
from harness.dumps import Dump, dump_on_host, dump_problems, find_dumps, manifest_of, panic_problems
from harness.guest import BootResult, boot
from harness.kernels import Kernel, fetch_kernel
from harness.netlab import SERVER_V4, Dns, Lab, nic_mac
from harness.panic_initrd import build_panic_initrd
from harness.scenario import (
    BINARY,
    CAPTURE_CMDLINE,
    CAPTURE_IMAGES,
    DHCP_CMDLINE,
    GUEST_ADDRESS,
    HOST_FROM_GUEST,
    LEAN_DRACUT_ARGS,
    REPO,
    USER_NETWORK,
    build_capture_initrd,
    network_dump_dirs,
    with_config_overlay,
)
from harness.sshd import ClientKey, Sshd, keygen
from kdump_agent.host.imagesize import initramfs_unpacked_bytes
from kdump_agent.host.mkinitrd import overlay_dracut_dir

RESULTS = REPO / "bench" / "results"
BASELINE_MODULE = REPO / "bench" / "baseline-module" / "55kdump-baseline"
BASELINE_DRACUT_ARGS = ("--drivers", "virtio_blk virtio_pci", "--filesystems", "ext4")
# The same lean image sending the same stream through OpenSSH: `ssh ... 'cat > f'`.
BASELINE_SSH_MODULE = REPO / "bench" / "baseline-module" / "55kdump-baseline-ssh"
BASELINE_SSH_DRACUT_ARGS = ("--drivers", "virtio_net virtio_pci")
CRASHKERNEL_STEPS_MIB = list(range(64, 257, 16))
TIME_AT_MIB = 256
TIME_RUNS = int(os.environ.get("KDUMP_AGENT_BENCH_RUNS", "3"))
THROUGHPUT_RUNS = 3
BOOT_TIMEOUT_S = 300
DISK_UUID = "9c8b7a6d-5e4f-4a3b-9c2d-1e0f9a8b7c6d"
# Local floor below Debian's kdump-tools' reliable 112M, SSH at most that; panic to reboot
# within 10% of the baseline's, locally and over SSH against OpenSSH from the same image.
TARGETS = {"floor_local_mib": 96, "floor_ssh_mib": 112, "time_ratio": 1.10, "ssh_ratio": 1.10,
           "ssh_baseline_ratio": 1.10, "agent_startup_s": 1.0}
OURS_CONFIG = f"ext4 UUID={DISK_UUID}\npath /var/crash\n{LEAN_DRACUT_ARGS}\n"
# The LVM image as a hostonly mkinitrd builds it on a host with the stack (this one has no
# device-mapper to find it on): lvm and dm_mod packed, the LV's record laid over the image.
LVM_CONFIG = (f"ext4 UUID={stacks.STACK_UUID}\npath /var/crash\n{LEAN_DRACUT_ARGS}\n"
              "extra_bins /usr/sbin/lvm\nextra_modules dm_mod\n")
LVM_RECORD = json.dumps({"target": [{"kind": "lvm", "vg": stacks.VG, "lv": stacks.LV,
                                      "targets": ["linear"]}]})
# The loopback sample: a flattened stream as the capture sends, uncompressed for size (108 MiB of
# the cached vmcore; with the capture's -l -d 31 it is 39 MiB, and each send is then mostly the
# session set-up, ~0.2 s of ~0.45 s).
STREAM_COLLECTOR = ["makedumpfile", "-F", "-d", "0"]
MIB = 1 << 20
BOND_VLAN_ADDRESS = "10.77.0.10"  # the lab's fixed lease for the bond's MAC (its first NIC's)
BOND_VLAN_CMDLINE = (f"{CAPTURE_CMDLINE} ifname=eth0:{nic_mac(0)} ifname=eth1:{nic_mac(1)} "
                     "bond=bond0:eth0,eth1:mode=balance-xor,xmit_hash_policy=layer2+3 "
                     "vlan=bond0.77:bond0 ip=bond0.77:dhcp")


class Target(Protocol):
    """Where a variant's dump goes and how the bench reads it back after one boot."""

    network: bool  # the guest gets a virtio NIC on QEMU's user-mode network

    def attach(self, workdir: Path) -> list[Path]:
        """Before the boot: the disks to give the guest (and whatever to remember)."""
        ...

    def fetch(self, workdir: Path, disks: list[Path]) -> Dump | None:
        """After the boot: the dump this boot left (copied to this host), if any."""
        ...


class LocalDisk:
    """A fresh ext4 disk (DISK_UUID, sparse) per boot; the dump directory is extracted from it."""

    network = False

    def __init__(self, size_mib: int = 256) -> None:
        self.size_mib = size_mib

    def attach(self, workdir: Path) -> list[Path]:
        return [make_disk(workdir / "target.img", self.size_mib, DISK_UUID, "KDUMP")]

    def fetch(self, workdir: Path, disks: list[Path]) -> Dump | None:
        replay_journal(disks[0])
        dumps = find_dumps(disks[0], workdir / "out")
        return dumps[0] if dumps else None


class LvmLogicalVolume:
    """A fresh copy of harness.stacks' linear LV per boot; read back in a tool guest."""

    network = False

    def __init__(self, kernel: Kernel) -> None:
        self.kernel = kernel
        self.stack: stacks.Stack | None = None

    def attach(self, workdir: Path) -> list[Path]:
        self.stack = stacks.lvm_linear(self.kernel, workdir / "disks")
        return self.stack.disks

    def fetch(self, workdir: Path, disks: list[Path]) -> Dump | None:
        assert self.stack is not None, "attach ran"
        dumps = find_dumps(stacks.read_stack(self.kernel, self.stack, workdir / "fs.img"), workdir / "out")
        return dumps[0] if dumps else None


class SshServer:
    """An sshd; the dump directory is the one a boot added under `dumps`, named after the
    guest's `address`. The host's sshd is reached through QEMU's user-mode network; a lab's
    (`network=False`) through the lab's taps, which the variant's extra_args attach."""

    def __init__(self, dumps: Path, address: str = GUEST_ADDRESS, network: bool = True) -> None:
        self.dumps = dumps
        self.address = address
        self.network = network
        self._before: set[Path] = set()

    def _dirs(self) -> set[Path]:
        return set(network_dump_dirs(self.dumps, self.address))

    def attach(self, workdir: Path) -> list[Path]:
        self._before = self._dirs()
        return []

    def fetch(self, workdir: Path, disks: list[Path]) -> Dump | None:
        new = sorted(self._dirs() - self._before)
        return dump_on_host(new[-1]) if new else None


@dataclass
class Variant:
    """One capture image under test: its guest setup and how to tell that its dump completed."""

    name: str
    initrd: Path
    succeeded: Callable[[str], bool]  # on the console
    target: Target
    capture_cmdline: str = CAPTURE_CMDLINE
    extra_args: tuple[str, ...] = ()  # more QEMU arguments: a lab's NICs
    prefix: tuple[str, ...] = ()  # QEMU's command prefix: a lab's namespace
    # What is wrong with the dump read back ([] when it is good): harness.dumps' check for
    # the agent; the baseline saves no record, so only its vmcore and log are judged.
    problems: Callable[[Dump, Path], list[str]] = dump_problems
    memory_mib: int = 1024  # the guest's RAM (QEMU -m)
    cpus: int = 1  # the guest's CPUs (QEMU -smp)
    fill: bool = False  # fill the guest's free memory before the panic (harness.panic_initrd)
    timeout_s: int = BOOT_TIMEOUT_S


@dataclass
class Run:
    crashkernel_mib: int
    ok: bool
    seconds_panic_to_end: float | None
    console: str
    dump_dir: Path | None
    why: str = ""  # what went wrong, when not ok
    manifest: dict[str, Any] = field(default_factory=dict)  # the agent's kdump-agent.json, if any


def log(text: str) -> None:
    print(f"[bench {time.strftime('%H:%M:%S')}] {text}", flush=True)


def build_baseline(kernel: Kernel, module: Path = BASELINE_MODULE,
                   dracut_args: tuple[str, ...] = BASELINE_DRACUT_ARGS) -> Path:
    """A baseline image, made with dracut from a bench/baseline-module module; cached by content."""
    key = hashlib.sha256(kernel.kver.encode())
    if module != BASELINE_MODULE:  # the local baseline's key as it always was
        key.update("\0".join([module.name, *dracut_args]).encode())
    for path in sorted(module.iterdir()):
        key.update(path.read_bytes())
    output = cache_dir(CAPTURE_IMAGES) / f"baseline-dracut-{key.hexdigest()[:16]}.img"
    if output.exists():
        return output
    with tempfile.TemporaryDirectory(prefix="kdump-bench.") as scratch:
        base = overlay_dracut_dir(Path(scratch) / "dracut", module)
        env = {**os.environ, "dracutbasedir": str(base)}
        subprocess.run(["dracut", "--force", "--quiet", "--kver", kernel.kver, "--kmoddir",
                        str(kernel.kmoddir), "--modules", module.name[2:], "--no-early-microcode",
                        "--no-hostonly", *dracut_args, str(output.with_suffix(".part"))],
                       check=True, env=env, timeout=900)
    output.with_suffix(".part").rename(output)
    return output


def ssh_config(server: Sshd, key: ClientKey, dumps: Path) -> str:
    """As tests/e2e/test_network_ssh.py: the host's sshd as the guest sees it, key, pin, NIC driver."""
    return "\n".join([f"ssh root@{HOST_FROM_GUEST}:{server.port}", f"sshkey {key.path}", f"path {dumps}",
                      "extra_modules virtio_net", LEAN_DRACUT_ARGS, "failure_action poweroff", ""])


def build_ssh_image(kernel: Kernel, server: Sshd, key: ClientKey, dumps: Path, workdir: Path) -> Path:
    """mkinitrd's image for the server, with its host key pinned under the name the guest uses."""
    known_hosts = server.known_hosts(workdir / "known_hosts", "ed25519",
                                     name=f"[{HOST_FROM_GUEST}]:{server.port}")
    return build_capture_initrd(kernel, ssh_config(server, key, dumps), workdir,
                                packed=[key.path, known_hosts],
                                mkinitrd_args=["--known-hosts", str(known_hosts)])


def flat_problems(dump: Dump, workdir: Path) -> list[str]:
    """The SSH baseline's dump, judged as the local one once `makedumpfile -R` rebuilt its
    vmcore.flat (a flattened stream, as RHEL's kdump leaves it) into vmcore beside it."""
    flat = dump.local_copy / "vmcore.flat"
    if not flat.is_file():
        return [f"no vmcore.flat in {dump.local_copy}"]
    with open(flat, "rb") as stream:
        rebuilt = subprocess.run(["makedumpfile", "-R", str(dump.local_copy / "vmcore")], stdin=stream,
                                 capture_output=True, text=True, check=False, timeout=300)
    if rebuilt.returncode != 0:
        return [f"makedumpfile -R cannot rebuild {flat}: {rebuilt.stderr.strip()[-200:]}"]
    return panic_problems(dump.local_copy, workdir)


def baseline_ssh_variant(kernel: Kernel, server: Sshd, key: ClientKey, dumps: Path, workdir: Path) -> Variant:
    """The SSH baseline for this run's sshd: the cached dracut image, the server laid over it."""
    workdir.mkdir(parents=True, exist_ok=True)
    known_hosts = server.known_hosts(workdir / "known_hosts", "ed25519",
                                     name=f"[{HOST_FROM_GUEST}]:{server.port}")
    image = with_ssh_server(build_baseline(kernel, BASELINE_SSH_MODULE, BASELINE_SSH_DRACUT_ARGS),
                            workdir / "baseline-ssh.img", server=HOST_FROM_GUEST, port=server.port,
                            directory=str(dumps), key=key.path, known_hosts=known_hosts)
    return Variant("baseline-ssh", image, lambda console: "BASELINE: done rc=0" in console,
                   SshServer(dumps), problems=flat_problems)


FAILURE_SIGNS = [  # in the capture kernel's part of the console, most telling first
    ("out of memory", re.compile(r"Out of memory|invoked oom-killer|oom-kill")),
    ("kernel panic", re.compile(r"Kernel panic")),
    ("initramfs unpack failed", re.compile(r"Initramfs unpacking failed")),
    ("the agent's bootloader failed", re.compile(r"PYI-\d+:ERROR|Failed to extract")),
    ("agent failed", re.compile(r"kdump-agent: .*(failed|status [1-9])|failure action")),
    ("kexec load failed", re.compile(r"KDUMP-TEST: kexec load failed")),
]


def why_failed(console: str, timed_out: bool) -> str:
    """The first telling line after the deliberate panic, as `kind: line`."""
    start = console.find("KDUMP-TEST: panicking")
    after = console[start:] if start >= 0 else console
    after = after.split("Kernel panic - not syncing: sysrq triggered crash", 1)[-1]
    for kind, pattern in FAILURE_SIGNS:
        for line in after.splitlines():
            if pattern.search(line):
                text = re.sub(r"^\s*\[\s*\d+\.\d+\]\s*", "", line).strip()
                return f"{kind}: {text[:140]}" + (" (then timed out)" if timed_out else "")
    return "timed out" if timed_out else "no dump (nothing telling on the console)"


def memfree_at_collect(manifest: dict[str, Any]) -> int | None:
    value = (manifest.get("footprint") or {}).get("memfree_at_collect_kib")
    return int(value) if value is not None else None


def panic_once(kernel: Kernel, variant: Variant, crashkernel_mib: int, workdir: Path,
               until: Callable[[str], bool] | None = None) -> tuple[BootResult, list[Path]]:
    """Boot the variant's guest, which loads its capture image and panics; QEMU's result and
    the disks it had. `until` stops the guest at a console line."""
    workdir.mkdir(parents=True, exist_ok=True)
    key = hashlib.sha256(variant.capture_cmdline.encode()).hexdigest()[:8]
    panic = build_panic_initrd(kernel, variant.initrd, variant.capture_cmdline,
                               cache_dir(CAPTURE_IMAGES) / f"bench-panic-{variant.name}-{key}.img",
                               fill=variant.fill)
    disks = variant.target.attach(workdir)
    result = boot(kernel, panic, append=f"console=ttyS0 crashkernel={crashkernel_mib}M panic=1",
                  disks=disks, memory_mib=variant.memory_mib, cpus=variant.cpus,
                  timeout_s=variant.timeout_s, log_path=workdir / "console.log",
                  extra_args=[*(USER_NETWORK if variant.target.network else ()), *variant.extra_args],
                  prefix=variant.prefix, until=until)
    return result, disks


def capture_once(kernel: Kernel, variant: Variant, crashkernel_mib: int, workdir: Path) -> Run:
    """One panic at one reservation size; the dump counts only if it reads back."""
    result, disks = panic_once(kernel, variant, crashkernel_mib, workdir)
    panicked = result.at("KDUMP-TEST: panicking")
    dump = variant.target.fetch(workdir, disks)
    dump_dir = dump.local_copy if dump else None
    ok = (not result.timed_out) and variant.succeeded(result.console)
    why = "" if ok else why_failed(result.console, result.timed_out)
    if ok:
        problems = variant.problems(dump, workdir) if dump else ["no dump directory"]
        ok = not problems
        why = "" if ok else f"the console says saved, but: {'; '.join(problems)}"
    manifest = manifest_of(dump) if dump else {}
    seconds = result.seconds - panicked if (ok and panicked is not None) else None
    memfree = memfree_at_collect(manifest)
    log(f"{variant.name} at crashkernel={crashkernel_mib}M: {'dump ok' if ok else 'no dump'}"
        + (f", panic to end {seconds:.1f} s" if seconds else "")
        + (f", MemFree at collect {memfree} kB" if memfree else "")
        + (f" ({why}; {workdir / 'console.log'})" if why else ""))
    return Run(crashkernel_mib, ok, seconds, result.console, dump_dir, why, manifest)


def memory_floor(kernel: Kernel, variant: Variant, workdir: Path) -> tuple[int | None, list[Run]]:
    """The smallest reservation that dumps in CONFIRM_RUNS of CONFIRM_RUNS boots: bisect
    CRASHKERNEL_STEPS_MIB (16M steps), then floors.Attempts.confirmed (8M)."""
    runs: list[Run] = []

    def boot(mib: int, nth: int) -> bool:
        runs.append(capture_once(kernel, variant, mib, workdir / f"floor-{mib}-{nth}"))
        return runs[-1].ok

    attempt = floors.Attempts(boot)
    top = CRASHKERNEL_STEPS_MIB[-1]
    if not attempt(top):
        return None, runs
    low, high = -1, len(CRASHKERNEL_STEPS_MIB) - 1  # index `low` fails (or is below the list)
    while high - low > 1:
        middle = (low + high) // 2
        if attempt(CRASHKERNEL_STEPS_MIB[middle]):
            high = middle
        else:
            low = middle
    return attempt.confirmed(CRASHKERNEL_STEPS_MIB[high], CRASHKERNEL_STEPS_MIB[0], top), runs


@contextmanager
def lab_ssh(kernel: Kernel, work: Path, key: ClientKey,
            vlan: int | None) -> Iterator[Callable[[str, str, str, int], Variant]]:
    """A lab with two NICs (VLAN `vlan` behind the relay, if any) and its sshd on
    10.77.0.1:22; yields how to make a variant: (name, extra_modules, capture cmdline, NICs)."""
    with Lab(work / f"lab-{vlan}", nics=2, vlan=vlan) as lab:
        lab.dnsmasq(Dns(leases=((nic_mac(0), BOND_VLAN_ADDRESS),)))
        server = Sshd(work / "sshd", authorized=(key,), listen=(SERVER_V4,),
                      prefix=tuple(lab.prefix)).start(port=22)
        images: list[Path] = []
        try:
            dumps = work / "dumps"
            known_hosts = server.known_hosts(work / "known_hosts", "ed25519", name=SERVER_V4)

            def variant(name: str, modules: str, cmdline: str, nics: int) -> Variant:
                config = "\n".join([f"ssh root@{SERVER_V4}", f"sshkey {key.path}", f"path {dumps}",
                                    f"extra_modules {modules}", LEAN_DRACUT_ARGS,
                                    "failure_action poweroff", ""])
                (work / name).mkdir(parents=True, exist_ok=True)
                image = build_capture_initrd(kernel, config, work / name,
                                             packed=[key.path, known_hosts],
                                             mkinitrd_args=["--known-hosts", str(known_hosts)])
                images.append(image)
                return Variant(f"kdump-agent-{name}", image, lambda console: "dump saved in" in console,
                               SshServer(dumps, BOND_VLAN_ADDRESS, network=False), capture_cmdline=cmdline,
                               extra_args=tuple(lab.qemu_nic_args()[:4 * nics]), prefix=tuple(lab.prefix))

            yield variant
        finally:
            server.stop()
            for image in images:
                image.unlink(missing_ok=True)  # this run's keys only: no later run could reuse it


def bond_vlan_floor(kernel: Kernel, key: ClientKey, work: Path) -> tuple[int | None, list[Run]]:
    """The memory floor of an SSH dump over VLAN 77 on a balance-xor bond (two NICs, DHCP):
    what the bonding and 8021q modules, the links and the bring-up cost the capture kernel.
    One lab for the whole bisection; its sshd listens on 10.77.0.1:22 inside the namespace."""
    with lab_ssh(kernel, work, key, vlan=77) as variant:
        return memory_floor(kernel, variant("bond-vlan", "virtio_net bonding 8021q", BOND_VLAN_CMDLINE, 2),
                            work)


def links_memfree(kernel: Kernel, key: ClientKey, work: Path, crashkernel_mib: int = 176) -> dict[str, Any]:
    """Where a bond and a VLAN's memory goes: MemFree when makedumpfile starts, at one
    reservation, for one plain NIC, the same with bonding and 8021q loaded, a VLAN on that
    NIC, and the VLAN on a balance-xor bond of two NICs (host/estimate.py LINKS_RUNTIME)."""
    one_nic = f"{CAPTURE_CMDLINE} ip=dhcp"
    vlan_on_nic = f"{CAPTURE_CMDLINE} ifname=eth0:{nic_mac(0)} vlan=eth0.77:eth0 ip=eth0.77:dhcp"
    runs: dict[str, Run] = {}
    for vlan, setups in ((None, (("plain-nic", "virtio_net", one_nic, 1),
                                 ("nic-with-link-modules", "virtio_net bonding 8021q", one_nic, 1))),
                         (77, (("vlan-on-nic", "virtio_net bonding 8021q", vlan_on_nic, 1),
                               ("vlan-on-bond", "virtio_net bonding 8021q", BOND_VLAN_CMDLINE, 2)))):
        with lab_ssh(kernel, work, key, vlan=vlan) as variant:
            for name, modules, cmdline, nics in setups:
                runs[name] = capture_once(kernel, variant(name, modules, cmdline, nics), crashkernel_mib,
                                          work / f"{name}-{crashkernel_mib}")
    return {"crashkernel_mib": crashkernel_mib,
            "memfree_at_collect_kib": {name: memfree_at_collect(run.manifest) if run.ok else None
                                       for name, run in runs.items()}}


def kernel_log_seconds(text: str, marker: str) -> float | None:
    """The kernel timestamp of the first log line containing marker."""
    for line in text.splitlines():
        if marker in line:
            match = re.match(r"\s*\[\s*(\d+\.\d+)\]", line)
            if match:
                return float(match.group(1))
    return None


def agent_startup_seconds(dump_dir: Path) -> float | None:
    """From the hook's line to the agent's first state, in the capture kernel's own log."""
    text = (dump_dir / "kexec-dmesg.log").read_text(errors="replace")
    hook = kernel_log_seconds(text, "initramfs hook starts the agent")
    first = kernel_log_seconds(text, "kdump-agent: state START")
    return round(first - hook, 3) if hook is not None and first is not None else None


def state_seconds(manifest: dict[str, Any], state: str) -> float | None:
    for entry in manifest.get("states") or []:
        if entry.get("state") == state and entry.get("seconds") is not None:
            return float(entry["seconds"])
    return None


def transfer_mib_s(manifest: dict[str, Any]) -> float | None:
    """The stream's bytes over the transfer's seconds, as the agent measured them."""
    transfer = manifest.get("transfer") or {}
    if not transfer.get("seconds") or not transfer.get("stream_bytes"):
        return None
    return float(transfer["stream_bytes"]) / MIB / float(transfer["seconds"])


def unpacked_bytes(image: Path) -> int:
    return initramfs_unpacked_bytes(str(image))


def median(values: list[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 2) if present else None


def ratio(numerator: float | None, denominator: float | None) -> float | None:
    return round(numerator / denominator, 3) if numerator and denominator else None


def find_vmcore(kernel: Kernel) -> Path:
    """The real ELF vmcore tests/integration/conftest.py makes once and caches."""
    vmcore = cache_dir() / f"vmcore-elf-{kernel.kver}"
    if not vmcore.is_file():
        raise RuntimeError(f"{vmcore} missing: `.venv/bin/python -m pytest "
                           "tests/integration/test_real_vmcore.py` makes it (one panic in QEMU)")
    return vmcore


def loopback_throughput(server: Sshd, key: ClientKey, vmcore: Path, work: Path) -> dict[str, Any]:
    """The same flattened stream to the same sshd: the agent's SFTP path vs OpenSSH's `cat`.

    Each timing covers connect, login and the whole transfer; the agent's also its fsync of
    the file on the server and the size check before the rename (its real code path).
    """
    from kdump_agent.ssh.connection import SshTarget
    from kdump_agent.targets.sshdest import SshDestination

    work.mkdir(parents=True, exist_ok=True)
    stream = work / "stream.flat"
    with open(stream, "wb") as out:
        subprocess.run([*STREAM_COLLECTOR, str(vmcore)], stdout=out, stderr=subprocess.DEVNULL,
                       check=True, timeout=600)
    size = stream.stat().st_size
    known_hosts = server.known_hosts(work / "known_hosts", "ed25519")  # [127.0.0.1]:port
    destination = SshDestination(user="root", host="127.0.0.1", port=server.port,
                                 directory=str(work / "sftp"), key_path=str(key.path),
                                 known_hosts_path=str(known_hosts))
    (work / "cat").mkdir(exist_ok=True)

    def agent(number: int) -> None:
        with open(stream, "rb") as source, SshTarget.connect(destination) as target:
            target.make_dump_dir(f"run-{number}")
            summary = target.receive_flattened(source)
        assert summary.stream_bytes == size and not summary.flattened, summary
        shutil.rmtree(work / "sftp" / f"run-{number}")

    def openssh(number: int) -> None:
        copy = work / "cat" / f"run-{number}"
        with open(stream, "rb") as source:
            subprocess.run(["ssh", "-F", "/dev/null", "-c", "aes128-gcm@openssh.com", "-i", str(key.path),
                            "-o", f"UserKnownHostsFile={known_hosts}", "-o", "GlobalKnownHostsFile=/dev/null",
                            "-o", "StrictHostKeyChecking=yes", "-o", "BatchMode=yes", "-p", str(server.port),
                            "root@127.0.0.1", f"cat > {copy}"], stdin=source, check=True, timeout=600)
        assert copy.stat().st_size == size
        copy.unlink()

    seconds: dict[str, list[float]] = {"agent": [], "openssh": []}
    for number in range(THROUGHPUT_RUNS):  # alternately, so drift hits both alike
        for name, send in (("agent", agent), ("openssh", openssh)):
            started = time.monotonic()
            send(number)
            seconds[name].append(time.monotonic() - started)
    stream.unlink()
    paramiko_s, openssh_s = statistics.median(seconds["agent"]), statistics.median(seconds["openssh"])
    result = {"stream_bytes": size, "stream": f"{' '.join(STREAM_COLLECTOR)} of {vmcore.name}",
              "runs": THROUGHPUT_RUNS,
              "paramiko_sftp_mib_s": round(size / MIB / paramiko_s, 1),
              "openssh_cat_mib_s": round(size / MIB / openssh_s, 1),
              "ratio": round(openssh_s / paramiko_s, 3),  # paramiko's speed as a share of OpenSSH's
              "paramiko_s": [round(s, 3) for s in seconds["agent"]],
              "openssh_s": [round(s, 3) for s in seconds["openssh"]]}
    log(f"loopback, {size / MIB:.1f} MiB stream: paramiko SFTP {result['paramiko_sftp_mib_s']} MiB/s, "
        f"OpenSSH cat {result['openssh_cat_mib_s']} MiB/s")
    return result


def chart(report: dict[str, Any], path: Path) -> None:
    """Memory floor and panic-to-reboot time: the baseline (local and SSH), the peer (the
    distribution's own kdump), our full system, ours to a local disk and over SSH. A bar
    whose figure the report lacks (no peer measured, an older report) is left out."""
    import matplotlib
    matplotlib.use("Agg")
    from matplotlib import pyplot

    floor, timing = report["floor_mib"], report["time"]
    ssh, peer, full = report.get("ssh") or {}, report.get("peer") or {}, report.get("ours_full") or {}
    grey, peach, blue, teal = "#999999", "#dd8452", "#2b6cb0", "#2c7a7b"
    # (label, figure, colour, target): the target is the dashed line over the bar.
    floors = [("baseline", floor.get("baseline"), grey, None),
              ("peer", peer.get("floor_mib"), peach, None),
              ("ours\nfull system", full.get("floor_mib"), blue, peer.get("floor_mib")),
              ("ours\nlocal", floor.get("local"), blue, TARGETS["floor_local_mib"]),
              ("ours\nSSH", floor.get("ssh"), teal, TARGETS["floor_ssh_mib"])]
    times = [("baseline", timing.get("baseline_s"), grey, None),
             ("peer", peer.get("time_s"), peach, None),
             ("ours\nfull system", full.get("time_s"), blue, (peer.get("time_s") or 0) / 2 or None),
             ("ours\nlocal", timing.get("ours_s"), blue,
              (timing.get("baseline_s") or 0) * TARGETS["time_ratio"] or None),
             ("baseline\nSSH", ssh.get("baseline_time_s"), grey, None),
             ("ours\nSSH", ssh.get("total_s"), teal,
              (ssh.get("baseline_time_s") or 0) * TARGETS["ssh_baseline_ratio"] or None)]
    figure, (left, right) = pyplot.subplots(1, 2, figsize=(12, 4.2))
    for axes, bars, label in ((left, floors, "smallest crashkernel= that dumps (MiB)"),
                              (right, times, "panic to reboot, median (s)")):
        present = [bar for bar in bars if bar[1] is not None]
        axes.bar([name for name, *_ in present], [value for _, value, *_ in present],
                 color=[colour for _, _, colour, _ in present])
        goals = [(x, goal) for x, (*_, goal) in enumerate(present) if goal]
        if goals:
            axes.hlines([y for _, y in goals], [x - 0.4 for x, _ in goals], [x + 0.4 for x, _ in goals],
                        color="#c05621", linestyle="--", label="target")
            axes.legend(loc="lower right")
        axes.set_ylabel(label)
    figure.suptitle(f"kdump-agent bench, {report['date']} (1 GiB guest, QEMU TCG)")
    figure.tight_layout()
    figure.savefig(path, dpi=100)


def floor_record(runs: list[Run]) -> list[dict[str, Any]]:
    """Every boot of a floor search: its size, whether it dumped, why not, and the margin."""
    return [{"crashkernel_mib": r.crashkernel_mib, "ok": r.ok, "why": r.why or None,
             "memfree_at_collect_kib": memfree_at_collect(r.manifest)} for r in runs]


def ssh_report(floor_runs: list[Run], ssh_runs: list[Run], local_runs: list[Run], baseline_runs: list[Run],
               image: Path, throughput: dict[str, Any] | None) -> dict[str, Any]:
    """SSH vs local and vs the SSH baseline from the same run: totals, the COLLECT state (the
    transfer), footprint."""
    ssh_manifests = [r.manifest for r in ssh_runs if r.ok]
    local_manifests = [r.manifest for r in local_runs if r.ok]
    total = median([r.seconds_panic_to_end for r in ssh_runs])
    local_total = median([r.seconds_panic_to_end for r in local_runs])
    collect = median([state_seconds(m, "COLLECT") for m in ssh_manifests])
    local_collect = median([state_seconds(m, "COLLECT") for m in local_manifests])
    footprint = (ssh_manifests[-1].get("footprint") or {}) if ssh_manifests else {}
    return {
        "total_s": total, "local_total_s": local_total, "ratio": ratio(total, local_total),
        "collect_s": collect, "local_collect_s": local_collect,
        "collect_ratio": ratio(collect, local_collect),
        "transfer_mib_s": median([transfer_mib_s(m) for m in ssh_manifests]),
        "network_up_s": median([state_seconds(m, "NETWORK_UP") for m in ssh_manifests]),
        "mount_target_s": median([state_seconds(m, "MOUNT_TARGET") for m in ssh_manifests]),
        "runs": len(ssh_runs), "runs_ok": len(ssh_manifests), "crashkernel_mib": TIME_AT_MIB,
        **ssh_versus_baseline(ssh_runs, baseline_runs),
        "initramfs_bytes": image.stat().st_size,
        "initramfs_unpacked_bytes": unpacked_bytes(image),
        "agent_peak_rss_kib": footprint.get("agent_peak_rss_kib"),
        "memfree_at_collect_kib": footprint.get("memfree_at_collect_kib"),
        "floor_runs": floor_record(floor_runs),
        "throughput": throughput,
    }


BASELINE_SSH_MARKS = ("BASELINE: hook starts", "BASELINE: network up", "BASELINE: logged in",
                      "BASELINE: log sent", "BASELINE: stream sent", "BASELINE: done")


def baseline_ssh_phases(console: str) -> dict[str, float | None]:
    """The SSH baseline's steps, from its console lines' kernel timestamps: network (DHCP),
    login, the log read and sent, the stream, the rename; each from the mark before."""
    stamps = [kernel_log_seconds(console, mark) for mark in BASELINE_SSH_MARKS]
    names = ("network_up_s", "login_s", "dmesg_s", "stream_s", "rename_s")
    return {name: round(end - start, 3) if start is not None and end is not None else None
            for name, start, end in zip(names, stamps[:-1], stamps[1:], strict=True)}


def ssh_versus_baseline(ssh_runs: list[Run], baseline_runs: list[Run]) -> dict[str, Any]:
    """ssh.baseline_time_s and ssh.baseline_ratio (ours over the baseline, panic to reboot),
    with the baseline's steps beside ours for where the time goes."""
    total = median([r.seconds_panic_to_end for r in ssh_runs])
    baseline = median([r.seconds_panic_to_end for r in baseline_runs])
    phases = [baseline_ssh_phases(r.console) for r in baseline_runs if r.ok]
    return {"baseline_time_s": baseline, "baseline_ratio": ratio(total, baseline),
            "baseline_runs": len(baseline_runs), "baseline_runs_ok": len(phases),
            "baseline_phases_s": {name: median([p[name] for p in phases])
                                  for name in (phases[0] if phases else {})}}


def ssh_baseline(kernel: Kernel, work: Path) -> dict[str, Any]:
    """`run.py ssh-baseline`: only the two SSH timings, ours and the OpenSSH baseline, taken
    alternately (TIME_RUNS each at TIME_AT_MIB) so drift hits both alike."""
    (work / "ssh").mkdir()
    key = keygen(work / "ssh" / "kdump_id_rsa", "rsa")
    server = Sshd(work / "ssh" / "sshd", authorized=(key,)).start()
    try:
        ours_image = build_ssh_image(kernel, server, key, work / "ssh" / "dumps", work / "ssh")
        ours = Variant("kdump-agent-ssh", ours_image, lambda console: "dump saved in" in console,
                       SshServer(work / "ssh" / "dumps"), capture_cmdline=DHCP_CMDLINE)
        baseline = baseline_ssh_variant(kernel, server, key, work / "ssh" / "baseline-dumps",
                                        work / "ssh" / "baseline")
        runs: dict[str, list[Run]] = {ours.name: [], baseline.name: []}
        for number in range(TIME_RUNS):
            for variant in (baseline, ours):
                runs[variant.name].append(capture_once(kernel, variant, TIME_AT_MIB,
                                                       work / f"time-{variant.name}-{number}"))
    finally:
        server.stop()
    ours_image.unlink(missing_ok=True)  # this run's port and keys only
    manifests = [r.manifest for r in runs[ours.name] if r.ok]
    return {"total_s": median([r.seconds_panic_to_end for r in runs[ours.name]]),
            "runs_ok": len(manifests),
            **ssh_versus_baseline(runs[ours.name], runs[baseline.name]),
            **{f"{state.lower()}_s": median([state_seconds(m, state) for m in manifests])
               for state in ("NETWORK_UP", "MOUNT_TARGET", "SAVE_DMESG", "COLLECT")},
            "transfer_mib_s": median([transfer_mib_s(m) for m in manifests]),
            "target_ratio": TARGETS["ssh_baseline_ratio"]}


def main(argv: list[str]) -> int:
    started = time.monotonic()
    kernel = fetch_kernel()
    work = Path(tempfile.mkdtemp(prefix="kdump-bench."))
    log(f"kernel {kernel.kver}; work in {work}")
    if argv == ["bond-vlan"]:
        floor, _ = bond_vlan_floor(kernel, keygen(work / "kdump_id_rsa", "rsa"), work / "bond-vlan")
        print(f"memory floor, kdump-agent (SSH over VLAN on a bond): {floor} MiB")
        return 0
    if argv == ["readme"]:
        readme_table.update(REPO / "README.md", json.loads((RESULTS / "latest.json").read_text()))
        return 0
    if argv == ["ssh-baseline"]:
        print(json.dumps(ssh_baseline(kernel, work), indent=2))
        return 0
    if argv == ["peer"]:
        print(json.dumps(peer.full_systems(work / "full-systems"), indent=2))
        return 0
    if argv == ["links-memfree"]:
        shares = links_memfree(kernel, keygen(work / "kdump_id_rsa", "rsa"), work / "links")
        print(json.dumps(shares, indent=2))
        return 0
    with tempfile.TemporaryDirectory() as scratch:
        ours_image = build_capture_initrd(kernel, OURS_CONFIG, Path(scratch))
    import scale  # bench/scale.py builds on this module's variants and runs

    if argv == ["scale"]:
        print(json.dumps(scale.scale(kernel, ours_image, work / "scale").rows, indent=2))
        return 0
    if argv == ["threads"]:
        print(json.dumps(scale.threads(kernel, ours_image, work / "threads"), indent=2))
        return 0
    if argv == ["compression"]:
        print(json.dumps(scale.compression(kernel, work / "compression"), indent=2))
        return 0
    baseline_image = build_baseline(kernel)
    baseline = Variant("baseline", baseline_image, lambda console: "BASELINE: done rc=0" in console,
                       LocalDisk(), problems=lambda dump, workdir: panic_problems(dump.local_copy, workdir))
    ours = Variant("kdump-agent", ours_image, lambda console: "dump saved in" in console, LocalDisk())
    with tempfile.TemporaryDirectory() as scratch:
        lvm_plain = build_capture_initrd(kernel, LVM_CONFIG, Path(scratch))
    lvm_image = with_config_overlay(lvm_plain, LVM_CONFIG, cache_dir(CAPTURE_IMAGES) / "bench-lvm.img",
                                    records={"storage.json": LVM_RECORD})
    on_lvm = Variant("kdump-agent-lvm", lvm_image, lambda console: "dump saved in" in console,
                     LvmLogicalVolume(kernel))

    (work / "ssh").mkdir()
    client_key = keygen(work / "ssh" / "kdump_id_rsa", "rsa")  # RHEL's default kind
    server = Sshd(work / "ssh" / "sshd", authorized=(client_key,)).start()
    try:
        dumps = work / "ssh" / "dumps"
        log(f"sshd on 127.0.0.1:{server.port}; building the SSH image")
        ssh_image = build_ssh_image(kernel, server, client_key, dumps, work / "ssh")
        over_ssh = Variant("kdump-agent-ssh", ssh_image, lambda console: "dump saved in" in console,
                           SshServer(dumps), capture_cmdline=DHCP_CMDLINE)
        baseline_ssh = baseline_ssh_variant(kernel, server, client_key, work / "ssh" / "baseline-dumps",
                                            work / "ssh" / "baseline")

        floors: dict[str, int | None] = {}
        floor_runs: dict[str, list[Run]] = {}
        searched = (("baseline", baseline), ("local", ours), ("ssh", over_ssh))
        for key, variant in searched if argv == ["quick"] else (*searched, ("lvm", on_lvm)):
            floors[key], floor_runs[key] = memory_floor(kernel, variant, work / variant.name)
        if argv == ["quick"]:  # `make bench-quick`: the floors at 1 GiB only
            print(json.dumps({"floor_mib": floors, "floor_runs": {key: floor_record(runs)
                                                                  for key, runs in floor_runs.items()}},
                             indent=2))
            return 0
        floors["bond_vlan"], floor_runs["bond_vlan"] = bond_vlan_floor(kernel, client_key,
                                                                        work / "bond-vlan")
        links = links_memfree(kernel, client_key, work / "links")

        timings: dict[str, list[Run]] = {}
        for variant in (baseline, ours, over_ssh, baseline_ssh):
            timings[variant.name] = [
                capture_once(kernel, variant, TIME_AT_MIB, work / f"time-{variant.name}-{n}")
                for n in range(TIME_RUNS)]
        throughput = loopback_throughput(server, client_key, find_vmcore(kernel), work / "throughput")
    finally:
        server.stop()
    scaled = scale.scale(kernel, ours_image, work / "scale", unfilled_floor_mib=floors["local"])
    threads = scale.threads(kernel, ours_image, work / "threads", scaled)
    compression = scale.compression(kernel, work / "compression")
    full_systems = peer.full_systems(work / "full-systems")

    base_s = median([r.seconds_panic_to_end for r in timings["baseline"]])
    ours_s = median([r.seconds_panic_to_end for r in timings["kdump-agent"]])
    good = [r for r in timings["kdump-agent"] if r.ok and r.dump_dir]
    manifest = good[-1].manifest if good else {}
    startups = [agent_startup_seconds(r.dump_dir) for r in good if r.dump_dir]
    baseline_free = [m.group(1) for r in timings["baseline"]
                     for m in [re.search(r"MemFree at collector start: *(\d+) kB", r.console)] if m]

    report: dict[str, Any] = {
        "date": datetime.datetime.now().isoformat(timespec="seconds"),
        "machine": {"host": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version()},
        "kernel": kernel.kver,
        "commit": subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"],
                                 capture_output=True, text=True, check=False).stdout.strip(),
        "floor_mib": {"baseline": floors["baseline"], "local": floors["local"], "lvm": floors["lvm"],
                      "ssh": floors["ssh"], "bond_vlan": floors["bond_vlan"]},
        "links_memfree": links,
        "time": {"baseline_s": base_s, "ours_s": ours_s, "ratio": ratio(ours_s, base_s),
                 "runs": TIME_RUNS, "crashkernel_mib": TIME_AT_MIB,
                 "agent_startup_s": median(startups)},
        "footprint": {
            "binary_bytes": BINARY.stat().st_size,
            "initramfs_bytes": ours_image.stat().st_size,
            "initramfs_unpacked_bytes": unpacked_bytes(ours_image),
            "lvm_initramfs_unpacked_bytes": unpacked_bytes(lvm_image),
            "baseline_initramfs_bytes": baseline_image.stat().st_size,
            "baseline_initramfs_unpacked_bytes": unpacked_bytes(baseline_image),
            **(manifest.get("footprint") or {}),
            "baseline_memfree_at_collect_kib": int(baseline_free[-1]) if baseline_free else None,
        },
        "ssh": ssh_report(floor_runs["ssh"], timings["kdump-agent-ssh"],
                          timings["kdump-agent"], timings["baseline-ssh"], ssh_image, throughput),
        "scale": scaled.rows,
        "threads": threads,
        "compression": compression,
        **full_systems,
        "targets": TARGETS,
        "bench_seconds": round(time.monotonic() - started),
    }
    ssh_image.unlink(missing_ok=True)  # this run's port and keys only: no later run could reuse it
    RESULTS.mkdir(parents=True, exist_ok=True)
    text = json.dumps(report, indent=2) + "\n"
    (RESULTS / "latest.json").write_text(text)
    (RESULTS / f"bench-{report['date']}.json".replace(":", "")).write_text(text)
    chart(report, RESULTS / "latest.png")
    readme_table.update(REPO / "README.md", report)
    print_table(report)
    return 0


def goal(value: float | None, target: str) -> str:
    limit = TARGETS[target]
    verdict = "n/a" if value is None else ("met" if value <= limit else "NOT met")
    return f"target <= {limit}: {verdict}"


def print_table(report: dict[str, Any]) -> None:
    floor, timing, footprint = report["floor_mib"], report["time"], report["footprint"]
    ssh = report["ssh"] or {}
    put = ssh.get("throughput") or {}
    rows = [
        ("memory floor, baseline", f"{floor['baseline']} MiB"),
        ("memory floor, kdump-agent (local)",
         f"{floor['local']} MiB ({goal(floor['local'], 'floor_local_mib')})"),
        ("memory floor, kdump-agent (LVM)", f"{floor.get('lvm')} MiB"),
        ("memory floor, kdump-agent (SSH)", f"{floor['ssh']} MiB ({goal(floor['ssh'], 'floor_ssh_mib')})"),
        ("memory floor, kdump-agent (SSH, VLAN on a bond)", f"{floor.get('bond_vlan')} MiB"),
        ("panic to reboot, baseline", f"{timing['baseline_s']} s"),
        ("panic to reboot, kdump-agent (local)",
         f"{timing['ours_s']} s (ratio {timing['ratio']}, {goal(timing['ratio'], 'time_ratio')})"),
        ("panic to reboot, kdump-agent (SSH)",
         (f"{ssh.get('total_s')} s (vs local: ratio {ssh.get('ratio')}, "
         f"{goal(ssh.get('ratio'), 'ssh_ratio')})")),
        ("panic to reboot, SSH baseline (OpenSSH `cat`)",
         (f"{ssh.get('baseline_time_s')} s (ours SSH / it: ratio {ssh.get('baseline_ratio')}, "
          f"{goal(ssh.get('baseline_ratio'), 'ssh_baseline_ratio')})")),
        ("SSH baseline: network / login / log / stream / rename",
         " / ".join(f"{value} s" for value in (ssh.get("baseline_phases_s") or {}).values()) or "None"),
        ("COLLECT state, SSH / local", (f"{ssh.get('collect_s')} / {ssh.get('local_collect_s')} s "
                                       f"(ratio {ssh.get('collect_ratio')}); "
                                       f"transfer {ssh.get('transfer_mib_s')} MiB/s")),
        ("NETWORK_UP / MOUNT_TARGET (SSH login)",
         f"{ssh.get('network_up_s')} / {ssh.get('mount_target_s')} s"),
        ("agent start-up (hook to first state)",
         f"{timing['agent_startup_s']} s ({goal(timing['agent_startup_s'], 'agent_startup_s')})"),
        ("binary", f"{footprint['binary_bytes'] / 1e6:.1f} MB"),
        ("initramfs ours / baseline", (f"{footprint['initramfs_bytes'] / 1e6:.1f} / "
                                      f"{footprint['baseline_initramfs_bytes'] / 1e6:.1f} MB compressed, "
                                      f"{footprint['initramfs_unpacked_bytes'] / 1e6:.1f} / "
                                      f"{footprint['baseline_initramfs_unpacked_bytes'] / 1e6:.1f} "
                                      "MB unpacked")),
        ("initramfs SSH", (f"{(ssh.get('initramfs_bytes') or 0) / 1e6:.1f} MB compressed, "
                          f"{(ssh.get('initramfs_unpacked_bytes') or 0) / 1e6:.1f} MB unpacked")),
        ("agent peak RSS, its program in the image", (f"{footprint.get('agent_peak_rss_kib')} KiB "
                                            f"(SSH {ssh.get('agent_peak_rss_kib')} KiB), "
                                            f"{footprint.get('agent_unpacked_bytes')} bytes")),
        (f"MemFree at collector start ({TIME_AT_MIB}M) local / SSH / baseline",
         (f"{footprint.get('memfree_at_collect_kib')} / {ssh.get('memfree_at_collect_kib')} / "
         f"{footprint.get('baseline_memfree_at_collect_kib')} KiB")),
        ("loopback SSH, paramiko SFTP / OpenSSH cat",
         (f"{put.get('paramiko_sftp_mib_s')} / {put.get('openssh_cat_mib_s')} MiB/s "
         f"(ratio {put.get('ratio')}; {(put.get('stream_bytes') or 0) / MIB:.1f} MiB stream, "
         f"{put.get('stream')})")),
        *peer.table_rows(report),
    ]
    for row in report.get("scale") or []:
        rows.append((f"{row['ram_gib']} GiB guest, filled: floor / estimate",
                     f"{row['floor_mib']} / {row['estimate_mib']} MiB"))
        rows.append((f"{row['ram_gib']} GiB guest, filled: COLLECT -d 31 / -d 1",
                     (f"{row['collect_s']} s ({row['input_mib_s']} MiB/s) / {row['d1_collect_s']} s "
                      f"({row.get('d1_input_mib_s')} MiB/s) of {row.get('vmcore_mib')} MiB /proc/vmcore")))
    threads, compression = report.get("threads") or {}, report.get("compression") or {}
    if threads:
        rows.append((f"COLLECT -d 1, {threads.get('ram_gib')} GiB, 1 / {threads['cpus']} CPUs",
                     (f"{threads['collect_s_1']} / {threads['collect_s_n']} s "
                      f"(speedup {threads['speedup']}); "
                      f"MemFree at collector start {threads.get('memfree_at_collect_kib_1')} / "
                      f"{threads.get('memfree_at_collect_kib_n')} KiB")))
    if compression:
        lzo, zlib = compression["lzo"], compression["zlib"]
        rows.append(("makedumpfile -l / -c (this host)",
                     (f"{lzo['seconds']} / {zlib['seconds']} s, {lzo['bytes'] / MIB:.1f} / "
                      f"{zlib['bytes'] / MIB:.1f} MiB of a "
                      f"{compression['vmcore_bytes'] / MIB:.0f} MiB vmcore; "
                      f"default {compression['default']}")))
    width = max(len(name) for name, _ in rows)
    print()
    for name, value in rows:
        print(f"{name:<{width}}  {value}")
    print(f"\nwritten: {RESULTS / 'latest.json'}, {RESULTS / 'latest.png'} "
          f"({report['bench_seconds']} s)")


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
