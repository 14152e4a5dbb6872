"""A node's serial console shared by every viewer of the page: one libvirt console stream per node,
its output fanned out to each viewer (with recent output replayed to a newcomer, so the login
prompt printed before they came is on their screen), every viewer's keys sent into it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable

from kvmlab.providers.base import ConsoleStream

SCROLLBACK_BYTES = 64 * 1024


class SharedConsole:
    def __init__(self, open_stream: Callable[[], ConsoleStream], loop: asyncio.AbstractEventLoop) -> None:
        self._open_stream = open_stream
        self._loop = loop
        self._lock = threading.Lock()
        self._stream: ConsoleStream | None = None
        self._viewers: set[asyncio.Queue[bytes | None]] = set()
        self._scrollback = bytearray()

    def join(self) -> asyncio.Queue[bytes | None]:
        """A queue of this console's output for one viewer (None: the console is gone). Opens the stream on first use."""
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        with self._lock:
            if self._stream is None:
                self._stream = self._open_stream()
                threading.Thread(target=self._pump, args=(self._stream,), name="serial-console", daemon=True).start()
            if self._scrollback:
                queue.put_nowait(bytes(self._scrollback))
            self._viewers.add(queue)
        return queue

    def leave(self, queue: asyncio.Queue[bytes | None]) -> None:
        with self._lock:
            self._viewers.discard(queue)

    async def send(self, data: bytes) -> None:
        stream = self._stream
        if stream is not None:
            await self._loop.run_in_executor(None, stream.write, data)

    def close(self) -> None:
        with self._lock:
            stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def _pump(self, stream: ConsoleStream) -> None:
        while data := stream.read():
            self._loop.call_soon_threadsafe(self._publish, data)
        with self._lock:
            if self._stream is stream:
                self._stream = None  # the domain went away: the next viewer opens a new stream
        self._loop.call_soon_threadsafe(self._publish, None)

    def _publish(self, data: bytes | None) -> None:
        with self._lock:
            if data is not None:
                self._scrollback += data
                del self._scrollback[:-SCROLLBACK_BYTES]
            viewers = list(self._viewers)
        for queue in viewers:
            queue.put_nowait(data)
