"""SPICE over TLS on this host: where libvirt takes its certificates from (qemu.conf), and whether
a TLS port presents the kvmlab CA's server certificate. scripts/spice-tls.sh makes them."""

from __future__ import annotations

import re
import socket
import ssl
from pathlib import Path

QEMU_CONF = Path("/etc/libvirt/qemu.conf")
LIBVIRT_DEFAULT_TLS_DIR = Path("/etc/pki/qemu")  # qemu.conf's default_tls_x509_cert_dir
SETUP_HINT = "run scripts/host-setup.sh (its scripts/spice-tls.sh makes the host's kvmlab SPICE CA and sets qemu.conf)"


def _setting(text: str, key: str) -> str | None:
    found = re.findall(rf"^\s*{key}\s*=\s*(.+?)\s*$", text, re.MULTILINE)
    return found[-1].strip('"') if found else None


def cert_dir(qemu_conf: Path = QEMU_CONF) -> Path | None:
    """The folder libvirt gives QEMU for SPICE's TLS, or None when SPICE TLS is off on this host."""
    try:
        text = qemu_conf.read_text()
    except OSError:
        return None
    if _setting(text, "spice_tls") != "1":
        return None
    return Path(_setting(text, "spice_tls_x509_cert_dir") or _setting(text, "default_tls_x509_cert_dir") or LIBVIRT_DEFAULT_TLS_DIR)


def host_problem(qemu_conf: Path = QEMU_CONF) -> str | None:
    """Why this host cannot serve SPICE over TLS, or None."""
    folder = cert_dir(qemu_conf)
    if folder is None:
        return f"this host's libvirt has SPICE TLS off (no 'spice_tls = 1' in {qemu_conf}): {SETUP_HINT}"
    missing = [name for name in ("ca-cert.pem", "server-cert.pem", "server-key.pem") if not (folder / name).is_file()]
    if missing:
        return f"SPICE TLS folder {folder} lacks {', '.join(missing)}: {SETUP_HINT}"
    return None


def handshake_subject(host: str, port: int, ca_file: Path, timeout: float = 15.0) -> str:
    """A TLS handshake with the SPICE server at HOST:PORT that trusts only CA_FILE; the commonName it presents."""
    context = ssl.create_default_context(cafile=str(ca_file))
    with socket.create_connection((host, port), timeout=timeout) as raw, context.wrap_socket(raw, server_hostname=host) as tls:
        subject = dict(pair[0] for pair in tls.getpeercert()["subject"])
    return subject.get("commonName", "")
