"""chacha20-poly1305@openssh.com for paramiko, which has only AES among the ciphers OpenSSH offers.

Why: a capture kernel may run on a CPU without AES instructions, where AES is table look-ups
in software; QEMU's default CPU model is one (under TCG, the software AES-GCM of the dump
stream was most of our SSH transfer's cost). ChaCha20 is additions, rotations and XORs,
fast everywhere, which is why OpenSSH puts it first. With AES instructions AES-GCM is as
fast or faster, so `connection.cipher_preference` offers ChaCha20 first only when the CPU
has no AES (`/proc/cpuinfo`'s flags).

The construction (OpenSSH's PROTOCOL.chacha20poly1305): the 64-byte key is K_2 (payload)
then K_1 (length); the nonce is the packet's sequence number. The length is encrypted
with K_1 at block 0; the Poly1305 key is K_2's block 0; the payload is K_2 from block 1;
the tag covers the encrypted length and payload.

paramiko's AEAD path (used for AES-GCM) sends the length in clear and authenticates it as
associated data; everything else about the packet (padding to the block size, the 16-byte
tag after it, sequence numbers, rekeying) is as ChaCha20 needs. `Packetizer` adds the
one difference: the length is swapped for its encryption as a packet goes out, and
decrypted first as one comes in (paramiko reads the first block of a message with
`read_all(..., check_rekey=True)`, and only then). The sequence numbers are paramiko's
own (pinned to paramiko 5.1, tests/integration/test_ssh_chacha.py).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import paramiko
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import poly1305
from cryptography.hazmat.primitives.ciphers import Cipher, CipherContext, algorithms

NAME = "chacha20-poly1305@openssh.com"
TAG_BYTES = 16


def _keystream(key: bytes, sequence: int, block: int) -> CipherContext:
    """OpenSSH's ChaCha20: a 64-bit block counter (little-endian) then the 64-bit
    sequence number (big-endian), which is how cryptography's 16-byte nonce lays out."""
    nonce = block.to_bytes(8, "little") + sequence.to_bytes(8, "big")
    return Cipher(algorithms.ChaCha20(key, nonce), mode=None).encryptor()


class ChaCha20Poly1305:
    """One direction's keys; `sequence` is read from the packetizer at every packet."""

    def __init__(self, key: bytes) -> None:
        if len(key) != 64:
            raise ValueError(f"{NAME} needs a 64-byte key, not {len(key)} bytes")
        self._main, self._header = key[:32], key[32:]
        self.sequence: Callable[[], int] = lambda: 0  # set by Packetizer.set_*_cipher
        self._length: bytes | None = None  # the encrypted length of the packet in hand

    def _poly_key_and_stream(self, sequence: int) -> tuple[bytes, CipherContext]:
        stream = _keystream(self._main, sequence, 0)
        return stream.update(bytes(64))[:32], stream  # the stream is at block 1 now

    # -- outgoing: paramiko calls encrypt(iv, body, length) and sends length + what it returns

    def encrypt(self, iv: bytes, body: bytes, length: bytes) -> bytes:
        sequence = self.sequence()
        self._length = _keystream(self._header, sequence, 0).update(length)
        poly_key, stream = self._poly_key_and_stream(sequence)
        sealed = stream.update(body)
        return sealed + poly1305.Poly1305.generate_tag(poly_key, self._length + sealed)

    def take_length(self) -> bytes:
        """The encrypted length of the packet just sealed, for the wire."""
        length, self._length = self._length, None
        if length is None:
            raise paramiko.SSHException(f"{NAME}: a packet went out without being sealed")
        return length

    # -- incoming: open_length on the first 4 bytes, then paramiko calls decrypt(iv, rest, length)

    def open_length(self, encrypted: bytes) -> bytes:
        self._length = encrypted
        return bytes(_keystream(self._header, self.sequence(), 0).update(encrypted))

    def decrypt(self, iv: bytes, sealed: bytes, length: bytes) -> bytes:
        encrypted_length, self._length = self._length, None
        if encrypted_length is None:
            raise paramiko.SSHException(f"{NAME}: a packet came in without its length")
        body, tag = sealed[:-TAG_BYTES], sealed[-TAG_BYTES:]
        poly_key, stream = self._poly_key_and_stream(self.sequence())
        try:
            poly1305.Poly1305.verify_tag(poly_key, encrypted_length + body, tag)
        except InvalidSignature:
            raise paramiko.SSHException("Mismatched MAC") from None
        return bytes(stream.update(body))


class Packetizer(paramiko.Packetizer):  # type: ignore[misc]  # paramiko has no type hints
    """paramiko's, with the length of a ChaCha20 packet encrypted on the wire."""

    def __init__(self, socket: Any) -> None:
        super().__init__(socket)
        self._chacha_out: ChaCha20Poly1305 | None = None
        self._chacha_in: ChaCha20Poly1305 | None = None

    def set_outbound_cipher(self, block_engine: Any, *args: Any, **kwargs: Any) -> None:
        self._chacha_out = block_engine if isinstance(block_engine, ChaCha20Poly1305) else None
        if self._chacha_out is not None:
            self._chacha_out.sequence = lambda: int(self._Packetizer__sequence_number_out)
        super().set_outbound_cipher(block_engine, *args, **kwargs)

    def set_inbound_cipher(self, block_engine: Any, *args: Any, **kwargs: Any) -> None:
        self._chacha_in = block_engine if isinstance(block_engine, ChaCha20Poly1305) else None
        if self._chacha_in is not None:
            self._chacha_in.sequence = lambda: int(self._Packetizer__sequence_number_in)
        super().set_inbound_cipher(block_engine, *args, **kwargs)

    def write_all(self, out: bytes) -> None:
        if self._chacha_out is not None:
            out = self._chacha_out.take_length() + out[4:]
        super().write_all(out)

    def read_all(self, n: int, check_rekey: bool = False) -> bytes:
        data: bytes = super().read_all(n, check_rekey)
        if check_rekey and self._chacha_in is not None:  # a message's first block
            return self._chacha_in.open_length(data[:4]) + data[4:]
        return data


class Transport(paramiko.Transport):  # type: ignore[misc]
    """paramiko's Transport, offering chacha20-poly1305@openssh.com too (last: the caller
    orders the ciphers)."""

    _cipher_info: ClassVar[dict[str, dict[str, Any]]] = {**paramiko.Transport._cipher_info,
        NAME: {"class": ChaCha20Poly1305, "block-size": 8, "key-size": 64, "iv-size": 12, "is_aead": True}}
    _preferred_ciphers = (*paramiko.Transport._preferred_ciphers, NAME)

    def __init__(self, sock: Any) -> None:
        super().__init__(sock, packetizer_class=Packetizer)


def has_aes_instructions(cpuinfo: str) -> bool:
    """Whether /proc/cpuinfo's first flags line lists AES-NI (x86) or the ARMv8 AES extension."""
    for line in cpuinfo.splitlines():
        name, _, value = line.partition(":")
        if name.strip() in ("flags", "Features"):
            return "aes" in value.split()
    return False

