"""Secrets never reach logs, errors or artifacts: private keys and cephx secrets are masked."""

from __future__ import annotations

import re

PEM_BLOCK = re.compile(r"-----BEGIN [A-Z ]*PRIVATE KEY-----.*?-----END [A-Z ]*PRIVATE KEY-----", re.S)
CEPH_KEY = re.compile(r"\bAQ[A-Za-z0-9+/]{36}==")  # a cephx secret, as keyrings and `ceph auth` print it


def redact(text: str) -> str:
    return CEPH_KEY.sub("<ceph key redacted>", PEM_BLOCK.sub("<private key redacted>", text))
