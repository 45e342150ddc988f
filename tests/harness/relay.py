"""A TCP relay on 127.0.0.1 between an SSH client and a server, which a test cuts.

It stands for the network between the capture kernel and the dump server: every connection
accepted on `port` is passed on to `target_port`, byte for byte, in both directions, until
`cut()` resets every connection open at that moment (a switch failover, a link that went
down). The relay itself stays up: the next connection goes through as before, to
`target_port` as it is then (a test may point it at another server).
"""

from __future__ import annotations

import contextlib
import socket
import struct
import threading
from types import TracebackType
from typing import Self

CHUNK = 64 * 1024


class Relay:
    """Use as a context manager; `forwarded` counts the bytes the client sent on."""

    def __init__(self, target_port: int, *, listen: str = "127.0.0.1") -> None:
        self.target_port = target_port
        self.listener = socket.create_server((listen, 0))
        self.listener.settimeout(0.2)
        self.port = int(self.listener.getsockname()[1])
        self.forwarded = 0
        self.accepted = 0
        self.cuts = 0
        self._cut_after: int | None = None
        self._lock = threading.Lock()
        self._open: list[socket.socket] = []
        self._stop = threading.Event()
        self._threads = [threading.Thread(target=self._accept, daemon=True)]
        self._threads[0].start()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None,
                 traceback: TracebackType | None) -> None:
        self.close()

    def cut_once_after(self, forwarded: int) -> None:
        """Cut every open connection once the client has sent `forwarded` bytes in all."""
        with self._lock:
            self._cut_after = forwarded

    def cut(self) -> None:
        """Reset every connection open now; the relay goes on accepting new ones."""
        with self._lock:
            sockets, self._open = self._open, []
            self.cuts += 1
        for sock in sockets:
            with contextlib.suppress(OSError):
                # no FIN, no lingering: the peer sees the connection reset, as after a failover
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
                sock.shutdown(socket.SHUT_RDWR)  # wakes the pump blocked in recv()
            sock.close()

    def close(self) -> None:
        self._stop.set()
        self.cut()
        for thread in self._threads:
            thread.join(timeout=5)
        self.listener.close()

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            try:
                server = socket.create_connection(("127.0.0.1", self.target_port), timeout=10)
            except OSError:
                client.close()  # the server is down: so is the way through us
                continue
            server.settimeout(None)
            client.settimeout(None)
            with self._lock:
                self.accepted += 1
                self._open += [client, server]
            for source, sink, counted in ((client, server, True), (server, client, False)):
                pump = threading.Thread(target=self._pump, args=(source, sink, counted), daemon=True)
                pump.start()
                self._threads.append(pump)

    def _pump(self, source: socket.socket, sink: socket.socket, counted: bool) -> None:
        try:
            while data := source.recv(CHUNK):
                sink.sendall(data)
                if counted:
                    self._count(len(data))
        except OSError:
            pass
        with contextlib.suppress(OSError):
            sink.shutdown(socket.SHUT_WR)  # an end on one side ends the other's sending

    def _count(self, size: int) -> None:
        with self._lock:
            self.forwarded += size
            due = self._cut_after is not None and self.forwarded >= self._cut_after
            if due:
                self._cut_after = None
        if due:
            self.cut()
