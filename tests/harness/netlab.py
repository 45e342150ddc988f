"""A network lab for QEMU guests: one network namespace with a bridge, the servers'
addresses on it, tap devices for the guest's NICs, and dnsmasq / a VLAN relay inside.

Real servers reach their dump server through bonds, VLANs, bridges and IPv6; QEMU's
user-mode network has none of that, and this host's kernel has no bonding or 8021q. So
the guest's NICs are taps in a namespace the lab creates (`kdump-lab-<pid>-<n>`), QEMU
runs inside it (`prefix`), and the servers (harness.sshd, harness.nfs_server, dnsmasq)
listen there on SERVER_V4 / SERVER_V6. Nothing outside the namespace is touched.

    guest eth0..N  ->  tap labtap0..N  ->  bridge labsrv0 (10.77.0.1/24, fd77::1/64)

With `vlan=VID` the guest's taps sit on their own bridge with a "trunk" tap, and the
servers' bridge holds an "access" tap; harness.vlan_relay moves frames between the two,
taking the 802.1Q header off one way and putting it on the other:

    guest taps + labtrunk0 -> bridge labtrk0   relay(VID)   labaccess0 -> bridge labsrv0

Everything the lab starts is stopped by its pid and the namespace is deleted on exit,
whatever happened. Usable from pytest and from bench/ alike: no pytest in here.
"""

from __future__ import annotations

import dataclasses
import itertools
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Self

from .processes import terminate

SERVER_V4 = "10.77.0.1"
SERVER_V6 = "fd77::1"
PREFIX_V4 = 24
PREFIX_V6 = 64
NET_V6 = "fd77::"
DHCP4_RANGE = ("10.77.0.50", "10.77.0.99")
DHCP6_RANGE = ("fd77::100", "fd77::1ff")
LAB_NAME = "dumps.lab"  # the servers' name, answered by the lab's dnsmasq
SERVER_BRIDGE = "labsrv0"
GUEST_BRIDGE = "labtrk0"  # the guest's side of a VLAN lab
TRUNK_TAP = "labtrunk0"
ACCESS_TAP = "labaccess0"
MAC_PREFIX = "52:54:00:77:00:"  # the guest's NICs: ...:01, ...:02, ...
RELAY = Path(__file__).with_name("vlan_relay.py")
READY_TIMEOUT = 20.0  # an upper bound for a daemon's "ready" line, not an expected time
STOP_TIMEOUT = 10.0
COMMAND_TIMEOUT = 30.0

_counter = itertools.count(1)


class LabError(RuntimeError):
    """A lab command or daemon failed; the message says which and why."""


@dataclasses.dataclass(frozen=True)
class Dns:
    """What the lab's dnsmasq serves besides DHCPv4: a router advertisement for SLAAC
    (`ra`), stateful DHCPv6 (`dhcp6`, RA with the M flag), names answered (name -> its
    addresses, A and/or AAAA), fixed DHCPv4 leases (MAC -> address, so a test knows the
    guest's address, hence its dump directory's name, beforehand) and the DNS servers DHCP
    and RA hand out."""

    dhcp4: bool = True
    ra: bool = False
    dhcp6: bool = False
    names: tuple[tuple[str, tuple[str, ...]], ...] = ()
    leases: tuple[tuple[str, str], ...] = ()
    dns4: tuple[str, ...] = (SERVER_V4,)
    dns6: tuple[str, ...] = (SERVER_V6,)


def nic_mac(index: int) -> str:
    """The fixed MAC of the guest's NIC `index` (0-based), the one tests put in `ifname=`."""
    return f"{MAC_PREFIX}{index + 1:02x}"


class Lab:
    """The namespace, bridges, taps and daemons of one test; use it as a context manager."""

    def __init__(self, workdir: Path, *, nics: int = 1, vlan: int | None = None) -> None:
        self.workdir = workdir
        self.nics = nics
        self.vlan = vlan
        self.namespace = f"kdump-lab-{os.getpid()}-{next(_counter)}"
        self.taps = [f"labtap{i}" for i in range(nics)]
        self.macs = [nic_mac(i) for i in range(nics)]
        self._processes: list[tuple[str, subprocess.Popen[bytes]]] = []
        self._created = False

    @property
    def prefix(self) -> list[str]:
        """Put in front of a command to run it inside the lab's namespace."""
        return ["ip", "netns", "exec", self.namespace]

    def __enter__(self) -> Self:
        self.workdir.mkdir(parents=True, exist_ok=True)
        try:
            self._create()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def ip(self, *args: str) -> str:
        """`ip -n <namespace> ...`; its output, or LabError with ip's message."""
        return _run(["ip", "-n", self.namespace, *args])

    def _create(self) -> None:
        _run(["ip", "netns", "add", self.namespace])
        self._created = True
        self.ip("link", "set", "lo", "up")
        self._bridge(SERVER_BRIDGE)
        self.ip("addr", "add", f"{SERVER_V4}/{PREFIX_V4}", "dev", SERVER_BRIDGE)
        self.ip("addr", "add", f"{SERVER_V6}/{PREFIX_V6}", "dev", SERVER_BRIDGE, "nodad")
        guest_side = SERVER_BRIDGE
        if self.vlan is not None:
            self._bridge(GUEST_BRIDGE)
            self._tap(TRUNK_TAP, GUEST_BRIDGE)
            self._tap(ACCESS_TAP, SERVER_BRIDGE)
            guest_side = GUEST_BRIDGE
        for tap in self.taps:
            self._tap(tap, guest_side)
        if self.vlan is not None:
            self._start_relay(self.vlan)

    def _bridge(self, name: str) -> None:
        """A plain bridge, no STP and no forward delay: ports forward as soon as they are up.

        The guest's side of a VLAN lab must not be a way to the servers: without IPv6 there
        (no link-local address, no neighbour answers) and with arp_ignore=1, the
        namespace's stack no longer answers ARP there for the servers' addresses, which it
        would otherwise do on any of its links (Linux's weak host model)."""
        self.ip("link", "add", name, "type", "bridge", "stp_state", "0", "forward_delay", "0")
        if name != SERVER_BRIDGE:
            _run([*self.prefix, "sysctl", "-q", "-w", f"net.ipv6.conf.{name}.disable_ipv6=1",
                  f"net.ipv4.conf.{name}.arp_ignore=1"])
        self.ip("link", "set", name, "up")

    def _tap(self, name: str, bridge: str) -> None:
        self.ip("tuntap", "add", "dev", name, "mode", "tap")
        _run([*self.prefix, "sysctl", "-q", "-w", f"net.ipv6.conf.{name}.disable_ipv6=1"])
        self.ip("link", "set", name, "master", bridge)
        self.ip("link", "set", name, "up")

    def _start_relay(self, vid: int) -> None:
        log_path = self.workdir / "vlan-relay.log"
        process = self.popen([sys.executable, str(RELAY), TRUNK_TAP, ACCESS_TAP, str(vid)],
                             log_path, name="vlan relay")
        self.wait_for_line(process, log_path, "relaying")

    def qemu_nic_args(self) -> list[str]:
        """QEMU's NICs on the lab's taps: virtio-net-pci `nic<i>` (the name QMP's set_link
        takes) with the fixed MAC nic_mac(i), in order, so the guest sees eth0, eth1, ..."""
        args: list[str] = []
        for index, (tap, mac) in enumerate(zip(self.taps, self.macs, strict=True)):
            args += ["-netdev", f"tap,id=net{index},ifname={tap},script=no,downscript=no",
                     "-device", f"virtio-net-pci,netdev=net{index},id=nic{index},mac={mac}"]
        return args

    def popen(self, argv: Sequence[str], log_path: Path, *, name: str,
              env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
        """Start `argv` inside the namespace with its output in `log_path`; close() stops it.
        `ip netns exec` execs the command, so the pid is the program's own."""
        with open(log_path, "ab") as log:
            process = subprocess.Popen([*self.prefix, *argv], stdin=subprocess.DEVNULL,
                                       stdout=log, stderr=log, env=env)
        self._processes.append((name, process))
        return process

    def wait_for_line(self, process: subprocess.Popen[bytes], log_path: Path, text: str,
                      timeout: float = READY_TIMEOUT) -> None:
        """Wait until `text` shows in `log_path`; LabError if the process exits or time runs out."""
        name = next((n for n, p in self._processes if p is process), f"pid {process.pid}")
        give_up = time.monotonic() + timeout
        while text.encode() not in log_path.read_bytes():
            if process.poll() is not None:
                raise LabError(f"{name} exited with status {process.returncode}:\n{_tail(log_path)}")
            if time.monotonic() > give_up:
                raise LabError(f"no {text!r} from {name} within {timeout:g}s:\n{_tail(log_path)}")
            time.sleep(0.05)

    def dnsmasq(self, dns: Dns = Dns()) -> Path:
        """Start dnsmasq on the servers' bridge as `dns` says; returns its log (DHCP and DNS
        queries are logged, so a test can tell what the guest asked)."""
        work = self.workdir
        log_path = work / "dnsmasq.log"
        argv = ["dnsmasq", "--no-daemon", "--conf-file=/dev/null", "--no-resolv", "--no-hosts",
                f"--interface={SERVER_BRIDGE}", "--bind-interfaces", "--user=root",
                f"--pid-file={work / 'dnsmasq.pid'}", f"--dhcp-leasefile={work / 'dnsmasq.leases'}",
                "--log-dhcp", "--log-queries", "--log-facility=-"]
        if dns.dhcp4:
            argv += [f"--dhcp-range={DHCP4_RANGE[0]},{DHCP4_RANGE[1]},1h"]
            if dns.dns4:
                argv += [f"--dhcp-option=option:dns-server,{','.join(dns.dns4)}"]
            argv += [f"--dhcp-host={mac},{address}" for mac, address in dns.leases]
        if dns.ra or dns.dhcp6:
            argv += ["--enable-ra"]
            if dns.dns6:
                argv += [f"--dhcp-option=option6:dns-server,{','.join(f'[{a}]' for a in dns.dns6)}"]
        if dns.ra:
            argv += [f"--dhcp-range={NET_V6},ra-only,{PREFIX_V6}"]
        if dns.dhcp6:
            argv += [f"--dhcp-range={DHCP6_RANGE[0]},{DHCP6_RANGE[1]},{PREFIX_V6},1h"]
        for name, addresses in dns.names:
            argv += [f"--host-record={name},{','.join(addresses)}"]
        process = self.popen(argv, log_path, name="dnsmasq")
        self.wait_for_line(process, log_path, "started, version")
        if dns.dhcp4 or dns.dhcp6:
            self.wait_for_line(process, log_path, "sockets bound exclusively")
        return log_path

    def pids(self) -> list[int]:
        """The pids of the processes the lab started and has not stopped yet."""
        return [process.pid for _, process in self._processes]

    def stop(self, process: subprocess.Popen[bytes]) -> None:
        """SIGTERM one process the lab started (SIGKILL if it lingers) and reap it."""
        terminate(process, STOP_TIMEOUT)

    def close(self) -> None:
        """Stop every process the lab started, newest first, then delete the namespace (and
        with it the bridges and taps). Safe to call twice."""
        while self._processes:
            _, process = self._processes.pop()
            self.stop(process)
        if self._created:
            subprocess.run(["ip", "netns", "del", self.namespace], check=False,
                           capture_output=True, timeout=COMMAND_TIMEOUT)
            self._created = False


def _run(argv: Sequence[str]) -> str:
    done = subprocess.run(list(argv), check=False, capture_output=True, text=True,
                          timeout=COMMAND_TIMEOUT)
    if done.returncode != 0:
        raise LabError(f"{' '.join(argv)}: {done.stderr.strip() or f'status {done.returncode}'}")
    return done.stdout


def _tail(path: Path, chars: int = 3000) -> str:
    try:
        return path.read_text(errors="replace")[-chars:]
    except OSError as error:
        return f"({error})"


def log_since(path: Path, offset: int) -> str:
    """What a daemon logged after `offset` bytes (take the size before an action)."""
    with open(path, "rb") as log:
        log.seek(offset)
        return log.read().decode(errors="replace")

