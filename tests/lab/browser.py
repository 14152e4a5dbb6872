"""Debian's headless Chromium driven through its ChromeDriver (packages chromium, chromium-driver)."""

from __future__ import annotations

import contextlib
import shutil
import sys
import time
from collections.abc import Callable, Iterator

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000, context: Callable[[], str] = lambda: "") -> Iterator[object]:
    """The browser. A test that fails in it gets, on its message's first line (the one a run's summary
    shows), what the page showed and CONTEXT's words (say, its server's last log lines)."""
    # A missing browser fails the test (it is a prerequisite of the suite), never skips it.
    if not (shutil.which(CHROMIUM) and shutil.which(CHROMEDRIVER)):
        pytest.fail(f"{CHROMIUM} and {CHROMEDRIVER} are needed: apt-get install chromium chromium-driver (scripts/host-setup.sh does)")
    from selenium import webdriver
    from selenium.webdriver.chrome.options import Options
    from selenium.webdriver.chrome.service import Service

    options = Options()
    options.binary_location = CHROMIUM
    # Root in a container: no sandbox, and /dev/shm may be small.
    for arg in ("--headless=new", "--no-sandbox", "--disable-dev-shm-usage", "--disable-gpu", f"--window-size={width},{height}"):
        options.add_argument(arg)
    options.set_capability("goog:loggingPrefs", {"browser": "SEVERE"})  # the page's own errors, for failures
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    except pytest.fail.Exception as exc:
        first, newline, rest = str(exc.msg).partition("\n")
        pytest.fail(f"{first} [{page_state(driver)}{'; ' + said if (said := context()) else ''}]{newline}{rest}")
    finally:
        driver.quit()


# What the page of `kvmlab web` keeps for its tests: where it is, and its timings (not the terminal or noVNC objects).
PAGE_STATE = """
const title = document.getElementById('title');
const k = window.kvmlab;
return JSON.stringify({title: title ? title.textContent : null, kvmlab: k ? {ready: k.ready, vnc: k.vnc, times: k.times} : null});
"""


def page_state(driver) -> str:
    """One line: the page's address, its heading and kvmlab state, and the browser's last errors."""
    from selenium.common.exceptions import WebDriverException

    try:
        state = driver.execute_script(PAGE_STATE)
        errors = browser_errors(driver)[-3:]
    except WebDriverException as exc:
        return f"the page could not be read: {exc.msg}"
    url = driver.current_url.split("?")[0]
    return f"page {url} {state}; browser errors: {errors or 'none'}"


def browser_errors(driver) -> list[str]:
    """Every error the browser logged so far (ChromeDriver hands each out once: keep them on the driver)."""
    seen = driver.__dict__.setdefault("kvmlab_errors", [])
    seen.extend(entry["message"] for entry in driver.get_log("browser"))
    return seen


def open_page(driver, url: str, what: str, ready: str, timeout: float = 90.0, attempts: int = 3) -> None:
    """Load URL until the JavaScript expression READY is true (WHAT names it in a failure).

    Chromium aborts what it is loading, even from 127.0.0.1, with ERR_NETWORK_CHANGED whenever the
    host's interfaces change, as they do when another lab creates or removes its bridges; a page whose
    modules were aborted never runs. Such a load is made again; any other failure is the test's."""
    for attempt in range(1, attempts + 1):
        before = len(browser_errors(driver))
        driver.get(url)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if driver.execute_script(f"return Boolean({ready})"):
                return
            if any("ERR_NETWORK_CHANGED" in e for e in browser_errors(driver)[before:]):
                print(f"browser: load {attempt} of {url.split('?')[0]} aborted by a network change", file=sys.stderr)
                break
            time.sleep(0.5)
        else:
            pytest.fail(f"waited {timeout:.0f} s for {what} (load {attempt} of the page)")
    pytest.fail(f"{what}: the page was loaded {attempts} times, and the host's network changed under each load")


def wait_until(what: str, probe: Callable[[], object], timeout: float = 90.0, interval: float = 0.5) -> object:
    """PROBE's first true value within TIMEOUT, else a failure that says what was awaited and last seen."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"waited {timeout:.0f} s for {what}; last seen: {last!r}")
