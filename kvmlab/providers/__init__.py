"""Providers turn rendered XML into running objects. Only libvirt.py imports libvirt.

`connect()` is the one place that chooses a provider from a URI; everything else calls it.
"""

from __future__ import annotations

from kvmlab import settings
from kvmlab.errors import HarnessError
from kvmlab.providers.base import Provider

# libvirt URIs are DRIVER[+TRANSPORT]://[HOST]/PATH; kvmlab runs its VMs on these drivers.
LIBVIRT_DRIVERS = ("qemu", "test")  # test: libvirt's in-process driver, for unit tests
LIBVIRT_TRANSPORTS = ("", "ssh", "libssh", "libssh2", "unix", "tcp", "tls", "ext")


def connect(uri: str | None = None) -> Provider:
    """The provider for URI (default: settings.libvirt_uri(), i.e. $KVMLAB_URI or qemu:///system), connected."""
    uri = uri or settings.libvirt_uri()
    scheme, sep, _rest = uri.partition(":")
    driver, _plus, transport = scheme.partition("+")
    if sep and driver in LIBVIRT_DRIVERS and transport in LIBVIRT_TRANSPORTS:
        # Imported here so that commands that never touch a VM work without libvirt-python.
        from kvmlab.providers.libvirt import LibvirtProvider

        return LibvirtProvider(uri, reconnect_s=settings.libvirt_reconnect_s())
    raise HarnessError(
        f"no provider for URI '{uri}': kvmlab supports libvirt URIs of the qemu and test drivers"
        " (qemu:///system, qemu+ssh://HOST/system, test:///default); set KVMLAB_URI to one of them"
    )
