#!/usr/bin/env bash
# SPICE over TLS for kvmlab's nodes: a CA and a server certificate of this host, made here, and
# qemu.conf told to use them (libvirt reads SPICE's certificates from one folder for every domain,
# so they are per host, not per lab). Idempotent; prints "changed" when qemu.conf was changed and
# a running libvirtd must be restarted to read it. Called by host-setup.sh.
set -euo pipefail

dir=${KVMLAB_SPICE_TLS_DIR:-/var/lib/kvmlab/spice-tls}
qemu_conf=/etc/libvirt/qemu.conf

if [ ! -s "$dir/server-cert.pem" ] || [ ! -s "$dir/server-key.pem" ] || [ ! -s "$dir/ca-cert.pem" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  host=$(hostname)
  openssl req -x509 -newkey rsa:3072 -nodes -days 3650 -subj "/O=kvmlab/CN=kvmlab SPICE CA $host" \
    -keyout "$work/ca-key.pem" -out "$work/ca-cert.pem" 2>/dev/null
  openssl req -newkey rsa:3072 -nodes -subj "/O=kvmlab/CN=kvmlab SPICE $host" \
    -keyout "$work/server-key.pem" -out "$work/server.csr" 2>/dev/null
  printf 'subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\nextendedKeyUsage=serverAuth\n' > "$work/ext"
  openssl x509 -req -in "$work/server.csr" -CA "$work/ca-cert.pem" -CAkey "$work/ca-key.pem" -CAcreateserial \
    -days 3650 -extfile "$work/ext" -out "$work/server-cert.pem" 2>/dev/null
  install -d -m 0755 "$dir"
  install -m 0644 "$work/ca-cert.pem" "$work/server-cert.pem" "$dir/"
  # QEMU runs as libvirt-qemu and reads the key; nobody else may. The CA's key is thrown away:
  # nothing else is ever signed with it.
  install -m 0640 -g libvirt-qemu "$work/server-key.pem" "$dir/"
fi

if ! grep -Eq '^[[:space:]]*spice_tls[[:space:]]*=[[:space:]]*1' "$qemu_conf"; then
  printf '\n# kvmlab (scripts/spice-tls.sh): SPICE over TLS with this host'"'"'s kvmlab CA\nspice_tls = 1\nspice_tls_x509_cert_dir = "%s"\n' "$dir" >> "$qemu_conf"
  echo changed
fi
