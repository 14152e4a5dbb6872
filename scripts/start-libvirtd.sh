#!/usr/bin/env bash
# Start virtlogd and libvirtd where no init system does (no systemd as PID 1); a running one is left alone.
#
# libvirtd runs in the foreground under `tini -s`, a subreaper: libvirt daemonizes each QEMU, whose parent
# then becomes the nearest subreaper. Without one that is PID 1, and a PID 1 that reaps late (here: ~1.7 s)
# keeps every stopped QEMU a zombie that `virsh destroy` waits out: 12 nodes took 5.5 s to stop, not 0.4 s.
set -euo pipefail
log=/var/log/libvirt/kvmlab-libvirtd.log
mkdir -p "$(dirname "$log")"
pgrep -x virtlogd >/dev/null || virtlogd -d
if ! pgrep -x libvirtd >/dev/null; then
  if command -v tini >/dev/null; then
    setsid tini -s -- libvirtd >>"$log" 2>&1 </dev/null &
  else
    libvirtd -d
  fi
fi
