"""Files of the iscsi-target role, rendered for labs/iscsi.yaml and labs/storage.yaml with a fixed placement."""

from __future__ import annotations

import ipaddress
import shutil
import subprocess
from dataclasses import replace
from pathlib import Path

import pytest

from kvmlab.loader import load_lab
from kvmlab.model import Lab, Placement
from kvmlab.roles.iscsi_target import files as iscsi_target
from kvmlab.roles.iscsi_target.steps import config_problems

ROOT = Path(__file__).resolve().parents[2]
PLACEMENT = Placement("0a1b2c", {"mgmt": ipaddress.IPv4Network("10.213.4.0/24"), "storage": ipaddress.IPv4Network("10.213.5.0/24")})


def _files(lab_file: str, node: str) -> dict[str, str]:
    lab = load_lab(ROOT / "labs" / lab_file)
    return iscsi_target.files(lab, PLACEMENT, lab.node(node))


def test_initiator_iqn_is_derived_from_lab_and_node():
    lab = load_lab(ROOT / "labs" / "storage.yaml")
    assert iscsi_target.initiator_iqn(lab, "hv2") == "iqn.2026-11.dev.kvmlab:storage-hv2"


def test_targetcli_batch_creates_backstores_portal_luns_and_masked_acls():
    batch = _files("storage.yaml", "iscsi1")["targetcli.batch"].splitlines()
    iqn, tpg = "iqn.2026-11.dev.kvmlab:storage", "/iscsi/iqn.2026-11.dev.kvmlab:storage/tpg1"
    storage_ip = "10.213.5.17"  # iscsi1 is the 8th node: .10 + 7
    assert batch[0] == "/ clearconfig confirm=True"
    for line in (
        "/backstores/fileio create name=lun0 file_or_dev=/var/lib/iscsi-disks/fileio/lun0.img write_back=false",
        "/backstores/block create name=lun1 dev=/dev/disk/by-id/virtio-block",
        "/backstores/block create name=lun2 dev=/dev/vg_lvm/lun2",
        f"/iscsi create {iqn}",
        f"{tpg}/portals create {storage_ip} 3260",
        f"{tpg}/luns create /backstores/block/lun2 lun=2 add_mapped_luns=false",
        f"{tpg}/acls create iqn.2026-11.dev.kvmlab:storage-hv2 add_mapped_luns=false",
        f"{tpg}/acls/iqn.2026-11.dev.kvmlab:storage-hv1 create mapped_lun=2 tpg_lun_or_backstore=2",
        f"{tpg}/acls/iqn.2026-11.dev.kvmlab:storage-hv2 create mapped_lun=0 tpg_lun_or_backstore=0",
    ):
        assert line in batch
    # hv2 is masked to lun0 only; the 0.0.0.0 portal goes before the real one is made.
    assert [ln for ln in batch if "storage-hv2 create mapped_lun" in ln] == [
        f"{tpg}/acls/iqn.2026-11.dev.kvmlab:storage-hv2 create mapped_lun=0 tpg_lun_or_backstore=0"
    ]
    assert batch.index(f"{tpg}/portals delete 0.0.0.0 3260") < batch.index(f"{tpg}/portals create {storage_ip} 3260")
    assert f"{tpg} set attribute generate_node_acls=0 demo_mode_write_protect=1 authentication=0" in batch
    assert batch[-2:] == ["/ saveconfig", "exit"]
    assert not [ln for ln in batch if "#" in ln or not ln.strip()]  # targetcli has no comments


def test_backends_script_makes_xfs_for_fileio_and_a_vg_for_lvm():
    script = _files("storage.yaml", "iscsi1")["prepare-backends.sh"]
    assert "mkfs.xfs -q -f /dev/disk/by-id/virtio-fileio" in script
    assert 'echo "UUID=$uuid /var/lib/iscsi-disks/fileio xfs defaults 0 2" >> /etc/fstab' in script
    assert "fallocate -l 512M /var/lib/iscsi-disks/fileio/lun0.img" in script
    assert "vgcreate -q vg_lvm /dev/disk/by-id/virtio-lvm" in script
    assert "lvcreate -q -y -W y -L 768M -n lun2 vg_lvm" in script
    assert "virtio-block" in script and "mkfs.xfs -q -f /dev/disk/by-id/virtio-block" not in script
    if shutil.which("sh"):
        subprocess.run(["sh", "-n"], input=script, text=True, check=True)


def test_restore_service_waits_for_the_backends():
    conf = _files("storage.yaml", "iscsi1")["targetctl-kvmlab.conf"]
    assert "RequiresMountsFor=/var/lib/iscsi-disks/fileio" in conf
    assert "ExecStartPre=/sbin/vgchange -ay vg_lvm" in conf


def test_hypervisor_with_acl_gets_initiator_name_and_iscsi_pool(tmp_path):
    files = _files("storage.yaml", "hv2")
    assert sorted(files) == ["initiatorname.iscsi", "pool-iscsi.xml"]
    assert "InitiatorName=iqn.2026-11.dev.kvmlab:storage-hv2\n" in files["initiatorname.iscsi"]
    pool = files["pool-iscsi.xml"]
    for line in (
        "<pool type='iscsi'>",
        "<host name='10.213.5.17' port='3260'/>",
        "<device path='iqn.2026-11.dev.kvmlab:storage'/>",
        "<iqn name='iqn.2026-11.dev.kvmlab:storage-hv2'/>",
        "<path>/dev/disk/by-path</path>",
    ):
        assert line in pool
    _validate(tmp_path, pool)


def test_nodes_without_the_role_or_an_acl_get_nothing():
    assert _files("storage.yaml", "nfs1") == {}
    assert _files("smoke.yaml", "hv1") == {}
    lab = load_lab(ROOT / "labs" / "iscsi.yaml")
    without_acl = _with_acls(lab, ())
    assert iscsi_target.files(without_acl, PLACEMENT, lab.node("hv1")) == {}


def test_saved_config_check_accepts_the_configuration_and_names_what_differs():
    lab = load_lab(ROOT / "labs" / "storage.yaml")
    saved = _saved_config(lab)
    assert config_problems(lab, PLACEMENT, saved) == []
    saved["targets"][0]["tpgs"][0]["node_acls"][1]["mapped_luns"].append({"index": 1, "tpg_lun": 1})
    saved["storage_objects"].pop()
    problems = config_problems(lab, PLACEMENT, saved)
    assert len(problems) == 2
    assert problems[0].startswith("backstores:") and problems[1].startswith("ACLs")


def _with_acls(lab: Lab, acls: tuple) -> Lab:
    return replace(lab, settings={**lab.settings, "iscsi-target": replace(lab.iscsi_target, acls=acls)})


def _saved_config(lab: Lab) -> dict:
    """What targetcli saveconfig writes for LAB's settings (the fields the role checks)."""
    stores = iscsi_target.backstores(lab.iscsi_target)
    index = {s.name: s.index for s in stores}
    return {
        "storage_objects": [{"plugin": s.plugin, "name": s.name, "dev": s.path} for s in stores],
        "targets": [
            {
                "wwn": lab.iscsi_target.iqn,
                "tpgs": [
                    {
                        "luns": [{"index": s.index, "storage_object": f"/backstores/{s.plugin}/{s.name}"} for s in stores],
                        "portals": [{"ip_address": iscsi_target.portal(lab, PLACEMENT), "port": 3260}],
                        "attributes": {"generate_node_acls": 0, "authentication": 0},
                        "node_acls": [
                            {
                                "node_wwn": iscsi_target.initiator_iqn(lab, a.initiator),
                                "mapped_luns": [{"index": index[n], "tpg_lun": index[n]} for n in a.luns],
                            }
                            for a in lab.iscsi_target.acls
                        ],
                    }
                ],
            }
        ],
    }


def _validate(tmp_path: Path, xml: str) -> None:
    if not shutil.which("virt-xml-validate"):
        pytest.fail("virt-xml-validate is missing (apt install libvirt-clients)")
    path = tmp_path / "pool.xml"
    path.write_text(xml)
    result = subprocess.run(["virt-xml-validate", str(path), "storagepool"], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
