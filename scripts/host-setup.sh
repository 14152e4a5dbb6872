#!/usr/bin/env bash
# Prepare a Debian 12 host for kvmlab: packages, daemons, device permissions.
# Idempotent; needs root. Used by `make deps` and by CI.
set -euo pipefail

PACKAGES=(
  qemu-system-x86 qemu-utils libvirt-daemon-system libvirt-clients libvirt-daemon-driver-qemu
  libvirt-dev pkg-config gcc python3-dev python3-venv mmdebstrap dnsmasq-base iptables
  libxml2-utils e2fsprogs openssh-client iproute2 graphviz
  # Reaps the QEMU processes libvirtd starts (scripts/start-libvirtd.sh says why).
  tini
  # `kvmlab web`: noVNC's browser library; its tests drive Debian's headless Chromium.
  novnc chromium chromium-driver openssl
)
# xterm.js comes from npm (`kvmlab web` fetches it once); the machine's Node.js may already bring npm.
command -v npm >/dev/null || PACKAGES+=(npm)

if [ "$(id -u)" -ne 0 ]; then
  echo "host-setup: run as root (it installs packages and starts libvirtd)" >&2
  exit 1
fi

missing=()
for p in "${PACKAGES[@]}"; do
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
  echo "host-setup: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -q
  apt-get install -y -q --no-install-recommends "${missing[@]}"
fi

# Debian's udev rule gives /dev/kvm to group kvm; without udev it stays root-only,
# and libvirt then re-probes QEMU for about a minute before every domain start.
if [ -c /dev/kvm ]; then
  chown root:kvm /dev/kvm
  chmod 0660 /dev/kvm
fi
# The network driver writes here even for networks without DHCP.
mkdir -p /var/lib/libvirt/dnsmasq

# SPICE over TLS (a node's `display: {spice: {tls: true}}`); a running libvirtd reads qemu.conf again.
if [ "$(bash "$(dirname "$0")/spice-tls.sh")" = changed ] && pgrep -x libvirtd >/dev/null; then
  echo "host-setup: restarting libvirtd for SPICE TLS (running domains live on)"
  pkill -x libvirtd
  for _ in $(seq 1 50); do pgrep -x libvirtd >/dev/null || break; sleep 0.2; done
fi

# No systemd as PID 1 here: start the daemons ourselves when they are not running.
bash "$(dirname "$0")/start-libvirtd.sh"
for _ in $(seq 1 50); do
  virsh -c qemu:///system version >/dev/null 2>&1 && break
  sleep 0.2
done
virsh -c qemu:///system version >/dev/null
echo "host-setup: libvirtd is answering"
