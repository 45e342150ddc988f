"""One VLAN terminated in user space, between two tap devices of a network namespace.

This host's kernel has no 8021q module, no act_vlan and a bridge without vlan_filtering,
so nothing in the kernel can strip or add an 802.1Q header for the lab. This relay does:
frames read from the "trunk" tap that carry the tag `vid` lose it and go out of the
"access" tap; frames read from the access tap gain the tag and go out of the trunk tap;
anything else (untagged or another VID on the trunk, tagged on the access side) is dropped.
A tap fd carries the tag in the frame's data (tun inserts it on read), so the relay sees
exactly what the guest put on the wire.

Run it inside the namespace (TUNSETIFF finds the tap by name in the caller's namespace):

    python3 vlan_relay.py <trunk-tap> <access-tap> <vid>

It prints "relaying" once both taps are open and runs until it is killed. Standard
library only: it runs as a plain script, and `open_tap` / `tag` / `untag` serve the
lab's self-test too.
"""

from __future__ import annotations

import fcntl
import os
import select
import struct
import sys

TUNSETIFF = 0x400454CA
IFF_TAP = 0x0002
IFF_NO_PI = 0x1000
TPID = b"\x81\x00"  # 802.1Q
MAX_FRAME = 65536


def open_tap(name: str) -> int:
    """An fd on the existing tap device `name` (made by `ip tuntap add ... mode tap`)."""
    fd = os.open("/dev/net/tun", os.O_RDWR | os.O_CLOEXEC)
    try:
        fcntl.ioctl(fd, TUNSETIFF, struct.pack("16sH22x", name.encode(), IFF_TAP | IFF_NO_PI))
    except OSError:
        os.close(fd)
        raise
    return fd


def tag(frame: bytes, vid: int) -> bytes:
    """`frame` with an 802.1Q header for `vid` (priority 0) after the two MAC addresses."""
    return frame[:12] + TPID + struct.pack(">H", vid & 0x0FFF) + frame[12:]


def untag(frame: bytes, vid: int) -> bytes | None:
    """`frame` without its 802.1Q header if it is tagged with `vid`, else None."""
    if len(frame) < 18 or frame[12:14] != TPID:
        return None
    if struct.unpack(">H", frame[14:16])[0] & 0x0FFF != vid:
        return None
    return frame[:12] + frame[16:]


def relay(trunk: int, access: int, vid: int) -> None:
    """Move frames between the two fds until killed."""
    while True:
        ready, _, _ = select.select([trunk, access], [], [])
        for fd in ready:
            frame = os.read(fd, MAX_FRAME)
            if fd == trunk:
                inner = untag(frame, vid)
                if inner is not None:
                    _write(access, inner)
            elif frame[12:14] != TPID:
                _write(trunk, tag(frame, vid))


def _write(fd: int, frame: bytes) -> None:
    """Write one frame; a tap whose other side is gone (EIO: no carrier yet) drops it, as a
    cable would."""
    try:
        os.write(fd, frame)
    except OSError:
        pass


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print("usage: vlan_relay.py <trunk-tap> <access-tap> <vid>", file=sys.stderr)
        return 2
    trunk, access = open_tap(argv[0]), open_tap(argv[1])
    print("relaying", flush=True)
    relay(trunk, access, int(argv[2]))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
