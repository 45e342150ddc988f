"""Dumps over the networks real servers have: bonds, VLANs, bridges and IPv6 (issue 14).

Each case builds its own network with harness.netlab: a namespace of the test's own with a
bridge, the servers' addresses (10.77.0.1/24, fd77::1/64), tap devices for the guest's NICs
(fixed MACs nic_mac(0), nic_mac(1)), dnsmasq for DHCPv4 / RA / DHCPv6 / DNS as the case
needs, and the real sshd or ganesha listening in there. QEMU runs inside the namespace too,
so the guest's traffic never leaves it. The capture kernel gets its plan from dracut's
command line (`bond=`, `vlan=`, `bridge=`, `ip=`, `ifname=`), and every dump is read back
and judged by harness.dumps.assert_good_dump, as the other network cases are.

One dracut image per target kind (SSH, NFS), built once (`extra_modules virtio_net bonding
8021q bridge`: the cases do not use a host record), each for the server at its IPv6 address
(`root@[fd77::1]`, `nfs4 [fd77::1]:/export`), so mkinitrd itself takes IPv6 servers; cases
that differ only in the server's spelling (the IPv4 address, a name) lay their kdump.conf
over it. Where one boot proves two
things it does: balance-xor + VLAN to NFS (cases 2 and 3), a bridge with static dual stack
and a name with A and AAAA (cases 4 and 7).
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from harness.crashtool import assert_crash_opens, fetch_vmlinux
from harness.dumps import assert_good_dump, dump_on_host
from harness.guest import BootResult
from harness.kernels import Kernel
from harness.netlab import DHCP6_RANGE, LAB_NAME, SERVER_V4, SERVER_V6, Dns, Lab, nic_mac
from harness.nfs_server import NfsServer
from harness.qmp import qmp_args, qmp_command
from harness.scenario import (
    CAPTURE_CMDLINE,
    LEAN_DRACUT_ARGS,
    build_capture_initrd,
    kill_when_partial_grows,
    panic_and_capture,
    with_config_overlay,
)
from harness.sshd import ClientKey, Sshd, keygen
from kdump_agent.layout import parse_dump_dir_name

pytestmark = pytest.mark.qemu

SSH_PORT = 22  # the namespace is the test's own: the standard port, so `root@[fd77::1]` works
MODULES = "extra_modules virtio_net bonding 8021q bridge"
BOND_ADDRESS = "10.77.0.10"  # dnsmasq's fixed lease for the bond's MAC (its first slave's)
STATIC_V4 = "10.77.0.5"
STATIC_V6 = "fd77::5"
# SLAAC's EUI-64 address for nic_mac(0) = 52:54:00:77:00:01 (the kernel's default addr_gen_mode).
SLAAC_ADDRESS = "fd77::5054:ff:fe77:1"
BOOT_TIMEOUT = 420
IFNAMES = f"ifname=eth0:{nic_mac(0)} ifname=eth1:{nic_mac(1)}"


def panic_on(lab: Lab, kernel: Kernel, initrd: Path, tmp_path: Path, console_logs: list[Path],
             *network: str, qemu_args: tuple[str, ...] = ()) -> BootResult:
    """Panic a guest on the lab's NICs (QEMU inside the namespace) with these network
    parameters on the capture kernel's command line; its console is kept with the test's."""
    console_logs.append(tmp_path / "console.log")
    return panic_and_capture(kernel, initrd, [], tmp_path,
                             capture_cmdline=" ".join([CAPTURE_CMDLINE, *network]),
                             extra_args=[*lab.qemu_nic_args(), *qemu_args], prefix=lab.prefix,
                             timeout_s=BOOT_TIMEOUT)


@pytest.fixture(scope="module")
def client_key(tmp_path_factory: pytest.TempPathFactory) -> ClientKey:
    return keygen(tmp_path_factory.mktemp("client") / "kdump_id_rsa", "rsa")


@pytest.fixture(scope="module")
def ssh_home(tmp_path_factory: pytest.TempPathFactory, client_key: ClientKey) -> Sshd:
    """The server's directory and host keys, shared by every lab's sshd (not started here):
    one known_hosts pins it under all the names the cases use."""
    return Sshd(tmp_path_factory.mktemp("sshd"), authorized=(client_key,),
                listen=(SERVER_V4, SERVER_V6))


def known_hosts_text(server: Sshd) -> str:
    key = server.host_key_line("ed25519")
    return "".join(f"{name} {key}\n" for name in (SERVER_V4, SERVER_V6, LAB_NAME))


def ssh_config(host: str, key: ClientKey, dumps: Path) -> str:
    return "\n".join([f"ssh root@{host}", f"sshkey {key.path}", f"path {dumps}", MODULES,
                      LEAN_DRACUT_ARGS, "failure_action poweroff", ""])


def nfs_config(server: str) -> str:
    return "\n".join([f"nfs4 {server}:/export", "path /var/crash", MODULES, LEAN_DRACUT_ARGS,
                      "failure_action poweroff", ""])


@pytest.fixture(scope="module")
def ssh_v6_initrd(kernel: Kernel, ssh_home: Sshd, client_key: ClientKey,
                  tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The SSH image mkinitrd builds for root@[fd77::1] (pinning the host key it has under
    that name), and the server's dump directory."""
    work = tmp_path_factory.mktemp("ssh-initrd")
    dumps = work / "dumps"
    known_hosts = work / "known_hosts"
    known_hosts.write_text(known_hosts_text(ssh_home))
    initrd = build_capture_initrd(kernel, ssh_config(f"[{SERVER_V6}]", client_key, dumps), work,
                                  packed=[client_key.path, known_hosts],
                                  mkinitrd_args=["--known-hosts", str(known_hosts)])
    return initrd, dumps


@pytest.fixture(scope="module")
def ssh_initrd(ssh_v6_initrd: tuple[Path, Path], ssh_home: Sshd, client_key: ClientKey,
               tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """The same image laid over with the config for root@10.77.0.1 and its pinned key."""
    initrd, dumps = ssh_v6_initrd
    by_v4 = with_config_overlay(initrd, ssh_config(SERVER_V4, client_key, dumps),
                                tmp_path_factory.mktemp("ssh-v4") / "by-v4.img",
                                records={"known_hosts": known_hosts_text(ssh_home)})
    return by_v4, dumps


@pytest.fixture(scope="module")
def nfs_v6_initrd(kernel: Kernel, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The NFS image mkinitrd builds for nfs4 [fd77::1]:/export."""
    return build_capture_initrd(kernel, nfs_config(f"[{SERVER_V6}]"), tmp_path_factory.mktemp("nfs-initrd"))


@pytest.fixture(scope="module")
def nfs_initrd(nfs_v6_initrd: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same image for nfs4 10.77.0.1:/export."""
    return with_config_overlay(nfs_v6_initrd, nfs_config(SERVER_V4),
                               tmp_path_factory.mktemp("nfs-v4") / "by-v4.img")


@pytest.fixture
def sshd_in(ssh_home: Sshd, client_key: ClientKey) -> Iterator[Any]:
    """Start the shared server (its keys, its directory) inside a lab: `sshd_in(lab)`;
    stopped after the test at the latest."""
    started: list[Sshd] = []

    def start(lab: Lab) -> Sshd:
        server = Sshd(ssh_home.directory, authorized=(client_key,), listen=(SERVER_V4, SERVER_V6),
                      prefix=tuple(lab.prefix))
        started.append(server.start(port=SSH_PORT))
        return server

    try:
        yield start
    finally:
        for server in started:
            server.stop()


def new_dump_dirs(parent: Path, before: set[Path]) -> list[Path]:
    """Dump directories (`<address>-<date>`) under parent that were not in `before`."""
    if not parent.is_dir():
        return []
    return sorted(p for p in parent.iterdir()
                  if p not in before and parse_dump_dir_name(p.name) is not None)


def the_new_dump(parent: Path, before: set[Path], result: BootResult) -> Path:
    """The one dump directory the boot made under parent."""
    made = new_dump_dirs(parent, before)
    assert len(made) == 1, f"dump directories made under {parent}: {made}\n{result.tail()}"
    return made[0]


def existing(parent: Path) -> set[Path]:
    return set(parent.iterdir()) if parent.is_dir() else set()


def network_detail(manifest: dict[str, Any]) -> str:
    return str(next(s for s in manifest["states"] if s["state"] == "NETWORK_UP")["detail"])


def check_dump(dump: Path, tmp_path: Path, local_address: str) -> dict[str, Any]:
    """A good dump (harness.dumps) in a directory named after our address toward the server,
    which the manifest records too."""
    manifest = assert_good_dump(dump_on_host(dump), tmp_path)
    assert dump.name.startswith(f"{local_address}-"), dump.name
    assert manifest["target"]["local_address"] == local_address, manifest["target"]
    assert manifest["action"] == "final_action reboot"
    return manifest


def accepted_from(server: Sshd, log_start: int) -> str:
    """The address sshd logged the agent's login from."""
    with open(server.log, "rb") as log:
        log.seek(log_start)
        text = log.read().decode(errors="replace")
    lines = [line for line in text.splitlines() if "Accepted publickey for root from " in line]
    assert lines, text[-2000:]
    return lines[-1].split("Accepted publickey for root from ")[1].split()[0]


def test_smoke_dhcp_on_one_lab_nic_to_ssh(
        kernel: Kernel, ssh_initrd: tuple[Path, Path], sshd_in: Any, tmp_path: Path,
        console_logs: list[Path]) -> None:
    """The plain plan on the lab: one NIC, a bare `ip=dhcp`, SSH to the lab's sshd at
    10.77.0.1. The image packs bonding (for the other cases), and loading it makes a bond0
    of its own (max_bonds defaults to 1): that is no NIC, and DHCP must still run on eth0."""
    initrd, dumps = ssh_initrd
    with Lab(tmp_path / "lab") as lab:
        lab.dnsmasq(Dns(leases=((nic_mac(0), BOND_ADDRESS),)))
        server = sshd_in(lab)
        before = existing(dumps)
        result = panic_on(lab, kernel, initrd, tmp_path, console_logs, "ip=dhcp")
        server.stop()
    assert not result.timed_out, result.tail()
    dump = the_new_dump(dumps, before, result)
    manifest = check_dump(dump, tmp_path, BOND_ADDRESS)
    assert "via DHCP" in network_detail(manifest)


def test_bond_active_backup_survives_losing_the_active_leg_mid_dump(
        kernel: Kernel, ssh_initrd: tuple[Path, Path], sshd_in: Any, tmp_path: Path,
        cache_dir: Path, console_logs: list[Path]) -> None:
    """Case 1: active-backup over two taps. Once the dump's partial file on the server holds
    a few MiB, QMP's set_link takes the active leg (eth0: the first slave, no `primary`)
    down; miimon notices, eth1 takes over, the SSH stream goes on, the dump completes and
    crash opens it."""
    initrd, dumps = ssh_initrd
    qmp = tmp_path / "qmp.sock"
    with Lab(tmp_path / "lab", nics=2) as lab:
        lab.dnsmasq(Dns(leases=((nic_mac(0), BOND_ADDRESS),)))
        server = sshd_in(lab)
        before = existing(dumps)

        def pull_the_active_leg() -> None:
            qmp_command(qmp, "set_link", {"name": "nic0", "up": False})

        with kill_when_partial_grows(dumps, pull_the_active_leg, 4 << 20, address=BOND_ADDRESS):
            result = panic_on(lab, kernel, initrd, tmp_path, console_logs, IFNAMES,
                              "bond=bond0:eth0,eth1:mode=active-backup,miimon=100", "ip=bond0:dhcp",
                              qemu_args=tuple(qmp_args(qmp)))
        server.stop()
    assert not result.timed_out, result.tail()
    dump = the_new_dump(dumps, before, result)
    manifest = check_dump(dump, tmp_path, BOND_ADDRESS)
    assert "bond0" in network_detail(manifest)
    # The kernel's bonding driver on the capture console: the leg went, the other took over.
    assert "(slave eth0): link status definitely down" in result.console, result.tail()
    assert "(slave eth1): making interface the new active one" in result.console, result.tail()
    down = result.console.index("link status definitely down")
    assert result.console.index("state SAVE_DMESG: done") < down < result.console.index(
        "state COLLECT: done"), "the leg went down outside COLLECT"
    assert_crash_opens(fetch_vmlinux(kernel, cache_dir), dump / "vmcore", kernel)


def test_vlan_on_a_balance_xor_bond_to_nfs(kernel: Kernel, nfs_initrd: Path, tmp_path: Path,
                                           console_logs: list[Path]) -> None:
    """Cases 2 and 3 in one boot. 802.3ad needs an LACP partner, and this host has neither
    the bonding nor the team module, so nothing in the namespace can speak LACP: the bond
    is balance-xor instead (a static aggregate, which a bridge carries as it is). On top of
    it VLAN 77, the only way to the server: the guest's taps and the relay's trunk tap
    share one bridge, the servers sit on another behind harness.vlan_relay, which passes
    frames tagged 77 and nothing else. DHCP over the VLAN, then NFSv4."""
    with Lab(tmp_path / "lab", nics=2, vlan=77) as lab:
        lab.dnsmasq(Dns(leases=((nic_mac(0), BOND_ADDRESS),)))
        server = NfsServer(tmp_path / "nfs", protocols=(4,), prefix=tuple(lab.prefix)).start()
        try:
            result = panic_on(lab, kernel, nfs_initrd, tmp_path, console_logs, IFNAMES,
                              "bond=bond0:eth0,eth1:mode=balance-xor,xmit_hash_policy=layer2+3",
                              "vlan=bond0.77:bond0", "ip=bond0.77:dhcp")
        finally:
            server.stop()
    assert not result.timed_out, result.tail()
    dump = the_new_dump(server.export_path / "var" / "crash", set(), result)
    manifest = check_dump(dump, tmp_path, BOND_ADDRESS)
    assert "bond0.77" in network_detail(manifest)
    assert manifest["target"]["fstype"] == "nfs4"
    assert "(NFSv4) on /kdumproot" in result.console


def test_bridge_with_static_dual_stack_to_a_name_with_a_and_aaaa(
        kernel: Kernel, ssh_initrd: tuple[Path, Path], ssh_home: Sshd, client_key: ClientKey,
        sshd_in: Any, tmp_path: Path, console_logs: list[Path]) -> None:
    """Cases 4 and 7 in one boot: a bridge over the NIC with static IPv4 and IPv6, and the
    server given by name (dumps.lab: A 10.77.0.1 and AAAA fd77::1 from the lab's dnsmasq).
    Whichever family the agent takes, the dump directory, the manifest and sshd's log must
    agree on it."""
    initrd, dumps = ssh_initrd
    overlaid = with_config_overlay(initrd, ssh_config(LAB_NAME, client_key, dumps),
                                   tmp_path / "by-name.img",
                                   records={"known_hosts": known_hosts_text(ssh_home)})
    with Lab(tmp_path / "lab") as lab:
        lab.dnsmasq(Dns(dhcp4=False, names=((LAB_NAME, (SERVER_V4, SERVER_V6)),)))
        server = sshd_in(lab)
        log_start = server.log.stat().st_size
        before = existing(dumps)
        result = panic_on(lab, kernel, overlaid, tmp_path, console_logs, "bridge=br0:eth0",
                          f"ip={STATIC_V4}::{SERVER_V4}:24::br0:none",
                          f"ip=[{STATIC_V6}]::[{SERVER_V6}]:64::br0:none", f"nameserver={SERVER_V4}")
        server.stop()
    assert not result.timed_out, result.tail()
    dump = the_new_dump(dumps, before, result)
    local = parse_dump_dir_name(dump.name)
    assert local is not None and local.host in (STATIC_V4, STATIC_V6), dump.name
    manifest = check_dump(dump, tmp_path, local.host)
    family = ipaddress.ip_address(local.host).version
    assert manifest["target"]["server_address"] == (SERVER_V4 if family == 4 else SERVER_V6)
    assert accepted_from(server, log_start) == local.host
    assert "br0" in network_detail(manifest)
    print(f"dual stack: the agent reached {LAB_NAME} over IPv{family}")


def test_ipv6_only_slaac_to_ssh(kernel: Kernel, ssh_v6_initrd: tuple[Path, Path], sshd_in: Any,
                                tmp_path: Path, console_logs: list[Path]) -> None:
    """Case 5: no IPv4 at all; the address comes from dnsmasq's router advertisement
    (SLAAC, EUI-64 from the NIC's MAC), SSH to root@[fd77::1] as mkinitrd built the image."""
    overlaid, dumps = ssh_v6_initrd
    with Lab(tmp_path / "lab") as lab:
        lab.dnsmasq(Dns(dhcp4=False, ra=True))
        server = sshd_in(lab)
        before = existing(dumps)
        result = panic_on(lab, kernel, overlaid, tmp_path, console_logs, "ip=eth0:auto6")
        server.stop()
    assert not result.timed_out, result.tail()
    dump = the_new_dump(dumps, before, result)
    manifest = check_dump(dump, tmp_path, SLAAC_ADDRESS)
    assert manifest["target"]["server_address"] == SERVER_V6


def test_ipv6_only_dhcp6_to_nfs(kernel: Kernel, nfs_v6_initrd: Path, tmp_path: Path,
                                console_logs: list[Path]) -> None:
    """Case 6: no IPv4; a stateful DHCPv6 lease (dnsmasq's RA carries the M flag), then
    NFSv4 to [fd77::1], as mkinitrd built the image."""
    overlaid = nfs_v6_initrd
    with Lab(tmp_path / "lab") as lab:
        dnsmasq_log = lab.dnsmasq(Dns(dhcp4=False, dhcp6=True))
        server = NfsServer(tmp_path / "nfs", protocols=(4,), prefix=tuple(lab.prefix)).start()
        try:
            result = panic_on(lab, kernel, overlaid, tmp_path, console_logs, "ip=eth0:dhcp6")
        finally:
            server.stop()
        leases = dnsmasq_log.read_text(errors="replace")
    assert not result.timed_out, result.tail()
    dump = the_new_dump(server.export_path / "var" / "crash", set(), result)
    local = parse_dump_dir_name(dump.name)
    assert local is not None
    low, high = (ipaddress.IPv6Address(a) for a in DHCP6_RANGE)
    assert low <= ipaddress.IPv6Address(local.host) <= high, dump.name
    manifest = check_dump(dump, tmp_path, local.host)
    assert manifest["target"]["server_address"] == SERVER_V6
    assert f"DHCPREPLY(labsrv0) {local.host}" in leases  # the lease came from the lab's server
    assert "(NFSv4) on /kdumproot" in result.console
