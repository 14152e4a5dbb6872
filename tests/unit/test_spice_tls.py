"""SPICE over TLS: qemu.conf read as libvirt reads it, scripts/spice-tls.sh's certificates, and a
handshake that trusts only the kvmlab CA."""

from __future__ import annotations

import socket
import ssl
import subprocess
import threading
from pathlib import Path

import pytest

from kvmlab import spice_tls

ROOT = Path(__file__).resolve().parents[2]


def test_cert_dir_follows_qemu_conf(tmp_path):
    conf = tmp_path / "qemu.conf"
    conf.write_text('#spice_tls = 1\n#spice_tls_x509_cert_dir = "/etc/pki/libvirt-spice"\n')
    assert spice_tls.cert_dir(conf) is None and "SPICE TLS off" in spice_tls.host_problem(conf)
    conf.write_text(conf.read_text() + 'default_tls_x509_cert_dir = "/srv/pki"\nspice_tls = 1\n')
    assert spice_tls.cert_dir(conf) == Path("/srv/pki")
    conf.write_text(conf.read_text() + f'spice_tls_x509_cert_dir = "{tmp_path}"\n')
    assert spice_tls.cert_dir(conf) == tmp_path
    assert "lacks ca-cert.pem, server-cert.pem, server-key.pem" in spice_tls.host_problem(conf)


@pytest.fixture(scope="module")
def certs(tmp_path_factory) -> Path:
    """scripts/spice-tls.sh's certificates, made in a scratch folder (qemu.conf untouched: it is only appended
    to when it lacks spice_tls = 1, so the script runs against a copy that has it)."""
    folder = tmp_path_factory.mktemp("spice-tls")
    conf = folder / "qemu.conf"
    conf.write_text("spice_tls = 1\n")
    script = (ROOT / "scripts" / "spice-tls.sh").read_text().replace("qemu_conf=/etc/libvirt/qemu.conf", f"qemu_conf={conf}")
    done = subprocess.run(
        ["bash", "-c", script],
        env={"KVMLAB_SPICE_TLS_DIR": str(folder / "tls"), "PATH": "/usr/bin:/bin:/usr/sbin:/sbin"},
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "", "qemu.conf already had spice_tls = 1: nothing to change"
    return folder / "tls"


def serve_once(folder: Path) -> int:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(folder / "server-cert.pem", folder / "server-key.pem")
    listener = socket.create_server(("127.0.0.1", 0))

    def accept() -> None:
        with listener:
            conn, _ = listener.accept()
            try:
                with context.wrap_socket(conn, server_side=True) as tls:
                    tls.recv(1)
            except (ssl.SSLError, OSError):
                pass

    threading.Thread(target=accept, daemon=True).start()
    return listener.getsockname()[1]


def test_handshake_trusts_the_kvmlab_ca_and_names_the_host(certs):
    assert (certs / "server-key.pem").stat().st_mode & 0o077 == 0o040, "the key is for root and QEMU's group only"
    assert not (certs / "ca-key.pem").exists(), "the CA's key is not kept"
    subject = spice_tls.handshake_subject("127.0.0.1", serve_once(certs), certs / "ca-cert.pem")
    assert subject == f"kvmlab SPICE {socket.gethostname()}"


def test_handshake_with_another_ca_fails(certs, tmp_path):
    other = tmp_path / "other-ca.pem"
    subprocess.run(
        [
            "openssl",
            "req",
            "-x509",
            "-newkey",
            "rsa:2048",
            "-nodes",
            "-days",
            "1",
            "-subj",
            "/CN=other",
            "-keyout",
            str(tmp_path / "k.pem"),
            "-out",
            str(other),
        ],
        check=True,
        capture_output=True,
    )
    with pytest.raises(ssl.SSLCertVerificationError):
        spice_tls.handshake_subject("127.0.0.1", serve_once(certs), other)
