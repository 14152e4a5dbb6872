"""Pure renderers of every role's files, called by render.py with everything else.

Each module has `files(lab, placement, node) -> {name: text}` and returns the files
of the roles it knows that NODE needs (a storage module also renders the
hypervisors' pool and secret XML for its storage). Names land under
`roles/<node>/` in the rendered tree.
"""

from __future__ import annotations

from kvmlab.rolefiles import ceph, gluster, hypervisor, iscsi_target, local_raid, nfs_server

MODULES = (nfs_server, hypervisor, iscsi_target, gluster, ceph, local_raid)
