"""Bounded capture of a child's output: total byte count, the tail, and the last line."""

from __future__ import annotations

import asyncio


class OutputTail:
    """Keeps the last `limit` bytes of a stream; memory stays bounded whatever the child prints."""

    def __init__(self, limit: int = 64 * 1024) -> None:
        self.limit = limit
        self.total_bytes = 0
        self._buf = bytearray()

    def feed(self, chunk: bytes) -> None:
        self.total_bytes += len(chunk)
        self._buf += chunk
        if len(self._buf) > 2 * self.limit:  # trim rarely, not on every chunk
            del self._buf[: len(self._buf) - self.limit]

    def text(self) -> str:
        return bytes(self._buf[-self.limit :]).decode("utf-8", errors="replace")

    @property
    def last_line(self) -> str:
        """The last non-empty line so far (a print may arrive in several writes)."""
        tail = bytes(self._buf[-4096:]).rstrip(b"\n")
        return tail.rsplit(b"\n", 1)[-1][-500:].decode("utf-8", errors="replace")

    async def drain(self, stream: asyncio.StreamReader) -> None:
        while chunk := await stream.read(256 * 1024):
            self.feed(chunk)
