#!/usr/bin/env bash
# The .deb under a real systemd: boot a minimal Debian in systemd-nspawn, install the package,
# and exercise the unit as shipped (issue 15/16): start, SMTP with STARTTLS on port 25, delivery
# over verified STARTTLS, reload, crash-restart (kill -9), a queue that survives the crash, stop;
# then probe the two settings the unit leaves out (MemoryDenyWriteExecute=, PrivateUsers=).
#
#   packaging/systemd-check/run.sh DEB [ROOT]
#
# ROOT (default /var/lib/machines/mxbackup-check) is made with debootstrap from the configured
# Debian mirror when it does not exist yet (about a minute; reused afterwards). Needs root,
# systemd-nspawn (systemd-container), debootstrap and openssl; it installs the first two with
# apt-get when missing. The container has a private network (only its own loopback), so port
# 25 and 2526 are its own. Prints "ok: ..." per check and "FAIL: ..." for a failed one; exits 1
# if any failed, 2 when the container could not be made or booted.
set -uo pipefail

deb=$(realpath "${1:?usage: run.sh DEB [ROOT]}")
root=${2:-/var/lib/machines/mxbackup-check}
here=$(cd "$(dirname "$0")" && pwd)
suite=$(. /etc/os-release && echo "${VERSION_CODENAME:-bookworm}")
export LC_ALL=C.UTF-8 DEBIAN_FRONTEND=noninteractive
failed=0

log() { echo "systemd-check: $*" >&2; }
ok() { echo "ok: $*"; }
fail() { echo "FAIL: $*"; failed=1; }
die() { log "$*"; exit 2; }

[ "$(id -u)" = 0 ] || die "needs root"
need=()
command -v systemd-nspawn >/dev/null || need+=(systemd-container)
command -v debootstrap >/dev/null || need+=(debootstrap)
if [ ${#need[@]} -gt 0 ]; then
    apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null \
        || die "cannot install ${need[*]}"
fi
command -v openssl >/dev/null || die "openssl is missing"

# --- the tree --------------------------------------------------------------------------------
if [ ! -x "$root/usr/lib/systemd/systemd" ]; then
    mirror=$(apt-get indextargets --format '$(REPO_URI)' 'Created-By: Packages' 2>/dev/null \
        | grep -m1 -E '/debian/?$' || echo http://deb.debian.org/debian/)
    log "debootstrap $suite into $root from $mirror"
    mkdir -p "$(dirname "$root")"
    timeout 600 debootstrap --variant=minbase \
        --include=systemd,systemd-sysv,dbus,python3,adduser,ca-certificates,iproute2,procps \
        "$suite" "$root" "$mirror" >"$root.debootstrap.log" 2>&1 \
        || die "debootstrap failed (see $root.debootstrap.log)"
fi
echo mxbackup-check >"$root/etc/hostname"
# (minbase makes no /etc/hosts; the names of the test's two servers are local)
cat >"$root/etc/hosts" <<'EOF'
127.0.0.1 localhost primary.test mx2.example.net
::1 localhost ip6-localhost ip6-loopback
EOF
t=$root/srv/check
rm -rf "$t" && mkdir -p "$t"
cp "$deb" "$t/mxbackup.deb"
cp "$here"/primary.py "$here"/client.py "$here"/callbacks.py "$t/"
(
    cd "$t" || exit 1
    openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 30 \
        -subj "/CN=mxbackup check CA" 2>/dev/null
    for n in primary.test mx2.example.net; do
        openssl req -newkey rsa:2048 -nodes -keyout "$n.key" -out "$n.csr" -subj "/CN=$n" 2>/dev/null
        echo "subjectAltName=DNS:$n" >"$n.ext"
        openssl x509 -req -in "$n.csr" -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
            -extfile "$n.ext" -out "$n.pem" 2>/dev/null
    done
) || die "cannot make the test certificates"
chmod -R a+rX "$t"

# --- boot ------------------------------------------------------------------------------------
# --register=no --keep-unit: the host needs neither systemd-machined nor a system bus.
systemd-nspawn -D "$root" --boot --private-network --register=no --keep-unit \
    --console=passive -M mxbackup-check >"$root.console.log" 2>&1 &
nspawn=$!
leader=""
for _ in $(seq 300); do  # the container's PID 1, once it is systemd
    leader=$(ps -o pid= --ppid "$nspawn" | tr -d ' ' | head -n1)
    [ -n "$leader" ] && [ "$(cat "/proc/$leader/comm" 2>/dev/null)" = systemd ] && break
    leader=""
    sleep 0.1
done
[ -n "$leader" ] || die "systemd-nspawn did not start (see $root.console.log)"
inside() { nsenter -t "$leader" -a env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 "$@"; }
shutdown() {
    [ -n "$leader" ] || return
    inside systemctl poweroff >/dev/null 2>&1
    for _ in $(seq 100); do kill -0 "$nspawn" 2>/dev/null || return; sleep 0.2; done
    kill "$nspawn" 2>/dev/null
}
trap shutdown EXIT
state=""
for _ in $(seq 120); do
    state=$(inside systemctl is-system-running 2>/dev/null)
    case "$state" in running|degraded) break ;; esac
    sleep 0.5
done
case "$state" in
    running|degraded) ok "systemd booted in the container ($state)" ;;
    *) die "the container did not boot: '$state' (see $root.console.log)" ;;
esac

show() { inside systemctl show -p "$1" --value mxbackup; }
wait_for() {  # wait_for SECONDS COMMAND...: until it succeeds
    local end=$((SECONDS + $1)); shift
    until "$@" >/dev/null 2>&1; do [ $SECONDS -lt $end ] || return 1; sleep 0.5; done
}
# "grep ... >/dev/null", not "grep -q", after a pipe: with pipefail, grep -q stopping at the
# first match makes the writer die of SIGPIPE once its output is long, and the check fails.
listening() { inside ss -Hltn "sport = :$1" | grep LISTEN >/dev/null; }
listening25() { listening 25; }
received() { inside journalctl -u "$1" -o cat | grep -c '^RECEIVED tls=True'; }
delivered() { [ "$(received "$1")" -ge 1 ]; }
reloaded() {
    inside journalctl -u mxbackup -o cat \
        | grep 'configuration reloaded from /etc/mxbackup/mx.yaml: 2 routes' >/dev/null
}
restarted() { [ "$(show NRestarts)" = 1 ] && [ "$(show ActiveState)" = active ]; }

# --- install and start as shipped --------------------------------------------------------------
inside dpkg --purge mxbackup >/dev/null 2>&1
inside rm -rf /var/spool/mxbackup /etc/mxbackup
if inside dpkg -i /srv/check/mxbackup.deb >"$root.dpkg.log" 2>&1; then
    ok "dpkg -i"
else
    fail "dpkg -i (see $root.dpkg.log)"; exit 1
fi
if wait_for 20 listening 2525; then
    ok "started by the package as shipped: 127.0.0.1:2525, $(show ActiveState)"
else
    fail "the shipped configuration did not listen on 127.0.0.1:2525"
fi
inside systemd-analyze verify /lib/systemd/system/mxbackup.service \
    && ok "systemd-analyze verify: clean" || fail "systemd-analyze verify"
ok "$(inside systemd-analyze security mxbackup 2>&1 | grep 'Overall exposure')"

# --- the configuration of a live backup MX: port 25, STARTTLS, a verified TLS primary ---------
install -d -m 0750 "$root/etc/mxbackup/tls"
cp "$t/ca.pem" "$root/etc/mxbackup/tls/ca.pem"
cp "$t/mx2.example.net.pem" "$root/etc/mxbackup/tls/cert.pem"
cp "$t/mx2.example.net.key" "$root/etc/mxbackup/tls/key.pem"
chmod 0640 "$root"/etc/mxbackup/tls/*
inside chgrp -R mxbackup /etc/mxbackup/tls
inside /usr/lib/mxbackup/venv/bin/python -I -B -c '
import yaml
path = "/etc/mxbackup/mx.yaml"
data = yaml.safe_load(open(path))
data["server"].update(hostname="mx2.example.net", listen=["tcp:25:interface=127.0.0.1"],
    tls={"certificate": "/etc/mxbackup/tls/cert.pem", "key": "/etc/mxbackup/tls/key.pem"})
data["routes"] = [{"domain": "example.com", "target_host": "primary.test:2526",
    "security": "starttls_required", "verify_certificate": True,
    "ca_file": "/etc/mxbackup/tls/ca.pem"}]
open(path, "w").write(yaml.safe_dump(data, sort_keys=False))
'
inside mxbackup check-config /etc/mxbackup/mx.yaml >/dev/null || fail "check-config of the test file"
inside systemd-run -q --unit=primary python3 -u /srv/check/primary.py \
    /srv/check/primary.test.pem /srv/check/primary.test.key
inside systemctl restart mxbackup
if wait_for 20 listening25; then ok "port 25 bound by the unprivileged service"
else fail "port 25 not bound"; inside journalctl -u mxbackup -o cat | tail -5; fi
pid=$(show MainPID)
status=$(inside grep -E '^(Uid|CapEff|NoNewPrivs|Seccomp):' "/proc/$pid/status" | tr -s '\t' ' ')
uid=$(inside id -u mxbackup)
if grep -q "Uid: $uid $uid $uid $uid" <<<"$status" && grep -q 'CapEff: 0000000000000400' <<<"$status"
then ok "main process runs as mxbackup with CAP_NET_BIND_SERVICE only, seccomp on"
else fail "process credentials: $status"; fi

if inside python3 /srv/check/client.py /srv/check/ca.pem >/dev/null 2>&1; then
    ok "inbound STARTTLS (certificate verified by the client), message accepted"
else fail "inbound STARTTLS"; fi
if wait_for 20 delivered primary; then
    ok "delivered to the primary over verified STARTTLS"
else fail "no delivery over verified STARTTLS"; fi
inside test -f /var/spool/mxbackup/state.sqlite \
    && ok "state store (sqlite, WAL) written in the spool" || fail "no state.sqlite in the spool"
inside mxbackup pause example.com >/dev/null && inside test -f /var/spool/mxbackup/paused.json \
    && inside mxbackup resume example.com >/dev/null \
    && ok "control socket: pause/resume (paused.json written)" || fail "pause/resume"

# --- reload ----------------------------------------------------------------------------------
inside sed -i 's/^routes:/routes:\n- domain: example.org\n  target_host: primary.test:2526/' \
    /etc/mxbackup/mx.yaml
inside systemctl reload mxbackup
if wait_for 10 reloaded && [ "$(show MainPID)" = "$pid" ]; then
    ok "systemctl reload: 2 routes now, same process ($pid)"
else fail "reload"; inside journalctl -u mxbackup -o cat | tail -8; fi

# --- crash-restart, with mail queued ------------------------------------------------------------
inside systemctl stop primary
inside python3 /srv/check/client.py /srv/check/ca.pem >/dev/null 2>&1 || fail "second message"
inside kill -9 "$pid"
if wait_for 20 restarted && wait_for 20 listening25
then ok "kill -9 of the main process: Restart=on-failure brought it back ($(show MainPID))"
else fail "no restart after kill -9: $(show ActiveState) $(show NRestarts)"; fi
inside systemd-run -q --unit=primary-again python3 -u /srv/check/primary.py \
    /srv/check/primary.test.pem /srv/check/primary.test.key
sleep 1
inside mxbackup queue flush >/dev/null
if wait_for 20 delivered primary-again; then
    ok "the message queued before the crash was delivered after it"
else fail "the message queued before the crash was not delivered"; fi

# --- stop ------------------------------------------------------------------------------------
inside systemctl stop mxbackup
if [ "$(show Result)" = success ] && [ "$(show ActiveState)" = inactive ]; then
    ok "systemctl stop: clean (Result=success)"
else fail "stop: $(show Result) $(show ActiveState)"; fi

# --- the settings left out, measured ------------------------------------------------------------
if inside systemd-run -q --wait --pipe -p User=mxbackup -p MemoryDenyWriteExecute=yes \
        /usr/lib/mxbackup/venv/bin/python -I -B /srv/check/callbacks.py >"$root.mdwe.log" 2>&1
then
    ok "MemoryDenyWriteExecute=yes: pyOpenSSL callbacks work (the unit could set it)"
else
    ok "MemoryDenyWriteExecute=yes breaks pyOpenSSL callbacks (left out): $(grep -m1 FAILED "$root.mdwe.log")"
fi
inside mkdir -p /run/systemd/system/mxbackup.service.d
inside sh -c 'printf "[Service]\nPrivateUsers=yes\n" >/run/systemd/system/mxbackup.service.d/check.conf'
inside systemctl daemon-reload
inside systemctl start mxbackup
refused25() {
    inside journalctl -u mxbackup -o cat | grep "listen on 127.0.0.1:25: \[Errno 13\]" >/dev/null
}
if wait_for 20 refused25; then
    ok "PrivateUsers=yes: port 25 refused (EACCES), the service exits non-zero (left out)"
else
    ok "PrivateUsers=yes: port 25 was not refused here ($(show ActiveState))"
fi
inside systemctl stop mxbackup
inside rm -rf /run/systemd/system/mxbackup.service.d
inside systemctl daemon-reload
inside systemctl reset-failed mxbackup 2>/dev/null

inside dpkg --purge mxbackup >/dev/null 2>&1 && ok "dpkg --purge" || fail "dpkg --purge"
exit $failed
