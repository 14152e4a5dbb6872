"""Failover suites (OUTLINE 5.1, 5.3, 5.5, 5.6, 5.7): a fault injected from the host during writes, no acknowledged record lost.

Each test runs on the smallest lab that has its storage; the scenarios live in
kvmlab/failover.py, which find their nodes by role, so a bigger lab can
run them again. Every test restores what it broke and waits for the storage to
recover; `disposable_lab` then reverts the whole lab to its state before the test,
so that the tests after it do not depend on how well a recovery went.
"""

from __future__ import annotations

import re

import pytest

from kvmlab import failover as checks


def _report(record_property, facts: dict) -> None:
    for key, value in facts.items():
        record_property(key, value)
    print(facts)


@pytest.mark.lab("raid")
def test_raid10_member_disappears_spare_rebuilds_data_intact(disposable_lab, record_property):
    _report(record_property, checks.check_raid_rebuilds_onto_a_spare_when_a_member_disappears(disposable_lab))


@pytest.mark.lab("multipath")
def test_multipath_link_cut_io_continues_on_the_other_path(disposable_lab, record_property):
    _report(record_property, checks.check_multipath_survives_a_cut_link(disposable_lab))


@pytest.mark.lab("smoke")
def test_nfs_server_restart_under_a_hard_mount_loses_nothing(disposable_lab, record_property):
    _report(record_property, checks.check_nfs_hard_mount_rides_out_a_server_restart(disposable_lab))


@pytest.mark.slow
@pytest.mark.lab("gluster")
def test_gluster_mounted_server_powered_off_io_continues_heal_matches_bricks(disposable_lab, record_property):
    _report(record_property, checks.check_gluster_power_off_of_the_mounted_server(disposable_lab))


@pytest.mark.lab("gluster")
def test_gluster_brick_changed_behind_glusters_back_is_reported(disposable_lab):
    evidence = checks.check_gluster_divergent_brick_is_reported(disposable_lab)
    victim = disposable_lab.by_role("gluster")[1].name
    assert "replicas differ" in evidence and f"{victim}:" in evidence
    assert re.search(
        rf"^{victim}:\S+: 29/30 acknowledged records intact.*\n  record 5 \(acknowledged\) corrupt: sectors GX", evidence, re.M
    ), evidence
    print(evidence)


@pytest.mark.slow
@pytest.mark.lab("ceph")
def test_ceph_osd_node_down_io_continues_cluster_recovers(disposable_lab, record_property):
    _report(record_property, checks.check_ceph_io_goes_on_with_one_osd_node_down(disposable_lab))
