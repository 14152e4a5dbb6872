"""`kvmlab web LAB`: a page on loopback with each node of a running lab, its serial console (xterm.js
bridged to the domain's console stream) and its screen (noVNC, through a WebSocket-to-VNC bridge).

Access: the page needs the key printed by `kvmlab web` (other local users cannot open it); each node's
consoles need that node's token, handed out by the page; an unknown token is refused before the
WebSocket is opened. Viewing is shared: every viewer sees the same console, QEMU's VNC server takes
each viewer as a shared client.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import secrets
import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor

from aiohttp import WSMsgType, web

from kvmlab.display_checks import vnc_target
from kvmlab.errors import HarnessError
from kvmlab.lab import LabSession
from kvmlab.web import assets
from kvmlab.web.serial import SharedConsole

CONSOLE_USER = "root"


class WebConsole:
    def __init__(self, session: LabSession, log: Callable[[str], None], task_html: str = "") -> None:
        self.session = session
        self._log = log
        self.recent_log: deque[str] = deque(maxlen=20)  # for a test's failure message: what the server last said
        self.task_html = task_html
        self.key = secrets.token_urlsafe(16)
        self.tokens = {secrets.token_urlsafe(16): node.name for node in session.nodes}
        # Root's password on the serial console, set on each node when a viewer first opens it: the
        # image has none (SSH takes keys only), and a console without a login is not the book's.
        self.console_password = secrets.token_urlsafe(9)
        self._password_set: set[str] = set()
        self._consoles: dict[str, SharedConsole] = {}
        self._pool = ThreadPoolExecutor(max_workers=8, thread_name_prefix="web")
        self._loop: asyncio.AbstractEventLoop | None = None
        self._runner: web.AppRunner | None = None
        self.url = ""

    def log(self, line: str) -> None:
        self.recent_log.append(line)
        self._log(line)

    # -- the app ---------------------------------------------------------------------------------
    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_get("/", self._index)
        app.router.add_get("/api/lab", self._lab_json)
        app.router.add_get("/task", self._task)
        app.router.add_get("/ws/serial/{token}", self._serial)
        app.router.add_get("/ws/vnc/{token}", self._vnc)
        app.router.add_static("/static/", assets.STATIC_DIR)
        app.router.add_static("/novnc/", assets.novnc_dir())
        app.router.add_static("/xterm/", assets.xterm_dir())
        return app

    def _require_key(self, request: web.Request) -> None:
        if not secrets.compare_digest(request.query.get("key", ""), self.key):
            raise web.HTTPForbidden(text="kvmlab web: this page needs the key that `kvmlab web` printed (…/?key=…)\n")

    def _node_of(self, request: web.Request) -> str:
        name = self.tokens.get(request.match_info["token"])
        if name is None:
            raise web.HTTPForbidden(text="kvmlab web: unknown console token\n")
        return name

    async def _index(self, request: web.Request) -> web.StreamResponse:
        self._require_key(request)
        return web.FileResponse(assets.STATIC_DIR / "index.html", headers={"Cache-Control": "no-store"})

    async def _task(self, request: web.Request) -> web.Response:
        self._require_key(request)
        if not self.task_html:
            raise web.HTTPNotFound(text="this lab is not an exercise's lab\n")
        return web.Response(text=self.task_html, content_type="text/html")

    async def _lab_json(self, request: web.Request) -> web.Response:
        self._require_key(request)
        nodes = await asyncio.get_running_loop().run_in_executor(self._pool, self._describe_nodes)
        body = {"lab": self.session.lab.name, "run": self.session.run_id, "task": bool(self.task_html), "nodes": nodes}
        return web.Response(text=json.dumps(body), content_type="application/json", headers={"Cache-Control": "no-store"})

    def _describe_nodes(self) -> list[dict]:
        by_name = {name: token for token, name in self.tokens.items()}
        out = []
        for node in self.session.nodes:
            display = node.model.display
            out.append(
                {
                    "name": node.name,
                    "roles": list(node.roles),
                    "state": self.session.provider_of(node.name).domain_state(node.domain),
                    "address": node.address(),
                    "token": by_name[node.name],
                    "vnc": bool(display and display.vnc),
                    "vnc_password": bool(display and display.vnc and display.vnc.password),
                    "video": display.video if display else "",
                    "login": {"user": CONSOLE_USER, "password": self.console_password},
                }
            )
        return out

    # -- serial console --------------------------------------------------------------------------
    def _console(self, name: str) -> SharedConsole:
        if name not in self._consoles:
            domain, provider = self.session.node(name).domain, self.session.provider_of(name)  # its own host's, in a spread lab
            self._consoles[name] = SharedConsole(lambda: provider.open_console(domain), asyncio.get_running_loop())
        return self._consoles[name]

    def _set_password(self, name: str) -> None:
        if name in self._password_set:
            return
        started = time.monotonic()
        try:
            # On stdin, so the password is in no command line, log or artifact.
            self.session.node(name).remote.check(
                "chpasswd", "set the console password", timeout=60, stdin=f"{CONSOLE_USER}:{self.console_password}\n"
            )
            self._password_set.add(name)
            self.log(f"web: {name}: console password set in {time.monotonic() - started:.1f} s")
        except HarnessError as exc:
            self.log(
                f"web: {name}: could not set the console password in {time.monotonic() - started:.0f} s ({exc});"
                " log in as you would by `kvmlab ssh`"
            )

    async def _serial(self, request: web.Request) -> web.WebSocketResponse:
        name = self._node_of(request)
        ws = web.WebSocketResponse(heartbeat=30)
        await ws.prepare(request)
        # Before the viewer's keys reach the console (they wait in the socket meanwhile): a login tried
        # before the password is set would be refused. The socket is open already, so a slow node shows
        # as a console that answers late, not as one that never opens.
        await asyncio.get_running_loop().run_in_executor(self._pool, self._set_password, name)
        try:
            console = self._console(name)
            queue = await console.join()
        except HarnessError as exc:
            await ws.close(code=1011, message=str(exc)[:120].encode())
            return ws
        pump = asyncio.create_task(self._to_browser(queue, ws))
        try:
            async for msg in ws:
                if msg.type == WSMsgType.TEXT:
                    await console.send(msg.data.encode())
                elif msg.type == WSMsgType.BINARY:
                    await console.send(msg.data)
        finally:
            console.leave(queue)
            pump.cancel()
        return ws

    @staticmethod
    async def _to_browser(queue: asyncio.Queue[bytes | None], ws: web.WebSocketResponse) -> None:
        while (data := await queue.get()) is not None:
            await ws.send_bytes(data)
        await ws.close(message=b"the console closed (the node stopped)")

    # -- graphical console -----------------------------------------------------------------------
    async def _vnc(self, request: web.Request) -> web.WebSocketResponse:
        name = self._node_of(request)
        domain, site = self.session.node(name).domain, self.session.site_of(name)
        if not site.host.local:
            # Its VNC server listens on that host, which this machine's browser socket cannot reach.
            raise web.HTTPNotImplemented(
                text=f"node {name} runs on the libvirt host {site.host.describe()}: kvmlab web shows the VNC display"
                " of nodes on this machine only (its serial console works wherever the node runs)\n"
            )
        loop = asyncio.get_running_loop()
        target = await loop.run_in_executor(self._pool, lambda: vnc_target(site.provider.domain_xml(domain)))
        if target is None:
            raise web.HTTPNotFound(text=f"node {name} has no VNC display (give it `display: {{vnc: true}}` in the lab file)\n")
        ws = web.WebSocketResponse(protocols=("binary",), heartbeat=30)
        await ws.prepare(request)
        try:
            reader, writer = await asyncio.open_connection(target.host, target.port)
        except OSError as exc:
            await ws.close(code=1011, message=f"VNC server unreachable: {exc.strerror}".encode()[:120])
            return ws

        async def to_browser() -> None:
            while data := await reader.read(65536):
                await ws.send_bytes(data)
            await ws.close()

        pump = asyncio.create_task(to_browser())
        try:
            async for msg in ws:
                if msg.type == WSMsgType.BINARY:
                    writer.write(msg.data)
                    await writer.drain()
        finally:
            pump.cancel()
            writer.close()
        return ws

    # -- running it ------------------------------------------------------------------------------
    async def start(self, address: str, port: int) -> str:
        self._loop = asyncio.get_running_loop()
        self._runner = web.AppRunner(self.app(), access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, address, port)
        await site.start()
        host, bound = self._runner.addresses[0][:2]
        self.url = f"http://{host}:{bound}/?key={self.key}"
        return self.url

    async def stop(self) -> None:
        for console in self._consoles.values():
            console.close()
        if self._runner is not None:
            await self._runner.cleanup()
        self._pool.shutdown(wait=False, cancel_futures=True)


class BackgroundWebConsole:
    """A WebConsole served from a thread of its own (for tests and for callers with their own main loop)."""

    def __init__(self, console: WebConsole, address: str = "127.0.0.1", port: int = 0) -> None:
        self.console = console
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, name="kvmlab-web", daemon=True)
        self._address, self._port = address, port

    def __enter__(self) -> WebConsole:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self.console.start(self._address, self._port), self._loop).result(timeout=60)
        return self.console

    def __exit__(self, *exc: object) -> None:
        with contextlib.suppress(Exception):
            asyncio.run_coroutine_threadsafe(self.console.stop(), self._loop).result(timeout=30)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
