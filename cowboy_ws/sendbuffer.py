"""The send buffer of a connection: bytes accepted from the handler that the kernel did not take yet.

The usual write is direct (the connection sends what one loop round produced, and the
kernel takes it all); only what the kernel leaves waits here, in order, until the
socket is writable again.  :attr:`SendBuffer.size` is what the water marks of
:mod:`cowboy_ws.options` (``send_high_water`` / ``send_low_water`` / ``max_send_buffer``)
are compared with.  The deque is created on first use and dropped when the buffer
empties, so an idle connection holds only this small object.
"""

from __future__ import annotations

import socket
import ssl
from collections import deque

Buffer = bytes | bytearray | memoryview

#: Buffers smaller than this are joined into one ``send`` (many small frames for a slow peer).
COALESCE = 65536

#: What a non-blocking send raises when the kernel (or TLS) takes nothing now.
WOULD_BLOCK = (BlockingIOError, InterruptedError, ssl.SSLWantWriteError, ssl.SSLWantReadError)


class SendBuffer:
    """Buffers waiting for the kernel, oldest first; ``size`` counts their bytes."""

    __slots__ = ("parts", "size")

    def __init__(self) -> None:
        self.parts: deque[Buffer] | None = None
        self.size = 0

    def __repr__(self) -> str:
        return f"<SendBuffer {self.size} bytes in {len(self.parts or ())} buffers>"

    def append(self, data: Buffer) -> None:
        parts = self.parts
        if parts is None:
            parts = self.parts = deque()
        parts.append(data)
        self.size += len(data)

    def extend(self, buffers: list[Buffer]) -> None:
        for data in buffers:
            self.append(data)

    def keep_unsent(self, buffers: list[Buffer], sent: int) -> None:
        """After a partial ``sendmsg`` of ``buffers``: keep what the kernel did not take, in order."""
        for i, data in enumerate(buffers):
            if sent < len(data):
                self.append(memoryview(data)[sent:] if sent else data)
                self.extend(buffers[i + 1:])
                return
            sent -= len(data)

    def write_to(self, sock: socket.socket) -> None:
        """Send until the kernel refuses more or the buffer is empty; OSError (not would-block) propagates."""
        parts = self.parts
        while parts:
            data = parts[0]
            if len(data) < COALESCE and len(parts) > 1:  # many small frames: one send
                joined = []
                size = 0
                while parts and size < COALESCE:
                    part = parts.popleft()
                    joined.append(part)
                    size += len(part)
                data = b"".join(joined)
                parts.appendleft(data)
            try:
                sent = sock.send(data)
            except WOULD_BLOCK:
                return
            self.size -= sent
            if sent < len(data):
                parts[0] = memoryview(data)[sent:]
                return
            parts.popleft()
        self.parts = None

    def clear(self) -> None:
        self.parts = None
        self.size = 0
