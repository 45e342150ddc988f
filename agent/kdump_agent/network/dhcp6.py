"""DHCPv6 (RFC 8415) for the capture kernel's link: one stateful lease (IA_NA), nothing more.

pyroute2 has a DHCPv4 client only, so this is a small one on the standard library. It does
the four-message exchange, SOLICIT -> ADVERTISE -> REQUEST -> REPLY, and returns what the
REPLY leased: its addresses as /128 (DHCPv6 says nothing of the on-link prefix, which comes
from router advertisements) and the servers of OPTION_DNS_SERVERS. It sends no Rapid
Commit, so a server always advertises first: one round trip more (milliseconds), one path
less.

Like the DHCPv4 client it keeps no lease file, never renews and sends no RELEASE: the
address has to outlast the dump, and the capture kernel ends in a reboot.

The messages are built and read by pure functions (`solicit`, `request`, `parse_answer`);
the exchange (`obtain`) takes its link, clock and randomness as parameters, so tests run
it against a fake server on a fake clock. A malformed message (an option running past
its end, an IAADDR too short, ...) raises `Malformed`, and the exchange ignores that
message with a log line: a stray or broken server never crashes the bring-up.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import random
import select
import socket
import struct
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

from ..errors import KdumpError
from .dhcp import Addressing, Budget

log = logging.getLogger("kdump-agent")

# Message types and options (RFC 8415 sections 7.3 and 21, RFC 3646, RFC 4704).
SOLICIT, ADVERTISE, REQUEST, REPLY = 1, 2, 3, 7
OPTION_CLIENTID = 1
OPTION_SERVERID = 2
OPTION_IA_NA = 3
OPTION_IAADDR = 5
OPTION_ORO = 6
OPTION_PREFERENCE = 7
OPTION_ELAPSED_TIME = 8
OPTION_STATUS_CODE = 13
OPTION_DNS_SERVERS = 23
OPTION_CLIENT_FQDN = 39
STATUS_NAMES = {0: "Success", 1: "UnspecFail", 2: "NoAddrsAvail", 3: "NoBinding", 4: "NotOnLink",
                5: "UseMulticast", 6: "NoPrefixAvail"}
SUCCESS = 0

# Transmission parameters (RFC 8415 section 7.6). There is no initial random delay
# (SOL_MAX_DELAY): the capture kernel is one host starting alone, on a short budget.
SOL_TIMEOUT, SOL_MAX_RT = 1.0, 3600.0
REQ_TIMEOUT, REQ_MAX_RT, REQ_MAX_RC = 1.0, 30.0, 10

ALL_DHCP_RELAY_AGENTS_AND_SERVERS = "ff02::1:2"
CLIENT_PORT, SERVER_PORT = 546, 547
# While the link-local address is tentative (DAD), sending fails with EADDRNOTAVAIL: retried this often.
SEND_RETRY_SECONDS = 0.1

Clock = Callable[[], float]
Uniform = Callable[[float, float], float]  # random.uniform's shape


class Malformed(ValueError):
    """A server's message that does not decode: the exchange ignores it."""


@dataclass(frozen=True)
class Message:
    """One DHCPv6 client/server message: its type, transaction id and options, in order."""

    kind: int
    xid: int
    options: tuple[tuple[int, bytes], ...]

    def encode(self) -> bytes:
        return struct.pack("!I", self.kind << 24 | self.xid) + encode_options(self.options)

    @classmethod
    def decode(cls, data: bytes) -> Message:
        if len(data) < 4:
            raise Malformed(f"{len(data)} bytes, shorter than a DHCPv6 header")
        (header,) = struct.unpack_from("!I", data)
        return cls(kind=header >> 24, xid=header & 0xFFFFFF, options=decode_options(data[4:]))

    def first(self, code: int) -> bytes | None:
        """The data of the first option with this code; None when there is none."""
        return next((data for number, data in self.options if number == code), None)


def encode_options(options: tuple[tuple[int, bytes], ...]) -> bytes:
    return b"".join(struct.pack("!HH", code, len(data)) + data for code, data in options)


def decode_options(data: bytes) -> tuple[tuple[int, bytes], ...]:
    """The options in data, in order; Malformed when one runs past the end."""
    options = []
    offset = 0
    while offset < len(data):
        if len(data) - offset < 4:
            raise Malformed(f"{len(data) - offset} stray bytes after the last option")
        code, length = struct.unpack_from("!HH", data, offset)
        offset += 4
        if offset + length > len(data):
            raise Malformed(f"option {code} claims {length} bytes, {len(data) - offset} are left")
        options.append((code, data[offset:offset + length]))
        offset += length
    return tuple(options)


def duid_ll(mac: str) -> bytes:
    """DUID-LL (type 3) of an Ethernet MAC: stable for the NIC, and needs no clock or storage."""
    return struct.pack("!HH", 3, 1) + _mac_bytes(mac)


def iaid_of(mac: str) -> int:
    """The IA_NA's IAID: the MAC's last four bytes, the same for the NIC on every boot."""
    (iaid,) = struct.unpack("!I", _mac_bytes(mac)[2:])
    return int(iaid)


def _mac_bytes(mac: str) -> bytes:
    raw = bytes.fromhex(mac.replace(":", "").replace("-", ""))
    if len(raw) != 6:
        raise KdumpError(f"DHCPv6: {mac!r} is not an Ethernet MAC address")
    return raw


def fqdn(hostname: str) -> bytes | None:
    """OPTION_CLIENT_FQDN's data (RFC 4704): flags S (the server may update DNS, as dnsmasq
    does for a DHCPv4 host name), then the name in DNS wire format; a name without a dot is a
    partial name (no terminating root label), one with dots is fully qualified. None for a
    name DNS cannot carry (not ASCII, an empty or overlong label): the lease does not need
    it. (No IDNA: the codec needs unicodedata, which the frozen binary leaves out.)"""
    try:
        labels = [label.encode("ascii") for label in hostname.rstrip(".").split(".")]
    except UnicodeError:
        return None
    if not all(0 < len(label) < 64 for label in labels):
        return None
    wire = b"".join(bytes([len(label)]) + label for label in labels)
    return b"\x01" + wire + (b"\x00" if len(labels) > 1 else b"")


def _ia_na(iaid: int, addresses: tuple[str, ...] = ()) -> bytes:
    # T1 and T2 0: the client has no preference (we never renew anyway).
    iaaddrs = tuple((OPTION_IAADDR, ipaddress.IPv6Address(address).packed + struct.pack("!II", 0, 0))
                    for address in addresses)
    return struct.pack("!III", iaid, 0, 0) + encode_options(iaaddrs)


def _common(duid: bytes, iaid: int, elapsed: float, hostname: str | None,
            addresses: tuple[str, ...] = ()) -> list[tuple[int, bytes]]:
    centiseconds = min(0xFFFF, max(0, round(elapsed * 100)))
    options = [
        (OPTION_CLIENTID, duid),
        (OPTION_ELAPSED_TIME, struct.pack("!H", centiseconds)),
        # Only the name servers: the bring-up writes no search list (neither does DHCPv4's).
        (OPTION_ORO, struct.pack("!H", OPTION_DNS_SERVERS)),
        (OPTION_IA_NA, _ia_na(iaid, addresses)),
    ]
    name = fqdn(hostname) if hostname else None
    if name is not None:
        options.append((OPTION_CLIENT_FQDN, name))
    return options


def solicit(xid: int, duid: bytes, iaid: int, elapsed: float, hostname: str | None) -> Message:
    """A SOLICIT for one IA_NA; elapsed: seconds since the exchange's first SOLICIT."""
    return Message(SOLICIT, xid, tuple(_common(duid, iaid, elapsed, hostname)))


def request(xid: int, duid: bytes, iaid: int, elapsed: float, hostname: str | None,
            advertise: Answer) -> Message:
    """A REQUEST to the server of an ADVERTISE, for the addresses it offered."""
    options = _common(duid, iaid, elapsed, hostname, tuple(a for a, _ in advertise.addresses))
    options.insert(1, (OPTION_SERVERID, advertise.server_duid))
    return Message(REQUEST, xid, tuple(options))


@dataclass(frozen=True)
class Status:
    code: int
    message: str

    def __str__(self) -> str:
        name = STATUS_NAMES.get(self.code, f"status {self.code}")
        return f"{name}: {self.message!r}" if self.message else name


@dataclass(frozen=True)
class Answer:
    """An ADVERTISE or a REPLY, as the client reads it.

    `addresses`: (address, valid lifetime) of our IA_NA's IAADDRs with a non-zero lifetime.
    `status`: the first non-success status, the message's own or our IA_NA's; None for
    success.
    """

    kind: int
    xid: int
    client_duid: bytes | None
    server_duid: bytes
    preference: int
    status: Status | None
    addresses: tuple[tuple[str, int], ...]
    dns: tuple[str, ...]


def parse_answer(data: bytes, iaid: int) -> Answer:
    """Read a server's message for what the client uses; Malformed when it does not decode
    or has no SERVERID."""
    message = Message.decode(data)
    server_duid = message.first(OPTION_SERVERID)
    if not server_duid:
        raise Malformed("no SERVERID")
    preference = message.first(OPTION_PREFERENCE)
    if preference is not None and len(preference) != 1:
        raise Malformed(f"a PREFERENCE of {len(preference)} bytes")
    statuses = [_status(data) for code, data in message.options if code == OPTION_STATUS_CODE]
    addresses: list[tuple[str, int]] = []
    for code, ia in message.options:
        if code != OPTION_IA_NA:
            continue
        if len(ia) < 12:
            raise Malformed(f"an IA_NA of {len(ia)} bytes")
        if struct.unpack_from("!I", ia)[0] != iaid:
            continue
        for inner, value in decode_options(ia[12:]):
            if inner == OPTION_STATUS_CODE:
                statuses.append(_status(value))
            elif inner == OPTION_IAADDR:
                if len(value) < 24:
                    raise Malformed(f"an IAADDR of {len(value)} bytes")
                _preferred, valid = struct.unpack_from("!II", value, 16)
                if valid:
                    addresses.append((str(ipaddress.IPv6Address(value[:16])), valid))
    dns = message.first(OPTION_DNS_SERVERS) or b""
    if len(dns) % 16:
        raise Malformed(f"a DNS_SERVERS option of {len(dns)} bytes")
    return Answer(kind=message.kind, xid=message.xid, client_duid=message.first(OPTION_CLIENTID),
                  server_duid=server_duid, preference=preference[0] if preference else 0,
                  status=next((status for status in statuses if status.code != SUCCESS), None),
                  addresses=tuple(addresses),
                  dns=tuple(str(ipaddress.IPv6Address(dns[i:i + 16])) for i in range(0, len(dns), 16)))


def _status(data: bytes) -> Status:
    if len(data) < 2:
        raise Malformed(f"a STATUS_CODE of {len(data)} bytes")
    return Status(struct.unpack_from("!H", data)[0], data[2:].decode("utf-8", errors="replace"))


def timeouts(irt: float, mrt: float, uniform: Uniform, *, first_above_irt: bool = False) -> Iterator[float]:
    """The retransmission timeouts RT of one exchange (RFC 8415 section 15): IRT with +-10 %
    jitter, then doubling with jitter, capped at MRT with jitter. A SOLICIT's first RT is
    not below IRT (RAND from [0, 0.1]), so the ADVERTISEs of a whole second are compared."""
    rt = irt + (uniform(0.0, 0.1) if first_above_irt else uniform(-0.1, 0.1)) * irt
    while True:
        yield rt
        rt = 2 * rt + uniform(-0.1, 0.1) * rt
        if rt > mrt:
            rt = mrt + uniform(-0.1, 0.1) * mrt


class Link(Protocol):
    """Where the messages go: multicast to the servers, and what comes back."""

    def send(self, data: bytes, until: float) -> bool:
        """Send to All_DHCP_Relay_Agents_and_Servers; False when the link could not send
        before until (the clock's time)."""

    def receive(self, until: float) -> tuple[bytes, str] | None:
        """One datagram and its sender's address; None once until has passed."""


@dataclass(frozen=True)
class Client:
    """Who we are to the servers, and what the exchange runs on (injected for tests)."""

    interface: str
    duid: bytes
    iaid: int
    hostname: str | None
    clock: Clock = time.monotonic
    uniform: Uniform = random.uniform
    new_xid: Callable[[], int] = lambda: random.getrandbits(24)


def obtain(link: Link, budget: Budget, client: Client) -> tuple[Answer, str]:
    """The REPLY that leases us an address, and its sender, within the budget.

    SOLICIT until an ADVERTISE with an address arrives: during the first RT the ADVERTISEs are
    collected and the one with the highest preference (the first among equals) is taken, one
    with preference 255 at once; after it, the first one. REQUEST it until the REPLY; after
    REQ_MAX_RC REQUESTs without one, solicit again. A server's refusal (NoAddrsAvail and the
    like, in an ADVERTISE when no other server offered within the RT, or in the REPLY) is a
    KdumpError with the server's own message; running out of budget is its overrun.
    """
    end = client.clock() + budget.left()
    while True:
        advertise, server = _solicit(link, budget, client, end)
        reply = _request(link, budget, client, end, advertise, server)
        if reply is not None:
            return reply
        log.info("network: DHCPv6 on %s: no REPLY from %s after %d REQUESTs, soliciting again",
                 client.interface, server, REQ_MAX_RC)


def _solicit(link: Link, budget: Budget, client: Client, end: float) -> tuple[Answer, str]:
    xid, start = client.new_xid(), client.clock()
    offers: list[tuple[Answer, str]] = []
    refusals: list[tuple[Answer, str]] = []
    for sent, rt in enumerate(timeouts(SOL_TIMEOUT, SOL_MAX_RT, client.uniform, first_above_irt=True), 1):
        _send(link, budget, client, end, solicit(xid, client.duid, client.iaid, client.clock() - start,
                                                 client.hostname))
        for answer, server in _answers(link, client, min(client.clock() + rt, end), ADVERTISE, xid):
            if answer.status is not None or not answer.addresses:
                refusals.append((answer, server))
            elif answer.preference == 255 or sent > 1:
                return answer, server
            else:
                offers.append((answer, server))
        if offers:
            return max(offers, key=lambda offer: offer[0].preference)
        if refusals:
            raise _refused(client, *refusals[0])
        if client.clock() >= end:
            raise budget.overrun(f"DHCPv6 on {client.interface}",
                                 f"no ADVERTISE after {_count(sent, 'SOLICIT')}")
    raise AssertionError("timeouts() is endless")


def _request(link: Link, budget: Budget, client: Client, end: float, advertise: Answer,
             server: str) -> tuple[Answer, str] | None:
    xid, start = client.new_xid(), client.clock()
    for sent, rt in enumerate(timeouts(REQ_TIMEOUT, REQ_MAX_RT, client.uniform), 1):
        if sent > REQ_MAX_RC:
            return None
        _send(link, budget, client, end, request(xid, client.duid, client.iaid, client.clock() - start,
                                                 client.hostname, advertise))
        for answer, source in _answers(link, client, min(client.clock() + rt, end), REPLY, xid):
            if answer.status is not None or not answer.addresses:
                raise _refused(client, answer, source)
            return answer, source
        if client.clock() >= end:
            raise budget.overrun(f"DHCPv6 on {client.interface}",
                                 f"no REPLY from {server} after {_count(sent, 'REQUEST')}")
    raise AssertionError("timeouts() is endless")


def _send(link: Link, budget: Budget, client: Client, end: float, message: Message) -> None:
    if not link.send(message.encode(), end):
        raise budget.overrun(f"DHCPv6 on {client.interface}",
                             "the link-local address is still tentative (DAD), nothing could be sent")


def _answers(link: Link, client: Client, until: float, kind: int, xid: int) -> Iterator[tuple[Answer, str]]:
    """The valid answers of this kind to this transaction until the given time: the others
    (another client's, a malformed one, one for another DUID) are skipped."""
    while (datagram := link.receive(until)) is not None:
        data, source = datagram
        try:
            answer = parse_answer(data, client.iaid)
        except Malformed as error:
            log.info("network: DHCPv6 on %s: ignored a malformed message from %s (%s)",
                     client.interface, source, error)
            continue
        if answer.kind == kind and answer.xid == xid and answer.client_duid == client.duid:
            yield answer, source


def _refused(client: Client, answer: Answer, server: str) -> KdumpError:
    said = answer.status or "no address for our IA_NA"
    kind = "ADVERTISE" if answer.kind == ADVERTISE else "REPLY"
    return KdumpError(f"DHCPv6 on {client.interface}: the server at {server} leases no address "
                      f"({kind}: {said})")


def _count(number: int, what: str) -> str:
    return f"{number} {what}{'s' if number != 1 else ''}"


class _Socket:
    """The client's UDP socket: port 546 on one interface, multicast out of it.

    While the interface's link-local address is still tentative the kernel refuses to send
    (EADDRNOTAVAIL: there is no source address yet); `send` retries until it can or the
    budget ends. It does not watch DAD itself: a send that works means a usable source.
    """

    def __init__(self, interface: str, clock: Clock) -> None:
        self.interface = interface
        self.clock = clock
        try:
            self.index = socket.if_nametoindex(interface)
        except OSError:
            raise KdumpError(f"DHCPv6 on {interface}: no such interface") from None
        self.sock = socket.socket(socket.AF_INET6, socket.SOCK_DGRAM)
        try:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_BINDTODEVICE, interface.encode())
            self.sock.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_MULTICAST_IF, self.index)
            self.sock.bind(("::", CLIENT_PORT))
        except OSError as error:
            self.sock.close()
            raise KdumpError(f"DHCPv6 on {interface}: cannot open the client's socket (UDP port "
                             f"{CLIENT_PORT}): {error.strerror}") from None

    def send(self, data: bytes, until: float) -> bool:
        while True:
            try:
                self.sock.sendto(data, (ALL_DHCP_RELAY_AGENTS_AND_SERVERS, SERVER_PORT, 0, self.index))
                return True
            except OSError as error:
                if error.errno != errno.EADDRNOTAVAIL:
                    raise KdumpError(f"DHCPv6 on {self.interface}: sending: {error.strerror}") from None
            if self.clock() + SEND_RETRY_SECONDS > until:
                return False
            time.sleep(SEND_RETRY_SECONDS)

    def receive(self, until: float) -> tuple[bytes, str] | None:
        while (left := until - self.clock()) > 0:
            if select.select([self.sock], [], [], left)[0]:
                data, source = self.sock.recvfrom(65535)
                return data, str(source[0]).split("%")[0]
        return None

    def close(self) -> None:
        self.sock.close()


def dhcp6_lease(interface: str, budget: Budget, mac: str, hostname: str | None) -> Addressing:
    """One DHCPv6 lease for interface (already up), within the budget: its addresses as /128,
    no gateway (routes come from router advertisements), and its name servers. The client is
    known by DUID-LL of mac and asks with hostname when given."""
    client = Client(interface=interface, duid=duid_ll(mac), iaid=iaid_of(mac), hostname=hostname)
    link = _Socket(interface, client.clock)
    try:
        reply, server = obtain(link, budget, client)
    finally:
        link.close()
    addresses = tuple(address for address, _valid in reply.addresses)
    log.info("network: DHCPv6 lease %s from %s (DUID %s)", ", ".join(addresses), server,
             reply.server_duid.hex(":"))
    return Addressing(addresses=tuple(f"{address}/128" for address in addresses), gateway=None,
                      dns=reply.dns)
