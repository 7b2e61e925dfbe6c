#!/usr/bin/env bash
# A throwaway CA and the certificates to run dbmaint with TLS and mTLS on one machine (tests, trying it out):
#   ca.pem                       the CA every side trusts
#   manager.pem / manager.key    the manager's certificate, valid for localhost and 127.0.0.1
#   worker.pem / worker.key      a client certificate for a worker (mTLS)
#   cli.pem / cli.key            a client certificate for the dbmaint CLI (mTLS)
# Usage: docs/make-test-ca.sh [DIR]   (default ./tls). Keys are unencrypted: for tests only.
set -euo pipefail
dir=${1:-./tls}
mkdir -p "$dir"
cd "$dir"
days=30
openssl req -x509 -newkey rsa:2048 -nodes -days "$days" -subj "/CN=dbmaint test CA" \
  -keyout ca.key -out ca.pem 2>/dev/null
issue() {  # issue NAME SUBJECT EXTENSIONS
  openssl req -newkey rsa:2048 -nodes -subj "$2" -keyout "$1.key" -out "$1.csr" 2>/dev/null
  printf '%b' "$3" > "$1.ext"
  openssl x509 -req -in "$1.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days "$days" \
    -extfile "$1.ext" -out "$1.pem" 2>/dev/null
  rm -f "$1.csr" "$1.ext"
}
issue manager "/CN=localhost" "subjectAltName=DNS:localhost,IP:127.0.0.1\nextendedKeyUsage=serverAuth\n"
issue worker "/CN=dbmaint-worker" "extendedKeyUsage=clientAuth\n"
issue cli "/CN=dbmaint-cli" "extendedKeyUsage=clientAuth\n"
chmod 600 ./*.key
echo "made ca.pem, manager.pem/.key, worker.pem/.key, cli.pem/.key in $(pwd)"
