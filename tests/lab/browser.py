"""Debian's headless Chromium driven through its ChromeDriver (packages chromium, chromium-driver)."""

from __future__ import annotations

import contextlib
import shutil
import time
from collections.abc import Callable, Iterator

import pytest

CHROMIUM, CHROMEDRIVER = "/usr/bin/chromium", "/usr/bin/chromedriver"


@contextlib.contextmanager
def chromium(width: int = 1400, height: int = 1000) -> Iterator[object]:
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
    driver = webdriver.Chrome(service=Service(CHROMEDRIVER), options=options)
    driver.set_script_timeout(60)
    try:
        yield driver
    finally:
        driver.quit()


def wait_until(what: str, probe: Callable[[], object], timeout: float = 90.0, interval: float = 0.5) -> object:
    """PROBE's first true value within TIMEOUT, else a failure that says what was awaited and last seen."""
    deadline, last = time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval)
    pytest.fail(f"waited {timeout:.0f} s for {what}; last seen: {last!r}")
