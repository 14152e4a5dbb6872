"""The shared serial console: every viewer sees the same output (a newcomer, what came before),
every viewer's keys reach the node, and a console that ends is opened again for the next viewer."""

from __future__ import annotations

import asyncio
import queue
import threading

from kvmlab.web.serial import SCROLLBACK_BYTES, SharedConsole


class FakeStream:
    """A console stream fed by the test: read() blocks like libvirt's, b"" once closed."""

    def __init__(self) -> None:
        self.output: queue.Queue[bytes] = queue.Queue()
        self.typed = bytearray()
        self.closed = threading.Event()

    def read(self) -> bytes:
        return self.output.get()

    def write(self, data: bytes) -> None:
        self.typed += data

    def close(self) -> None:
        self.closed.set()
        self.output.put(b"")


async def next_chunk(q: asyncio.Queue) -> bytes | None:
    return await asyncio.wait_for(q.get(), timeout=10)


def test_viewers_share_output_and_input_and_a_newcomer_gets_the_scrollback():
    async def scenario() -> None:
        opened: list[FakeStream] = []

        def open_stream() -> FakeStream:
            opened.append(FakeStream())
            return opened[-1]

        console = SharedConsole(open_stream, asyncio.get_running_loop())
        first, second = await asyncio.gather(console.join(), console.join())
        assert len(opened) == 1, "two viewers arriving together share one stream"
        opened[0].output.put(b"n1 login: ")
        assert await next_chunk(first) == await next_chunk(second) == b"n1 login: "
        late = await console.join()
        assert await next_chunk(late) == b"n1 login: ", "a newcomer sees the prompt printed before it came"
        await console.send(b"root\r")
        await console.send(b"x" * 3)
        assert bytes(opened[0].typed) == b"root\rxxx"
        console.leave(second)
        opened[0].output.put(b"Password: ")
        assert await next_chunk(first) == await next_chunk(late) == b"Password: " and second.empty()

        opened[0].output.put(b"")  # the node stopped: its stream ends
        assert await next_chunk(first) is None and await next_chunk(late) is None
        await asyncio.sleep(0)
        again = await console.join()
        assert len(opened) == 2, "the next viewer opens the console again"
        assert (await next_chunk(again)).endswith(b"Password: ")
        console.close()
        assert opened[1].closed.is_set()

    asyncio.run(scenario())


def test_scrollback_keeps_only_the_newest_output():
    async def scenario() -> None:
        stream = FakeStream()
        console = SharedConsole(lambda: stream, asyncio.get_running_loop())
        viewer = await console.join()
        stream.output.put(b"a" * SCROLLBACK_BYTES)
        stream.output.put(b"tail")
        await next_chunk(viewer)
        await next_chunk(viewer)
        replay = await next_chunk(await console.join())
        assert len(replay) == SCROLLBACK_BYTES and replay.endswith(b"tail")
        console.close()

    asyncio.run(scenario())
