"""`kvmlab web` without a lab: who may open what, where a domain's VNC server is, and the page's files."""

from __future__ import annotations

import asyncio
import json
import threading
import urllib.error
import urllib.request
from types import SimpleNamespace

import aiohttp
import pytest

from kvmlab.display_checks import vnc_target
from kvmlab.lab import Site
from kvmlab.libvirt_host import host_of
from kvmlab.model import Display, Node, Vnc
from kvmlab.web import assets
from kvmlab.web.server import BackgroundWebConsole, WebConsole

LIVE_XML = """<domain><devices>
  <graphics type='spice' port='5901' autoport='yes'><listen type='address' address='127.0.0.1'/></graphics>
  <graphics type='vnc' port='5900' autoport='yes' listen='0.0.0.0'><listen type='address' address='0.0.0.0'/></graphics>
</devices></domain>"""


def test_vnc_target_is_read_from_the_live_domain():
    target = vnc_target(LIVE_XML)
    assert (target.host, target.port) == ("127.0.0.1", 5900), "a wildcard listen is reached on loopback"
    assert vnc_target("<domain><devices/></domain>") is None
    assert vnc_target("<domain><devices><graphics type='vnc' port='-1'/></devices></domain>") is None, "not started yet"


class FakeProvider:
    def __init__(self, state: str = "running") -> None:
        self.state = state

    def domain_state(self, _name: str) -> str:
        return self.state


def fake_session(model: Node, uri: str = "qemu:///system", provider: FakeProvider | None = None) -> SimpleNamespace:
    """A lab of one node, running on the libvirt host of URI."""
    provider = provider or FakeProvider()
    site = Site("", host_of(uri), provider, (model.name,))
    return SimpleNamespace(
        lab=SimpleNamespace(name="x"),
        run_id="abc123",
        nodes=[FakeHandle(model)],
        node=lambda name: FakeHandle(model),
        provider_of=lambda name: provider,
        site_of=lambda name: site,
    )


class FakeHandle:
    def __init__(self, model: Node) -> None:
        self.model, self.name, self.roles, self.domain = model, model.name, model.roles, f"kvmlab-x-{model.name}"

    def address(self) -> str:
        return "10.213.0.10"


@pytest.fixture
def served():
    if not (assets.NOVNC_DIR / "core" / "rfb.js").is_file():
        pytest.fail("Debian's novnc package is a prerequisite: apt-get install novnc (scripts/host-setup.sh does)")
    model = Node("n1", ("nfs-server",), 384, 1, (), ("mgmt",), Display("vga", Vnc(password="s3cr!t")))
    with BackgroundWebConsole(WebConsole(fake_session(model), log=print)) as console:
        yield console


def get(url: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(url, timeout=30) as response:
            return response.status, response.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


def test_the_page_and_its_lab_need_the_key(served):
    base = served.url.split("?")[0]
    assert get(base)[0] == 403 and get(base + "api/lab?key=nope")[0] == 403
    status, body = get(served.url)
    assert status == 200 and b"/static/app.js" in body and b"/xterm/lib/xterm.js" in body
    status, body = get(served.url.replace("/?", "/api/lab?"))
    lab = json.loads(body)
    assert status == 200 and lab["lab"] == "x"
    (node,) = lab["nodes"]
    assert node["vnc"] and node["vnc_password"] and node["video"] == "vga" and node["token"] in served.tokens
    assert "s3cr!t" not in body.decode(), "the VNC password itself never leaves the lab file"


def test_console_tokens_are_checked_before_any_websocket(served):
    base = served.url.split("?")[0]
    for path in ("ws/vnc/forged", "ws/serial/forged"):
        status, body = get(base + path)
        assert status == 403 and b"unknown console token" in body


def test_the_browser_libraries_are_served(served):
    base = served.url.split("?")[0]
    assert get(base + "novnc/core/rfb.js")[0] == 200 and get(base + "static/app.js")[0] == 200
    status, body = get(base + "xterm/lib/xterm.js")
    assert status == 200 and b"Terminal" in body


def test_a_node_on_a_remote_host_shows_that_hosts_state_and_says_its_vnc_is_out_of_reach():
    model = Node("n1", ("nfs-server",), 384, 1, (), ("mgmt",), Display("vga", Vnc()))
    session = fake_session(model, "qemu+ssh://root@server1/system", FakeProvider("paused"))
    with BackgroundWebConsole(WebConsole(session, log=print)) as console:
        base = console.url.split("?")[0]
        (node,) = json.loads(get(console.url.replace("/?", "/api/lab?"))[1])["nodes"]
        assert node["state"] == "paused", "read from the provider of the node's own host"
        status, body = get(base + "ws/vnc/" + node["token"])
    assert status == 501 and b"runs on the libvirt host root@server1" in body, body


class SlowRemote:
    """A node whose chpasswd answers only when the test lets it."""

    def __init__(self) -> None:
        self.answer = threading.Event()

    def check(self, *_args, **_kwargs) -> None:
        assert self.answer.wait(30), "the test never let chpasswd answer"


class EndedStream:
    def read(self) -> bytes:
        return b""

    def write(self, _data: bytes) -> None:
        pass

    def close(self) -> None:
        pass


def test_a_serial_console_opens_at_once_and_its_keys_wait_for_the_console_password():
    model = Node("n1", ("nfs-server",), 384, 1, (), ("mgmt",), None)
    provider, remote = FakeProvider(), SlowRemote()
    provider.open_console = lambda _domain: EndedStream()
    session = fake_session(model, provider=provider)
    session.node = lambda name: SimpleNamespace(domain="kvmlab-x-n1", remote=remote)
    with BackgroundWebConsole(WebConsole(session, log=print)) as console:
        (node,) = json.loads(get(console.url.replace("/?", "/api/lab?"))[1])["nodes"]
        url = console.url.split("?")[0].replace("http", "ws") + "ws/serial/" + node["token"]

        async def open_then_let_the_password_be_set() -> str:
            async with aiohttp.ClientSession() as client, client.ws_connect(url, timeout=aiohttp.ClientWSTimeout(ws_close=10)) as ws:
                # The handshake is done while chpasswd has not answered yet.
                remote.answer.set()
                message = await ws.receive(timeout=30)  # the console ends: the server closes with why
                return message.extra or ""

        reason = asyncio.run(open_then_let_the_password_be_set())
    assert "the console closed" in reason
    assert any("n1: console password set" in line for line in console.recent_log), list(console.recent_log)
