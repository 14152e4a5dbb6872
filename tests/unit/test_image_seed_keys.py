"""Image recipe hashing, the cloud-init seed ISO, key files and redaction."""

from __future__ import annotations

import io
import stat

import pycdlib
import pytest

from kvmlab import images
from kvmlab.keys import new_keypair, write_private
from kvmlab.redact import redact
from kvmlab.seed import build_seed_iso


def test_recipe_digest_is_stable_and_follows_the_recipe():
    rec = images.recipe()
    assert images.recipe_digest(rec) == images.recipe_digest(dict(rec))
    changed = dict(rec, packages=[*rec["packages"], "htop"])
    assert images.recipe_digest(changed) != images.recipe_digest(rec)


def test_image_has_every_role_package_and_no_identity():
    for pkg in (
        "nfs-kernel-server",
        "targetcli-fb",
        "open-iscsi",
        "multipath-tools",
        "mdadm",
        "lvm2",
        "xfsprogs",
        "glusterfs-server",
        "glusterfs-client",
        "ceph-mon",
        "ceph-mgr",
        "ceph-osd",
        "ceph-common",
        "libvirt-daemon-system",
        "qemu-system-x86",
        "qemu-utils",
        "virtinst",
        "cloud-init",
        "openssh-server",
        "chrony",
        "python3",
        "linux-image-cloud-amd64",
    ):
        assert pkg in images.packages()
    script = images.customize_script()
    assert ': > "$R/etc/hostname"' in script and ': > "$R/etc/machine-id"' in script
    assert "passwd -l root" in script and "PasswordAuthentication no" in script


def test_seed_iso_is_labelled_cidata_with_the_files():
    data = build_seed_iso({"user-data": "#cloud-config\n", "meta-data": "instance-id: x\n", "network-config": "version: 2\n"})
    iso = pycdlib.PyCdlib()
    iso.open_fp(io.BytesIO(data))
    try:
        assert iso.pvd.volume_identifier.decode().strip() == "cidata"
        for name, text in (("user-data", "#cloud-config\n"), ("meta-data", "instance-id: x\n")):
            out = io.BytesIO()
            iso.get_file_from_iso_fp(out, rr_path=f"/{name}")
            assert out.getvalue().decode() == text
    finally:
        iso.close()


def test_private_key_file_is_0600(tmp_path):
    pair = new_keypair("unit")
    path = tmp_path / "d" / "id_ed25519"
    write_private(path, pair.private_openssh)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert pair.public_openssh.startswith("ssh-ed25519 ") and pair.public_openssh.endswith(" unit")


def test_redact_removes_cephx_secrets():
    keyring = "[client.KVMpool]\n\tkey = AQBkAi5nAAAAABAAoF9m8+qW0rMm4gu8s8Yo1w==\n"
    assert redact(keyring) == "[client.KVMpool]\n\tkey = <ceph key redacted>\n"


def test_redact_removes_private_keys():
    pair = new_keypair("unit")
    text = f"before\n{pair.private_openssh}\nafter"
    assert redact(text) == "before\n<private key redacted>\n\nafter"


def test_each_release_has_its_own_recipe_and_cache_folder():
    from kvmlab.errors import HarnessError

    bookworm, trixie = images.recipe("bookworm"), images.recipe("trixie")
    assert (bookworm["suite"], trixie["suite"]) == ("bookworm", "trixie") and images.recipe() == bookworm
    assert images.cached_image("trixie").directory != images.cached_image().directory
    assert images.current_digests() == {images.recipe_digest(release="bookworm"), images.recipe_digest(release="trixie")}
    with pytest.raises(HarnessError, match="no image recipe for Debian release 'sid': kvmlab builds bookworm, trixie"):
        images.recipe("sid")
