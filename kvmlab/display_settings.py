"""A node's `display:` entry of a lab file -> model.Display, with file:line errors.

display:
  video: virtio                          # vga | qxl | virtio | none
  vnc: {listen: 127.0.0.1, password: s3cret}   # or `vnc: true`
  spice: {tls: true}                     # or `spice: true`; TLS with the host's kvmlab CA
"""

from __future__ import annotations

import ipaddress

from yaml.nodes import Node

from kvmlab.model import VIDEO_MODELS, Display, Spice, Vnc
from kvmlab.yamlread import Reader, boolean, is_null, quote

VNC_PASSWORD_MAX = 8  # RFB's VNC authentication keys DES with the first 8 bytes; the rest would be ignored


def parse_display(reader: Reader, value: Node, node_name: str) -> Display:
    what = f"display of node '{node_name}'"
    fields = reader.mapping(value, what, ("video", "vnc", "spice"))
    vnc = reader.optional(fields, "vnc", lambda n: _vnc(reader, n, f"vnc of {what}"), None)
    spice = reader.optional(fields, "spice", lambda n: _spice(reader, n, f"spice of {what}"), None)
    # QXL is the device SPICE is made for; VGA the one any VNC client shows.
    default_video = "qxl" if spice else "vga"
    video = reader.optional(fields, "video", lambda n: reader.one_of(n, f"video of {what}", VIDEO_MODELS, "a video model"), default_video)
    if video == "none" and (vnc or spice):
        raise reader.fail(
            fields["video"][1], f"{what}: 'video: none' leaves nothing for vnc/spice to show; use vga, qxl or virtio, or drop vnc/spice"
        )
    return Display(video, vnc, spice)


def _enabled(reader: Reader, node: Node, what: str) -> bool | None:
    """`vnc: true` / `vnc: false` / `vnc:`; None when NODE is a mapping of options."""
    if is_null(node):
        return True
    if node.tag == "tag:yaml.org,2002:bool":
        return boolean(reader, node, what)
    return None


def _vnc(reader: Reader, node: Node, what: str) -> Vnc | None:
    enabled = _enabled(reader, node, what)
    if enabled is not None:
        return Vnc() if enabled else None
    fields = reader.mapping(node, what, ("listen", "password"))
    listen = reader.optional(fields, "listen", lambda n: _address(reader, n, f"listen of {what}"), Vnc.listen)
    password = reader.optional(fields, "password", lambda n: _vnc_password(reader, n, f"password of {what}"), "")
    return Vnc(listen, password)


def _spice(reader: Reader, node: Node, what: str) -> Spice | None:
    enabled = _enabled(reader, node, what)
    if enabled is not None:
        return Spice() if enabled else None
    fields = reader.mapping(node, what, ("listen", "tls"))
    listen = reader.optional(fields, "listen", lambda n: _address(reader, n, f"listen of {what}"), Spice.listen)
    return Spice(listen, reader.optional(fields, "tls", lambda n: boolean(reader, n, f"tls of {what}"), False))


def _address(reader: Reader, node: Node, what: str) -> str:
    text = reader.scalar_text(node, what)
    try:
        return str(ipaddress.IPv4Address(text))
    except ValueError:
        raise reader.fail(node, f"{what} '{quote(text)}' is not an IPv4 address: write e.g. 127.0.0.1 (this host only)") from None


def _vnc_password(reader: Reader, node: Node, what: str) -> str:
    text = reader.string(node, what)
    if not text or len(text) > VNC_PASSWORD_MAX or not text.isprintable() or not text.isascii():
        raise reader.fail(
            node,
            f"{what} must be 1 to {VNC_PASSWORD_MAX} printable ASCII characters "
            f"(VNC authentication ignores the rest), got {len(text)} characters",
        )
    return text
