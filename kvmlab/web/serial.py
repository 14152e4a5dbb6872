"""A node's serial console shared by every viewer of the page: one libvirt console stream per node,
its output fanned out to each viewer (with recent output replayed to a newcomer, so the login
prompt printed before they came is on their screen), every viewer's keys sent into it.

Queues are only touched on the event loop's thread; the stream is read by a thread of its own
(libvirt's blocking read) that hands each chunk to the loop."""

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
        self._opening = asyncio.Lock()  # one stream at a time: opening another would take the console from the first
        self._stream: ConsoleStream | None = None
        self._viewers: set[asyncio.Queue[bytes | None]] = set()
        self._scrollback = bytearray()

    async def join(self) -> asyncio.Queue[bytes | None]:
        """A queue of this console's output for one viewer (None: the console is gone). Opens the stream on first use."""
        async with self._opening:
            if self._stream is None:
                stream = await self._loop.run_in_executor(None, self._open_stream)
                self._stream = stream
                threading.Thread(target=self._pump, args=(stream,), name="serial-console", daemon=True).start()
        queue: asyncio.Queue[bytes | None] = asyncio.Queue()
        if self._scrollback:
            queue.put_nowait(bytes(self._scrollback))
        self._viewers.add(queue)
        return queue

    def leave(self, queue: asyncio.Queue[bytes | None]) -> None:
        self._viewers.discard(queue)

    async def send(self, data: bytes) -> None:
        stream = self._stream
        if stream is not None:
            await self._loop.run_in_executor(None, stream.write, data)

    def close(self) -> None:
        stream, self._stream = self._stream, None
        if stream is not None:
            stream.close()

    def _pump(self, stream: ConsoleStream) -> None:
        while data := stream.read():
            self._loop.call_soon_threadsafe(self._publish, stream, data)
        self._loop.call_soon_threadsafe(self._publish, stream, None)

    def _publish(self, stream: ConsoleStream, data: bytes | None) -> None:
        if data is None:
            if self._stream is stream:
                self._stream = None  # the domain went away: the next viewer opens a new stream
        else:
            self._scrollback += data
            del self._scrollback[:-SCROLLBACK_BYTES]
        for queue in list(self._viewers):
            queue.put_nowait(data)
