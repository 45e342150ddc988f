"""chacha20-poly1305@openssh.com on paramiko's packetizer (ssh/chachapoly.py): two packetizers
on a socket pair, one sending, one reading, as the two ends of a connection would.
Interoperation with OpenSSH itself: tests/integration/test_ssh_chacha.py."""

from __future__ import annotations

import os
import socket
import struct
from collections.abc import Iterator

import paramiko
import pytest

from kdump_agent.ssh import chachapoly
from kdump_agent.ssh.connection import cipher_preference

KEY = bytes(range(64))
NO_AES = "processor\t: 0\nflags\t\t: fpu sse sse2 pni\n"
WITH_AES = "processor\t: 0\nflags\t\t: fpu sse sse2 aes pclmulqdq\n"


@pytest.fixture
def ends() -> Iterator[tuple[chachapoly.Packetizer, chachapoly.Packetizer, socket.socket]]:
    """A sender and a reader sharing KEY, and the reader's socket (to look at the wire)."""
    left, right = socket.socketpair()
    sender, reader = chachapoly.Packetizer(left), chachapoly.Packetizer(right)
    sender.set_outbound_cipher(chachapoly.ChaCha20Poly1305(KEY), 8, None, 16, None, aead=True,
                               iv_out=bytes(12))
    reader.set_inbound_cipher(chachapoly.ChaCha20Poly1305(KEY), 8, None, 16, None, aead=True,
                              iv_in=bytes(12))
    yield sender, reader, right
    left.close()
    right.close()


def message(payload: bytes) -> paramiko.Message:
    m = paramiko.Message()
    m.add_byte(bytes([94]))  # MSG_CHANNEL_DATA
    m.add_string(payload)
    return m


def test_ssh_chacha_packets_read_back_in_order(ends: tuple[chachapoly.Packetizer, ...]) -> None:
    sender, reader = ends[0], ends[1]
    payloads = [os.urandom(size) for size in (0, 1, 7, 8, 4096, 32768)]
    for payload in payloads:
        sender.send_message(message(payload))
        kind, got = reader.read_message()
        assert kind == 94 and got.get_binary() == payload


def test_ssh_chacha_encrypts_the_length_too(ends: tuple[chachapoly.Packetizer, chachapoly.Packetizer,
                                                         socket.socket]) -> None:
    sender, _, wire = ends
    sender.send_message(message(b"x" * 1000))
    length = struct.unpack(">I", wire.recv(4))[0]
    assert not 1000 < length < 1100  # paramiko's AEAD path would send 1000 + header + padding


def test_ssh_chacha_refuses_a_changed_byte(ends: tuple[chachapoly.Packetizer, chachapoly.Packetizer,
                                                        socket.socket]) -> None:
    sender, _, wire = ends
    sender.send_message(message(b"y" * 100))
    data = bytearray(wire.recv(4096))
    data[20] ^= 1
    tampered, other = socket.socketpair()
    reader = chachapoly.Packetizer(other)
    reader.set_inbound_cipher(chachapoly.ChaCha20Poly1305(KEY), 8, None, 16, None, aead=True,
                              iv_in=bytes(12))
    tampered.sendall(bytes(data))
    with pytest.raises(paramiko.SSHException, match="Mismatched MAC"):
        reader.read_message()
    tampered.close()
    other.close()


def test_ssh_chacha_needs_a_64_byte_key() -> None:
    with pytest.raises(ValueError, match="64-byte key"):
        chachapoly.ChaCha20Poly1305(bytes(32))


def test_ssh_cipher_preference_follows_the_cpu() -> None:
    available = chachapoly.Transport._preferred_ciphers
    assert cipher_preference(available, NO_AES)[0] == chachapoly.NAME
    assert cipher_preference(available, WITH_AES)[:3] == ("aes128-gcm@openssh.com", "aes256-gcm@openssh.com",
                                                          chachapoly.NAME)
    assert sorted(cipher_preference(available, NO_AES)) == sorted(available)
    assert cipher_preference(("aes128-ctr",), NO_AES) == ("aes128-ctr",)


def test_ssh_aes_instructions_are_read_from_the_first_flags_line() -> None:
    assert chachapoly.has_aes_instructions(WITH_AES)
    assert not chachapoly.has_aes_instructions(NO_AES)
    assert chachapoly.has_aes_instructions("Features\t: fp asimd aes pmull sha1\n")  # arm64
    assert not chachapoly.has_aes_instructions("")
