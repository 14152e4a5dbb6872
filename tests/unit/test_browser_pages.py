"""The browser tests' page loading (tests/lab/browser.py), against a stand-in for ChromeDriver."""

from __future__ import annotations

import pytest

from tests.lab.browser import open_page, page_state

ABORTED = "http://127.0.0.1:8000/novnc/core/base64.js - Failed to load resource: net::ERR_NETWORK_CHANGED"


class FakeDriver:
    """Each load runs the page's script, unless the host's network changed during that load."""

    current_url = "http://127.0.0.1:8000/?key=k"

    def __init__(self, aborted_loads: int) -> None:
        self.aborted_loads, self.loads, self.log, self.ran = aborted_loads, 0, [], False

    def get(self, url: str) -> None:
        self.loads += 1
        self.ran = self.loads > self.aborted_loads
        if not self.ran:
            self.log.append({"message": ABORTED})

    def get_log(self, kind: str) -> list[dict]:
        out, self.log = self.log, []
        return out

    def execute_script(self, script: str) -> object:
        if script.startswith("return Boolean"):
            return self.ran
        return '{"title":"kvmlab","kvmlab":null}'


def test_a_page_aborted_by_a_network_change_is_loaded_again():
    driver = FakeDriver(aborted_loads=2)
    open_page(driver, "http://127.0.0.1:8000/", "the page to run", "window.kvmlab", timeout=5)
    assert driver.loads == 3
    assert ABORTED in page_state(driver)  # the errors stay for a later failure's message


def test_a_page_aborted_at_every_load_fails_saying_so():
    driver = FakeDriver(aborted_loads=3)
    with pytest.raises(pytest.fail.Exception, match="loaded 3 times, and the host's network changed under each load"):
        open_page(driver, "http://127.0.0.1:8000/", "the page to run", "window.kvmlab", timeout=5)


def test_a_page_that_never_runs_for_another_reason_is_not_loaded_again():
    driver = FakeDriver(aborted_loads=0)
    driver.ran = False
    driver.get = lambda url: setattr(driver, "loads", driver.loads + 1)  # loads, but its script never runs
    with pytest.raises(pytest.fail.Exception, match=r"waited 1 s for the page to run \(load 1 of the page\)"):
        open_page(driver, "http://127.0.0.1:8000/", "the page to run", "window.kvmlab", timeout=1)
    assert driver.loads == 1
