"""Chapter 6 in a real browser: labs/display.yaml's display checks, and `kvmlab web`'s page in Debian's
headless Chromium (serial console login, noVNC screens with and without a VNC password, refused
tokens), and the HTML report of a failed run."""

from __future__ import annotations

import os
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from kvmlab import report, settings
from kvmlab.display_checks import CHECKS as DISPLAY_CHECKS
from kvmlab.roles import Check
from kvmlab.verify import FAIL, PASS, run_checks
from kvmlab.web.server import BackgroundWebConsole, WebConsole
from tests.lab.browser import chromium, open_page, wait_until

pytestmark = pytest.mark.lab("display")

DOCS = Path(__file__).resolve().parents[2] / "docs"
# The canvas of the noVNC view: how many of its pixels are not black, and a digest of them all.
CANVAS_PROBE = """
const canvas = document.querySelector('#screen canvas');
if (!canvas || !canvas.width) return null;
const data = canvas.getContext('2d').getImageData(0, 0, canvas.width, canvas.height).data;
let lit = 0, digest = 0;
for (let i = 0; i < data.length; i += 4) {
  if (data[i] | data[i + 1] | data[i + 2]) lit++;
  digest = (digest * 31 + data[i] + data[i + 1] + data[i + 2]) >>> 0;
}
return [lit, digest];
"""


@pytest.fixture
def web(lab):
    with BackgroundWebConsole(WebConsole(lab, log=lambda line: print(line, file=sys.stderr))) as console:
        yield console


def browser(console: WebConsole):
    """Chromium, whose failures also quote what the console's server last logged."""
    return chromium(context=lambda: "kvmlab web said: " + (" | ".join(console.recent_log) or "nothing"))


def page(console: WebConsole, node: str) -> str:
    return f"{console.url}&node={node}"


def serial_text(driver) -> str:
    return driver.execute_script("const r = document.querySelector('#serial .xterm-rows'); return r ? r.innerText : '';")


def wait_for_text(driver, text: str, what: str) -> None:
    seen = ""

    def probe() -> bool:
        nonlocal seen
        seen = serial_text(driver)
        return text in seen

    try:
        wait_until(what, probe)
    except pytest.fail.Exception:
        pytest.fail(f"waited for {what} ({text!r}) on the serial console; it shows:\n{seen[-600:]}")


def log_in(driver, keys, node: str, password: str, attempts: int = 3) -> None:
    """Log in on the serial console as a person would. login turns echo off with TCSAFLUSH after it
    prints its prompt, so a password typed the instant the prompt shows can be thrown away on a
    busy guest: wait a moment before typing it, and on no shell prompt try again from the start."""

    def count(text: str) -> int:
        return serial_text(driver).count(text)

    for attempt in range(1, attempts + 1):
        # The screen keeps earlier prompts: wait for a new one each time.
        logins, passwords = count(f"{node} login:"), count("Password:")
        keys.send_keys("\n")
        wait_until("a new login prompt", lambda n=logins: count(f"{node} login:") > n)
        keys.send_keys("root\n")
        wait_until("the password prompt", lambda n=passwords: count("Password:") > n)
        time.sleep(2)
        keys.send_keys(password + "\n")
        try:
            wait_until("a shell prompt", lambda: f"root@{node}" in serial_text(driver), timeout=30)
            return
        except pytest.fail.Exception:
            if attempt == attempts:
                pytest.fail(f"no shell prompt after {attempts} logins on {node}'s serial console; it shows:\n{serial_text(driver)[-600:]}")


def test_display_checks_pass(lab):
    results = run_checks(lab, DISPLAY_CHECKS)
    assert [(r.check.id, r.outcome) for r in results] == [(c.id, PASS) for c in DISPLAY_CHECKS], [r.message for r in results]


def test_serial_console_logs_in_and_runs_a_command(lab, web):
    from selenium.webdriver.common.by import By

    with browser(web) as driver:
        open_page(driver, page(web, "virtio1"), "the serial console to open", "window.kvmlab && window.kvmlab.times.serialOpen")
        keys = driver.find_element(By.CSS_SELECTOR, "#serial .xterm-helper-textarea")
        log_in(driver, keys, "virtio1", web.console_password)
        keys.send_keys("echo typed-$((6 * 7))-$(hostname)\n")
        wait_for_text(driver, "typed-42-virtio1", "the command's output")


def test_novnc_shows_the_screen_and_its_changes(lab, web):
    from selenium.webdriver.common.by import By

    with browser(web) as driver:
        started = time.monotonic()
        open_page(driver, page(web, "qxl1"), "noVNC to connect", "window.kvmlab && window.kvmlab.vnc === 'connected'")
        first = wait_until("a screen that is not blank", lambda: (p := driver.execute_script(CANVAS_PROBE)) and p[0] > 0 and p)
        first_frame_s = time.monotonic() - started
        lab.node("qxl1").run_expect(
            "printf '\\033[2J\\033[H' > /dev/tty1; for i in $(seq 20); do echo '#### kvmlab writes on its screen ####'; done > /dev/tty1",
            "write on the guest's screen",
        )
        wait_until("the screen to change", lambda: (p := driver.execute_script(CANVAS_PROBE)) and p[1] != first[1])
        # For the picture: the serial console beside it, at its login prompt.
        driver.find_element(By.CSS_SELECTOR, "#serial .xterm-helper-textarea").send_keys("\n")
        wait_for_text(driver, "qxl1 login:", "the login prompt")
        artifacts = settings.artifacts_dir()
        artifacts.mkdir(parents=True, exist_ok=True)
        driver.save_screenshot(str(artifacts / "web-console.png"))
        if os.environ.get("KVMLAB_UPDATE_DOCS"):
            shutil.copyfile(artifacts / "web-console.png", DOCS / "web-console.png")
    print(f"\nkvmlab web: first console frame {first_frame_s:.2f} s after the page was asked for", file=sys.stderr)


def test_vnc_password_is_asked_for_and_only_the_right_one_connects(lab, web):
    from selenium.webdriver.common.by import By

    password = lab.lab.node("vga1").display.vnc.password

    def state(driver) -> str:
        return driver.execute_script("return window.kvmlab && window.kvmlab.vnc")

    def submit(driver, text: str) -> None:
        seen: dict[str, str] = {}

        def asks() -> bool:
            seen["state"] = state(driver)
            seen["status"] = driver.execute_script("const s = document.getElementById('vnc-status'); return s ? s.textContent : null")
            return seen["state"] == "password"

        try:
            wait_until("the page to ask for the VNC password", asks)
        except pytest.fail.Exception:
            pytest.fail(
                f"the page never asked for the VNC password: its VNC state is {seen.get('state')!r}, its status {seen.get('status')!r}"
            )
        field = driver.find_element(By.ID, "vnc-password")
        field.clear()
        field.send_keys(text)
        driver.find_element(By.ID, "vnc-connect").click()

    asking = "window.kvmlab && window.kvmlab.vnc === 'password'"
    with browser(web) as driver:
        open_page(driver, page(web, "vga1"), "the page to ask for the VNC password", asking)
        submit(driver, "wrong" + password[:3])
        wait_until("the wrong password to be refused", lambda: state(driver) in ("refused", "disconnected") and state(driver))
        assert state(driver) == "refused", "the page did not say the password was refused"
        open_page(driver, page(web, "vga1"), "the page to ask for the VNC password again", asking)
        submit(driver, password)
        wait_until("the right password to connect", lambda: state(driver) == "connected")
        wait_until("a screen that is not blank", lambda: (p := driver.execute_script(CANVAS_PROBE)) and p[0] > 0)


def test_page_follows_node_states(lab, web):
    def shown(driver) -> str:
        return driver.execute_script(
            "const c = document.querySelector('#nodes tr.node[data-name=\"virtio1\"] td:nth-child(2)'); return c ? c.textContent : '';"
        )

    def wait_shown(driver, state: str, what: str, timeout: float = 90.0) -> None:
        try:
            wait_until(what, lambda: shown(driver) == state, timeout=timeout)
        except pytest.fail.Exception:
            api = urllib.request.urlopen(web.url.replace("/?", "/api/lab?"), timeout=30).read().decode()
            header = driver.execute_script("return document.getElementById('title').textContent")
            pytest.fail(
                f"waited {timeout:.0f} s for {what}: the cell shows {shown(driver)!r}, libvirt says virtio1 is "
                f"{lab.node('virtio1').state}; the page's header says {header!r}; /api/lab answers {api[:600]}"
            )

    with browser(web) as driver:
        open_page(driver, web.url, "the page to run", "window.kvmlab")
        wait_shown(driver, "running", "virtio1 running in the node table")
        with lab.node("virtio1").paused():
            wait_shown(driver, "paused", "virtio1 paused in the node table", timeout=30)
        wait_shown(driver, "running", "virtio1 running again", timeout=30)


def test_unknown_token_and_missing_key_are_refused(lab, web):
    base = web.url.split("?")[0].rstrip("/")
    for path in ("/ws/vnc/not-a-token", "/ws/serial/not-a-token", "/", "/api/lab", "/api/lab?key=wrong"):
        with pytest.raises(urllib.error.HTTPError) as info:
            urllib.request.urlopen(base + path, timeout=30)
        assert info.value.code == 403, f"{path}: HTTP {info.value.code}"
    with chromium() as driver:
        open_page(driver, web.url, "the page to run", "window.kvmlab")
        outcome = driver.execute_async_script(
            """const done = arguments[arguments.length - 1];
            const ws = new WebSocket(arguments[0]);
            ws.onopen = () => done('opened');
            ws.onerror = () => done('refused');""",
            base.replace("http", "ws") + "/ws/vnc/not-a-token",
        )
        assert outcome == "refused"


def test_report_of_a_failed_run_shows_the_failing_check_and_console_tail(lab, tmp_path):
    from selenium.webdriver.common.by import By

    def hostname_is_wrong(session) -> None:
        seen = session.node("vga1").run_expect("hostname", "read the hostname").strip()
        assert seen == "not-vga1", f"vga1: hostname is {seen}, this check wants not-vga1"

    failing = Check("display", "hostname-probe", hostname_is_wrong)
    results = run_checks(lab, [failing, *DISPLAY_CHECKS[:1]])
    assert [r.outcome for r in results] == [FAIL, PASS]
    evidence = tmp_path / "evidence"
    lab.collect_artifacts(evidence, journal_nodes=["vga1"])
    path = report.write(report.of_session(lab, "verify", results, evidence), tmp_path / "report-verify.html")
    with chromium() as driver:
        driver.get(path.as_uri())
        failures = driver.find_element(By.ID, "failures")
        assert failures.is_displayed()
        text = driver.execute_script("return document.body.textContent")
        assert "FAIL display::hostname-probe" in text and "vga1: hostname is vga1" in text
        consoles = driver.find_elements(By.XPATH, "//details[summary[contains(., 'console-') and contains(., 'vga1')]]")
        assert consoles, "no console tail of vga1 in the report"
        tail = consoles[0].get_attribute("textContent")
        last_line = (evidence / "console-vga1.log").read_text(errors="replace").strip().splitlines()[-1].strip()
        assert last_line and last_line in tail, f"the console's last line {last_line!r} is not in the report: {tail[-300:]}"
