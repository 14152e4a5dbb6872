#!/usr/bin/env python3
"""Benchmark `kvmlab web`: how soon a browser shows a node's screen and serial console.

    python bench/web_console.py [labs/display.yaml] [--rounds 5]

Brings the lab up (from its saved state when it has one), serves its page, and in Debian's
headless Chromium opens each node with VNC ROUNDS times: the time from asking for the page to
noVNC's connection, to the first frame that is not blank, and to the serial console's login
prompt after one Enter. Prints one table with the machine it ran on.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from lab_up import interruptible, print_table, timed

from kvmlab.lab import LabSession
from kvmlab.loader import load_lab
from kvmlab.providers import connect
from kvmlab.web.server import BackgroundWebConsole, WebConsole
from tests.lab.browser import chromium, wait_until
from tests.lab.test_web import CANVAS_PROBE, serial_text

ROOT = Path(__file__).resolve().parents[1]


def one_view(driver, url: str, node: str) -> tuple[float, float, float]:
    from selenium.webdriver.common.by import By

    start = time.monotonic()
    driver.get(f"{url}&node={node}")
    wait_until("noVNC to connect", lambda: driver.execute_script("return window.kvmlab && window.kvmlab.vnc") == "connected")
    connected = time.monotonic() - start
    wait_until("a frame that is not blank", lambda: (p := driver.execute_script(CANVAS_PROBE)) and p[0] > 0)
    frame = time.monotonic() - start
    wait_until("the serial console", lambda: driver.execute_script("return window.kvmlab.times.serialOpen"))
    driver.find_element(By.CSS_SELECTOR, "#serial .xterm-helper-textarea").send_keys("\n")
    wait_until("the login prompt", lambda: f"{node} login:" in serial_text(driver))
    return connected, frame, time.monotonic() - start


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("lab", nargs="?", default=str(ROOT / "labs" / "display.yaml"))
    ap.add_argument("--rounds", type=int, default=5)
    args = ap.parse_args()
    lab = load_lab(args.lab)
    provider = connect()
    rows: list[tuple[str, str]] = []
    try:
        with LabSession(lab, provider, progress=lambda line: sys.stderr.write(line + "\n")) as session:
            up_s, _ = timed(session.up)
            rows.append((f"lab {lab.name} up ({'restored' if session.restored else 'built'})", f"{up_s:.1f} s"))
            viewed = [n for n in lab.nodes if n.display and n.display.vnc and not n.display.vnc.password]
            with BackgroundWebConsole(WebConsole(session, log=lambda line: sys.stderr.write(line + "\n"))) as web, chromium() as driver:
                for node in viewed:
                    one_view(driver, web.url, node.name)  # the first opening sets the console password
                    figures = [one_view(driver, web.url, node.name) for _ in range(args.rounds)]
                    for i, what in enumerate(("noVNC connected", "first screen frame", "serial login prompt")):
                        values = [f[i] for f in figures]
                        spread = f"median {statistics.median(values):.2f} s, max {max(values):.2f} s"
                        rows.append((f"{node.name} ({node.display.video}): {what}", spread))
    finally:
        provider.close()
    print_table(f"web console ({args.lab}, {args.rounds} page loads per node, from asking for the page)", rows)
    return 0


if __name__ == "__main__":
    interruptible()
    sys.exit(main())
