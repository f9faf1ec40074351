#!/usr/bin/env bash
# Generate the TLS certificates of a SuperLink and the authentication keys of its
# SuperNodes. Never commit the output (docker/certs/ is git-ignored).
#
#   docker/certs.sh [OUT_DIR] [NUM_NODES] [EXTRA_HOST ...]
#
# OUT_DIR      where to write (default: docker/certs next to this script)
# NUM_NODES    SuperNode key pairs to create (default: 2)
# EXTRA_HOST   more DNS names / IPs the SuperLink certificate must be valid for
#              (always: localhost, 127.0.0.1, superlink)
#
# Writes ca.crt/ca.key (the CA), server.pem/server.key (the SuperLink), and
# node-K (OpenSSH ECDSA P-384 private key) + node-K.pub for K = 1..NUM_NODES.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:-$here/certs}"
nodes="${2:-2}"
shift $(( $# > 2 ? 2 : $# ))
case "$nodes" in ''|*[!0-9]*) echo "certs.sh: NUM_NODES must be a number, got '$nodes'" >&2; exit 2;; esac
command -v openssl >/dev/null || { echo "certs.sh: openssl not found" >&2; exit 2; }
command -v ssh-keygen >/dev/null || { echo "certs.sh: ssh-keygen not found" >&2; exit 2; }
mkdir -p "$out"
umask 077

san="DNS:localhost,IP:127.0.0.1,DNS:superlink"
for host in "$@"; do
  if [[ "$host" =~ ^[0-9.]+$ || "$host" == *:* ]]; then san="$san,IP:$host"; else san="$san,DNS:$host"; fi
done

openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -days 365 -nodes \
  -keyout "$out/ca.key" -out "$out/ca.crt" -subj "/CN=fcit-flower CA"
openssl req -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -sha256 -nodes \
  -keyout "$out/server.key" -out "$out/server.csr" -subj "/CN=superlink"
printf 'subjectAltName=%s\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' \
  "$san" > "$out/server.ext"
openssl x509 -req -sha256 -days 365 -in "$out/server.csr" -CA "$out/ca.crt" \
  -CAkey "$out/ca.key" -CAcreateserial -out "$out/server.pem" -extfile "$out/server.ext"
rm -f "$out/server.csr" "$out/server.ext" "$out/ca.srl"

for k in $(seq 1 "$nodes"); do
  rm -f "$out/node-$k" "$out/node-$k.pub"
  ssh-keygen -q -t ecdsa -b 384 -N "" -C "fcit-node-$k" -f "$out/node-$k"
done
chmod 644 "$out/ca.crt" "$out/server.pem"
for public in "$out"/node-*.pub; do [[ -e "$public" ]] && chmod 644 "$public"; done
echo "certs.sh: wrote CA, SuperLink certificate ($san) and $nodes node key pairs to $out"
