"""network/dhcp6.py: the messages byte by byte, what a server's answer yields, and the exchange
against a fake server on a fake clock (both handed to `obtain`, as its parameters)."""

from __future__ import annotations

import ipaddress
import itertools
import logging
import struct
from collections.abc import Callable
from typing import Any

import pytest

from kdump_agent.errors import KdumpError
from kdump_agent.network import dhcp6
from kdump_agent.network.dhcp import Budget
from kdump_agent.network.dhcp6 import (
    ADVERTISE,
    REPLY,
    REQUEST,
    SOLICIT,
    Answer,
    Client,
    Malformed,
    Message,
    Status,
)

MAC = "52:54:00:12:34:56"
DUID = bytes.fromhex("00030001525400123456")
IAID = 0x00123456
SERVER_DUID = bytes.fromhex("000100012f3a4b5c0a0b0c0d0e0f")
SERVER = "fe80::1"


def option(code: int, data: bytes) -> bytes:
    return struct.pack("!HH", code, len(data)) + data


def iaaddr(address: str, valid: int = 3600, *inner: bytes) -> bytes:
    packed = ipaddress.IPv6Address(address).packed
    return option(5, packed + struct.pack("!II", valid, valid) + b"".join(inner))


def ia_na(*inner: bytes, iaid: int = IAID) -> bytes:
    return option(3, struct.pack("!III", iaid, 1800, 2880) + b"".join(inner))


def status(code: int, text: str) -> bytes:
    return option(13, struct.pack("!H", code) + text.encode())


def answer(kind: int, xid: int, *options: bytes, client: bytes = DUID,
           server: bytes | None = SERVER_DUID) -> bytes:
    ids = option(1, client) + (option(2, server) if server is not None else b"")
    return struct.pack("!I", kind << 24 | xid) + ids + b"".join(options)


DNS = option(23, bytes.fromhex("fd000177000000000000000000000053"))
OFFER = ia_na(iaaddr("fd00:177::157"))


# --- encoding ---------------------------------------------------------------------------

def test_solicit_is_byte_exact() -> None:
    expected = bytes.fromhex(
        "01123456"  # SOLICIT, transaction id
        "0001000a" "0003" "0001" "525400123456"  # CLIENTID: DUID-LL, Ethernet, the MAC
        "00080002" "0000"  # ELAPSED_TIME 0
        "00060002" "0017"  # ORO: DNS_SERVERS
        "0003000c" "00123456" "00000000" "00000000"  # IA_NA: IAID from the MAC, T1 T2 0
        "00270009" "01" "07") + b"crashed"  # CLIENT_FQDN: flag S, a partial name
    message = dhcp6.solicit(0x123456, dhcp6.duid_ll(MAC), dhcp6.iaid_of(MAC), 0.0, "crashed")
    assert message.encode() == expected


def test_solicit_without_a_hostname_sends_no_fqdn_and_counts_elapsed_centiseconds() -> None:
    message = dhcp6.solicit(1, DUID, IAID, 1.234, None)
    assert [code for code, _ in message.options] == [1, 8, 6, 3]
    assert message.first(8) == b"\x00\x7b"
    assert dhcp6.solicit(1, DUID, IAID, 5000.0, None).first(8) == b"\xff\xff"  # capped


def test_a_dotted_hostname_is_sent_fully_qualified() -> None:
    assert dhcp6.fqdn("crashed.example.com") == b"\x01\x07crashed\x07example\x03com\x00"


@pytest.mark.parametrize("hostname", ["crashed..example", "x" * 64, "abstürzt"])
def test_a_hostname_dns_cannot_carry_is_not_sent(hostname: str) -> None:
    assert dhcp6.fqdn(hostname) is None
    assert dhcp6.solicit(1, DUID, IAID, 0.0, hostname).first(dhcp6.OPTION_CLIENT_FQDN) is None


def test_duid_and_iaid_come_from_the_mac_in_any_spelling() -> None:
    assert dhcp6.duid_ll(MAC.upper()) == dhcp6.duid_ll(MAC.replace(":", "-")) == DUID
    assert dhcp6.iaid_of(MAC) == IAID
    with pytest.raises(KdumpError, match="not an Ethernet MAC"):
        dhcp6.duid_ll("52:54:00:12:34")


def test_request_names_the_server_and_asks_for_the_offered_address() -> None:
    advertise = dhcp6.parse_answer(answer(ADVERTISE, 7, OFFER), IAID)
    message = dhcp6.request(9, DUID, IAID, 0.0, None, advertise)
    assert (message.kind, message.xid) == (REQUEST, 9)
    assert [code for code, _ in message.options] == [1, 2, 8, 6, 3]
    assert message.first(2) == SERVER_DUID
    ia = message.first(3)
    assert ia is not None and ia[12:] == iaaddr("fd00:177::157", 0)


# --- parsing ----------------------------------------------------------------------------

def test_advertise_yields_its_address_preference_and_dns() -> None:
    data = answer(ADVERTISE, 0xABCDEF, ia_na(iaaddr("fd00:177::157"), status(0, "ok")),
                  option(7, b"\x0a"), DNS)
    assert dhcp6.parse_answer(data, IAID) == Answer(
        kind=ADVERTISE, xid=0xABCDEF, client_duid=DUID, server_duid=SERVER_DUID, preference=10,
        status=None, addresses=(("fd00:177::157", 3600),), dns=("fd00:177::53",))


def test_addresses_of_another_ia_or_with_no_lifetime_are_not_ours() -> None:
    data = answer(REPLY, 1, ia_na(iaaddr("fd00:177::1"), iaid=IAID + 1),
                  ia_na(iaaddr("fd00:177::2", 0), iaaddr("fd00:177::3")))
    assert dhcp6.parse_answer(data, IAID).addresses == (("fd00:177::3", 3600),)


@pytest.mark.parametrize("where", ["message", "ia_na"])
def test_no_addresses_available_is_read_with_the_servers_text(where: str) -> None:
    refusal = status(2, "no addresses available")
    data = answer(ADVERTISE, 1, refusal if where == "message" else ia_na(refusal))
    parsed = dhcp6.parse_answer(data, IAID)
    assert parsed.status == Status(2, "no addresses available") and parsed.addresses == ()
    assert str(parsed.status) == "NoAddrsAvail: 'no addresses available'"


GOOD = answer(ADVERTISE, 1, ia_na(iaaddr("fd00:177::157"), status(0, "")), option(7, b"\x00"), DNS)


@pytest.mark.parametrize("data, reason", [
    (b"\x02\x00", "shorter than a DHCPv6 header"),
    (GOOD + b"\x00\x17", "stray bytes"),
    (GOOD + b"\x00\x17\x00\x20" + bytes(8), "option 23 claims 32 bytes, 8 are left"),
    (answer(ADVERTISE, 1, server=None), "no SERVERID"),
    (answer(ADVERTISE, 1, option(3, bytes(11))), "an IA_NA of 11 bytes"),
    (answer(ADVERTISE, 1, ia_na(option(5, bytes(23)))), "an IAADDR of 23 bytes"),
    (answer(ADVERTISE, 1, ia_na(b"\x00\x05\x00\x18")), "option 5 claims 24 bytes, 0 are left"),
    (answer(ADVERTISE, 1, option(13, b"\x00")), "a STATUS_CODE of 1 bytes"),
    (answer(ADVERTISE, 1, option(23, bytes(15))), "a DNS_SERVERS option of 15 bytes"),
    (answer(ADVERTISE, 1, option(7, b"\x00\x01")), "a PREFERENCE of 2 bytes"),
])
def test_a_malformed_answer_raises_malformed_saying_what(data: bytes, reason: str) -> None:
    with pytest.raises(Malformed, match=reason):
        dhcp6.parse_answer(data, IAID)


def test_every_truncation_of_an_answer_parses_or_is_malformed() -> None:
    for end in range(len(GOOD)):
        try:
            dhcp6.parse_answer(GOOD[:end], IAID)
        except Malformed:
            pass


def test_a_status_text_that_is_not_utf8_is_kept_readable() -> None:
    data = answer(ADVERTISE, 1, option(13, b"\x00\x02bad \xff"))
    assert dhcp6.parse_answer(data, IAID).status == Status(2, "bad \ufffd")


# --- the retransmission schedule -----------------------------------------------------------

def highest(low: float, high: float) -> float:
    return high


def lowest(low: float, high: float) -> float:
    return low


def test_timeouts_double_with_jitter_up_to_the_cap() -> None:
    first = list(itertools.islice(dhcp6.timeouts(1.0, 30.0, highest), 7))
    assert first == pytest.approx([1.1, 2.31, 4.851, 10.1871, 21.39291, 33.0, 33.0])
    assert list(itertools.islice(dhcp6.timeouts(1.0, 30.0, lowest), 3)) == pytest.approx([0.9, 1.71, 3.249])


def test_a_solicits_first_timeout_is_never_below_irt() -> None:
    assert next(dhcp6.timeouts(1.0, 3600.0, lowest, first_above_irt=True)) == 1.0


# --- the exchange --------------------------------------------------------------------------

Server = Callable[[Message], list[tuple[float, bytes]]]  # a message's answers, each after a delay


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeLink:
    """The servers on the link, answering on the fake clock: receive() waits by advancing it."""

    def __init__(self, clock: FakeClock, server: Server, *, can_send: bool = True) -> None:
        self.clock = clock
        self.server = server
        self.can_send = can_send
        self.sent: list[tuple[float, Message]] = []
        self.pending: list[tuple[float, bytes]] = []

    def send(self, data: bytes, until: float) -> bool:
        if not self.can_send:
            self.clock.now = until
            return False
        message = Message.decode(data)
        self.sent.append((self.clock.now, message))
        self.pending += [(self.clock.now + delay, reply) for delay, reply in self.server(message)]
        self.pending.sort(key=lambda item: item[0])
        return True

    def receive(self, until: float) -> tuple[bytes, str] | None:
        if self.pending and self.pending[0][0] <= until:
            at, data = self.pending.pop(0)
            self.clock.now = max(self.clock.now, at)
            return data, SERVER
        self.clock.now = max(self.clock.now, until)
        return None

    def kinds(self) -> list[int]:
        return [message.kind for _, message in self.sent]


def dnsmasq_like(message: Message) -> list[tuple[float, bytes]]:
    """Advertises fd00:177::157 and leases it, with a DNS server."""
    if message.kind == SOLICIT:
        return [(0.01, answer(ADVERTISE, message.xid, OFFER, DNS))]
    return [(0.01, answer(REPLY, message.xid, OFFER, DNS))]


def silent(message: Message) -> list[tuple[float, bytes]]:
    return []


def run(server: Server, seconds: float, **link: Any) -> tuple[FakeLink, Answer | KdumpError]:
    clock = FakeClock()
    fake = FakeLink(clock, server, **link)
    client = Client(interface="eth0", duid=DUID, iaid=IAID, hostname="crashed", clock=clock, uniform=highest,
                    new_xid=itertools.count(0x100).__next__)
    try:
        reply, source = dhcp6.obtain(fake, Budget(seconds), client)
    except KdumpError as error:
        return fake, error
    assert source == SERVER
    return fake, reply


def test_a_lease_after_the_advertise_window() -> None:
    link, reply = run(dnsmasq_like, 10)
    assert isinstance(reply, Answer) and reply.addresses == (("fd00:177::157", 3600),)
    assert reply.dns == ("fd00:177::53",)
    (_, solicit), (requested_at, request) = link.sent
    assert requested_at == pytest.approx(1.1)  # other servers may advertise during the first RT
    assert (solicit.xid, request.xid) == (0x100, 0x101)  # each exchange its own transaction
    assert request.first(dhcp6.OPTION_SERVERID) == SERVER_DUID


def test_preference_255_is_requested_at_once() -> None:
    def eager(message: Message) -> list[tuple[float, bytes]]:
        if message.kind == SOLICIT:
            return [(0.01, answer(ADVERTISE, message.xid, OFFER, option(7, b"\xff")))]
        return dnsmasq_like(message)
    link, _ = run(eager, 10)
    assert link.sent[1][0] == pytest.approx(0.01)


def test_the_most_preferred_advertise_of_the_window_wins() -> None:
    other = bytes.fromhex("0003000102000000aaaa")

    def two_servers(message: Message) -> list[tuple[float, bytes]]:
        if message.kind == SOLICIT:
            return [(0.01, answer(ADVERTISE, message.xid, OFFER)),
                    (0.5, answer(ADVERTISE, message.xid, OFFER, option(7, b"\x05"), server=other))]
        return dnsmasq_like(message)
    link, _ = run(two_servers, 10)
    assert link.sent[1][1].first(dhcp6.OPTION_SERVERID) == other


def test_answers_to_others_and_malformed_ones_are_ignored(caplog: pytest.LogCaptureFixture) -> None:
    def noisy(message: Message) -> list[tuple[float, bytes]]:
        return [(0.01, answer(ADVERTISE, message.xid + 1, OFFER)),  # another transaction
                (0.02, answer(ADVERTISE, message.xid, OFFER, client=bytes(10))),  # another client
                (0.03, answer(ADVERTISE, message.xid, OFFER)[:-3]),  # truncated
                (0.04, answer(REPLY, message.xid, OFFER))]  # a REPLY to a SOLICIT (no Rapid Commit)
    caplog.set_level(logging.INFO, logger="kdump-agent")
    link, error = run(noisy, 3)
    assert str(error) == ("DHCPv6 on eth0: not done within the 3 s network deadline "
                          "(no ADVERTISE after 2 SOLICITs)")
    assert link.kinds() == [SOLICIT, SOLICIT]
    assert f"network: DHCPv6 on eth0: ignored a malformed message from {SERVER} (option 3" in caplog.text


def test_no_server_retransmits_on_the_rfc_schedule_until_the_budget_ends() -> None:
    link, error = run(silent, 10)
    assert [at for at, _ in link.sent] == pytest.approx([0, 1.1, 3.41, 8.261])
    assert [message.first(dhcp6.OPTION_ELAPSED_TIME) for _, message in link.sent] == [
        b"\x00\x00", struct.pack("!H", 110), struct.pack("!H", 341), struct.pack("!H", 826)]
    assert str(error) == ("DHCPv6 on eth0: not done within the 10 s network deadline "
                          "(no ADVERTISE after 4 SOLICITs)")
    assert link.clock.now == pytest.approx(10, abs=0.01)


def test_no_addresses_available_is_an_error_with_the_servers_message() -> None:
    def exhausted(message: Message) -> list[tuple[float, bytes]]:
        return [(0.01, answer(ADVERTISE, message.xid, status(2, "no addresses available")))]
    link, error = run(exhausted, 10)
    assert str(error) == (f"DHCPv6 on eth0: the server at {SERVER} leases no address "
                          "(ADVERTISE: NoAddrsAvail: 'no addresses available')")
    assert link.clock.now == pytest.approx(1.1)  # after the window another server could have used


def test_a_reply_refusing_the_address_is_an_error() -> None:
    def refusing(message: Message) -> list[tuple[float, bytes]]:
        if message.kind == SOLICIT:
            return dnsmasq_like(message)
        return [(0.01, answer(REPLY, message.xid, ia_na(status(2, "address taken"))))]
    _, error = run(refusing, 10)
    assert str(error) == (f"DHCPv6 on eth0: the server at {SERVER} leases no address "
                          "(REPLY: NoAddrsAvail: 'address taken')")


def test_no_reply_overruns_the_budget_naming_the_server() -> None:
    def advertise_only(message: Message) -> list[tuple[float, bytes]]:
        return dnsmasq_like(message) if message.kind == SOLICIT else []
    link, error = run(advertise_only, 5)
    assert [at for at, _ in link.sent] == pytest.approx([0, 1.1, 2.2, 4.51])
    assert str(error) == (f"DHCPv6 on eth0: not done within the 5 s network deadline "
                          f"(no REPLY from {SERVER} after 3 REQUESTs)")


def test_after_req_max_rc_requests_the_client_solicits_again() -> None:
    def advertise_only(message: Message) -> list[tuple[float, bytes]]:
        return dnsmasq_like(message) if message.kind == SOLICIT else []
    link, _ = run(advertise_only, 300)  # 10 REQUESTs take 206 s
    assert link.kinds()[:dhcp6.REQ_MAX_RC + 2] == [SOLICIT] + [REQUEST] * dhcp6.REQ_MAX_RC + [SOLICIT]


def test_a_link_that_cannot_send_before_the_budget_ends_says_dad() -> None:
    _, error = run(dnsmasq_like, 3, can_send=False)
    assert str(error) == ("DHCPv6 on eth0: not done within the 3 s network deadline "
                          "(the link-local address is still tentative (DAD), nothing could be sent)")
