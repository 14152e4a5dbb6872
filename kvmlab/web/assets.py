"""The browser libraries of the web console, from the packages made for them: noVNC from Debian's
`novnc` package, xterm.js from npm's `@xterm/xterm` (Debian's libjs-xterm 3.8 ships no usable build),
fetched once with `npm pack` (which checks the registry's integrity hash) and cached."""

from __future__ import annotations

import shutil
import subprocess
import tarfile
import tempfile
from pathlib import Path

from kvmlab import settings
from kvmlab.errors import HarnessError

NOVNC_DIR = Path("/usr/share/novnc")
XTERM_PACKAGE = "@xterm/xterm@6.0.0"
STATIC_DIR = Path(__file__).parent / "static"


def novnc_dir() -> Path:
    if not (NOVNC_DIR / "core" / "rfb.js").is_file():
        raise HarnessError(
            f"noVNC is not installed ({NOVNC_DIR}/core/rfb.js is missing): apt-get install novnc (scripts/host-setup.sh does)"
        )
    return NOVNC_DIR


def xterm_dir() -> Path:
    """The unpacked npm package (lib/xterm.js, css/xterm.css), fetched on first use."""
    dest = settings.cache_dir() / "web" / XTERM_PACKAGE.replace("/", "-").lstrip("@")
    if (dest / "lib" / "xterm.js").is_file():
        return dest
    npm = shutil.which("npm")
    if not npm:
        raise HarnessError(f"the serial console page needs {XTERM_PACKAGE} from npm, and npm is not installed: apt-get install npm")
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=dest.parent) as tmp:
        done = subprocess.run([npm, "pack", XTERM_PACKAGE, "--pack-destination", tmp], capture_output=True, text=True, timeout=300)
        tarballs = list(Path(tmp).glob("*.tgz"))
        if done.returncode != 0 or not tarballs:
            raise HarnessError(f"npm pack {XTERM_PACKAGE} failed: {(done.stderr or done.stdout).strip()[-500:]}")
        unpacked = Path(tmp) / "unpacked"
        with tarfile.open(tarballs[0]) as tar:
            tar.extractall(unpacked, filter="data")
        try:
            (unpacked / "package").rename(dest)
        except OSError:
            if not (dest / "lib" / "xterm.js").is_file():  # another process unpacking it at the same time is fine
                raise
    return dest
