"""A bond's options as the kernel reports them over netlink, in the words of its sysfs files.

The record keeps a bond's options as the capture kernel writes them: the names of
/sys/class/net/<bond>/bonding/* and their text values ("active-backup", "layer3+4",
"fast"), "mode" first, since which others are accepted depends on it. Recorded are only
the options that apply to the bond's mode and differ from what the kernel gives a new
bond anyway (drivers/net/bonding/bond_options.c, bond_main.c's defaults): a record names
what the admin chose, and the capture kernel writes nothing it would not need. One value
the kernel picks itself: a bond created with neither miimon nor arp_interval gets miimon
100, so 100 counts as the default.

Not recorded: the 802.3ad actor system MAC (IFLA_BOND_AD_ACTOR_SYSTEM, a switch-side
setting almost nobody changes) and the read-only state (active slave, AD info).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..errors import KdumpError

MODES = {0: "balance-rr", 1: "active-backup", 2: "balance-xor", 3: "broadcast", 4: "802.3ad",
         5: "balance-tlb", 6: "balance-alb"}
_ALL = frozenset(MODES.values())
_PRIMARY_MODES = frozenset({"active-backup", "balance-tlb", "balance-alb"})
_HASH_MODES = frozenset({"balance-xor", "802.3ad", "balance-tlb"})
_ARP_MODES = frozenset({"balance-rr", "active-backup", "balance-xor", "broadcast"})


@dataclass(frozen=True)
class _Option:
    attribute: str  # IFLA_BOND_*
    name: str  # the sysfs file
    default: str
    modes: frozenset[str] = _ALL
    words: Mapping[int, str] | None = None  # the kernel's numbers as sysfs's words


_OPTIONS = (
    _Option("IFLA_BOND_MIIMON", "miimon", "100"),
    _Option("IFLA_BOND_UPDELAY", "updelay", "0"),
    _Option("IFLA_BOND_DOWNDELAY", "downdelay", "0"),
    _Option("IFLA_BOND_USE_CARRIER", "use_carrier", "1"),
    _Option("IFLA_BOND_ARP_INTERVAL", "arp_interval", "0", _ARP_MODES),
    _Option("IFLA_BOND_ARP_IP_TARGET", "arp_ip_target", "", _ARP_MODES),
    _Option("IFLA_BOND_ARP_VALIDATE", "arp_validate", "none", _ARP_MODES,
            {0: "none", 1: "active", 2: "backup", 3: "all", 4: "filter", 5: "filter_active",
             6: "filter_backup"}),
    _Option("IFLA_BOND_ARP_ALL_TARGETS", "arp_all_targets", "any", _ARP_MODES, {0: "any", 1: "all"}),
    _Option("IFLA_BOND_PRIMARY", "primary", "", _PRIMARY_MODES),
    _Option("IFLA_BOND_PRIMARY_RESELECT", "primary_reselect", "always", _PRIMARY_MODES,
            {0: "always", 1: "better", 2: "failure"}),
    _Option("IFLA_BOND_FAIL_OVER_MAC", "fail_over_mac", "none", frozenset({"active-backup"}),
            {0: "none", 1: "active", 2: "follow"}),
    _Option("IFLA_BOND_XMIT_HASH_POLICY", "xmit_hash_policy", "layer2", _HASH_MODES,
            {0: "layer2", 1: "layer3+4", 2: "layer2+3", 3: "encap2+3", 4: "encap3+4", 5: "vlan+srcmac"}),
    _Option("IFLA_BOND_RESEND_IGMP", "resend_igmp", "1"),
    _Option("IFLA_BOND_NUM_PEER_NOTIF", "num_grat_arp", "1"),
    _Option("IFLA_BOND_ALL_SLAVES_ACTIVE", "all_slaves_active", "0"),
    _Option("IFLA_BOND_MIN_LINKS", "min_links", "0", frozenset({"802.3ad"})),
    _Option("IFLA_BOND_LP_INTERVAL", "lp_interval", "1", frozenset({"balance-tlb", "balance-alb"})),
    _Option("IFLA_BOND_PACKETS_PER_SLAVE", "packets_per_slave", "1", frozenset({"balance-rr"})),
    _Option("IFLA_BOND_AD_LACP_RATE", "lacp_rate", "slow", frozenset({"802.3ad"}), {0: "slow", 1: "fast"}),
    _Option("IFLA_BOND_AD_SELECT", "ad_select", "stable", frozenset({"802.3ad"}),
            {0: "stable", 1: "bandwidth", 2: "count"}),
    _Option("IFLA_BOND_AD_ACTOR_SYS_PRIO", "ad_actor_sys_prio", "65535", frozenset({"802.3ad"})),
    _Option("IFLA_BOND_AD_USER_PORT_KEY", "ad_user_port_key", "0", frozenset({"802.3ad"})),
    _Option("IFLA_BOND_TLB_DYNAMIC_LB", "tlb_dynamic_lb", "1", frozenset({"balance-tlb", "balance-alb"})),
)


def bond_options(name: str, data: Any, name_of: Callable[[int], str]) -> tuple[tuple[str, str], ...]:
    """The options of bond `name` from its IFLA_INFO_DATA, as (sysfs name, value) pairs,
    "mode" first. `name_of` turns the primary slave's ifindex into its name.

    arp_ip_target, a list, is written comma-separated, as dracut's bond= option gives it.
    """
    mode_number = data.get("IFLA_BOND_MODE") if data is not None else None
    mode = MODES.get(int(mode_number or 0))
    if mode is None:
        raise KdumpError(f"bond {name} is in mode {mode_number}, which this kdump-agent does not know")
    options = [("mode", mode)]
    for option in _OPTIONS:
        raw = data.get(option.attribute) if data is not None else None
        if raw is None or mode not in option.modes:
            continue
        value = _text(option, raw, name, name_of)
        if value != option.default:
            options.append((option.name, value))
    return tuple(options)


def _text(option: _Option, raw: Any, bond: str, name_of: Callable[[int], str]) -> str:
    if option.name == "primary":
        return name_of(int(raw)) if int(raw) else ""
    if option.name == "arp_ip_target":
        return ",".join(str(target) for target in (raw if isinstance(raw, (list, tuple)) else [raw]))
    if option.words is not None:
        if int(raw) not in option.words:
            raise KdumpError(f"bond {bond}: {option.name} {raw} is a value this kdump-agent does not know")
        return option.words[int(raw)]
    return str(int(raw))
