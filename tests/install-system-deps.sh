#!/usr/bin/env bash
# Debian packages the tests use as real peers: swaks (client), Postfix's smtp-sink/smtp-source,
# nmap (its smtp-open-relay script judges the relay policy in tests/test_relay_suite.py),
# redis-server (the shared state store's backend, started by tests/redisserver.py).
# Installs only what is missing; without root (and no sudo) the tests that need them skip.
set -u
missing=()
command -v swaks >/dev/null 2>&1 || missing+=(swaks)
command -v smtp-sink >/dev/null 2>&1 || [ -x /usr/sbin/smtp-sink ] || missing+=(postfix)
command -v openssl >/dev/null 2>&1 || missing+=(openssl)
command -v nmap >/dev/null 2>&1 || missing+=(nmap)
command -v redis-server >/dev/null 2>&1 || [ -x /usr/bin/redis-server ] || missing+=(redis-server)
command -v go >/dev/null 2>&1 || missing+=(golang-go)  # a Go TLS client (tests/e2e/test_tls_clients.py)
[ ${#missing[@]} -eq 0 ] && exit 0
SUDO=""
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"; else
    echo "install-system-deps: not root, skipping apt-get of ${missing[*]}" >&2; exit 0; fi
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq >/dev/null || true
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null \
  || echo "install-system-deps: apt-get install ${missing[*]} failed; dependent tests will skip" >&2
exit 0
