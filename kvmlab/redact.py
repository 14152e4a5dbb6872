"""Secrets never reach logs, errors or artifacts: private keys, cephx secrets, VNC and CHAP passwords are masked."""

from __future__ import annotations

import re

PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
CEPH_KEY = re.compile(r"\bAQ[A-Za-z0-9+/]{36}==")  # a cephx secret, as keyrings and `ceph auth` print it
# A password given as NAME=VALUE (targetcli, iscsid.conf), `-n NAME -v VALUE` (iscsiadm) or "NAME": "VALUE" (JSON).
PASSWORD_VALUE = re.compile(r"""(\b[\w.]*password[\w.]*(?:\s*=\s*|['"]?\s+-v\s+|"\s*:\s*)["']?)([^\s"',]+)""", re.I)
GRAPHICS_PASSWORD = re.compile(r"""(<graphics\b[^>]*?\bpasswd=)(['"])(.*?)\2""")  # a domain XML's VNC/SPICE password


def redact(text: str) -> str:
    text = GRAPHICS_PASSWORD.sub(r"\1\2(redacted)\2", text)
    text = PASSWORD_VALUE.sub(r"\1(redacted)", text)
    return CEPH_KEY.sub("<ceph key redacted>", PEM_BLOCK.sub("<private key redacted>", text))
