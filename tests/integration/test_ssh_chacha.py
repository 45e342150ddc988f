"""chacha20-poly1305@openssh.com (ssh/chachapoly.py) against real OpenSSH on 127.0.0.1: the
cipher a capture kernel without AES instructions picks. The dump must arrive exactly as
`makedumpfile -R` rebuilds it, also across rekeys (every 256 KiB here), where both ends
switch keys and paramiko's sequence numbers go on."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from test_ssh_openssh import destination, reassembled, send_dump, synthetic_stream

from harness import sshd as servers
from harness.sshd import ClientKey, Sshd
from kdump_agent.ssh import chachapoly, connection

client_key = servers.client_key
sshd = servers.sshd
TIMEOUT = 20.0


@pytest.fixture
def no_aes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The capture kernel's CPU as QEMU's default model shows it: no AES instructions."""
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text("processor\t: 0\nflags\t\t: fpu sse sse2 pni\n")
    monkeypatch.setattr(connection, "CPUINFO", str(cpuinfo))


@pytest.mark.parametrize("rekey_bytes", [None, 256 << 10])
def test_ssh_chacha_dump_arrives_as_makedumpfile_rebuilds_it(
        no_aes: None, sshd: Sshd, client_key: ClientKey, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
        rekey_bytes: int | None) -> None:
    if rekey_bytes:
        monkeypatch.setattr(chachapoly.Packetizer, "REKEY_BYTES", rekey_bytes)
    used: list[tuple[str, str]] = []
    connect = connection.SshTarget.connect

    def noting_the_cipher(*args: object, **kwargs: object) -> connection.SshTarget:
        target = connect(*args, **kwargs)  # type: ignore[arg-type]
        used.append((target._transport.local_cipher, target._transport.remote_cipher))
        return target

    monkeypatch.setattr(connection.SshTarget, "connect", noting_the_cipher)
    stream = synthetic_stream(seed=7)
    transfer = send_dump(destination(sshd, client_key, tmp_path), io.BytesIO(stream), TIMEOUT)
    assert used == [(chachapoly.NAME, chachapoly.NAME)]
    assert Path(transfer.path).read_bytes() == reassembled(stream, tmp_path)
    if rekey_bytes:
        assert len(stream) > 8 * rekey_bytes
