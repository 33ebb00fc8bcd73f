#!/usr/bin/env bash
# Build the mxbackup .deb from this source tree.
#
#   packaging/build-deb.sh [OUTDIR]        (default OUTDIR: dist/deb)
#
# Installs the build dependencies with apt-get when some are missing (needs root; run
# `apt-get update` rights), copies the source tree to a scratch directory (the working tree
# is never written to: no build/, no ../*.deb), runs `dpkg-buildpackage -us -uc -b` there and
# puts mxbackup_<version>_<arch>.deb (plus .buildinfo/.changes) in OUTDIR. Prints the .deb's
# path on the last line of stdout. pip needs access to PyPI (or the configured index).
set -euo pipefail

src=$(cd "$(dirname "$0")/.." && pwd)
out=${1:-$src/dist/deb}
mkdir -p "$out"
out=$(cd "$out" && pwd)

log() { echo "build-deb: $*" >&2; }

# A developer's or the Makefile's Python environment must not leak into the build.
unset PYTHONPATH PYTHONHOME VIRTUAL_ENV PIP_USER PIP_TARGET PIP_PREFIX
export DEBIAN_FRONTEND=noninteractive LC_ALL=C.UTF-8

# --- build dependencies -----------------------------------------------------------------
# What debian/control's Build-Depends names, plus the tools used here. build-essential (which
# dpkg-buildpackage checks for by default) is not needed: nothing is compiled, every binary
# comes as a wheel; hence dpkg-checkbuilddeps -I and dpkg-buildpackage -d below.
deps=(debhelper dpkg-dev python3 python3-venv ca-certificates tar)
missing=()
for p in "${deps[@]}"; do
    dpkg-query -W -f='${db:Status-Status}\n' "$p" 2>/dev/null | grep -qx installed \
        || missing+=("$p")
done
if [ ${#missing[@]} -gt 0 ]; then
    SUDO=""
    if [ "$(id -u)" != 0 ]; then
        if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then SUDO="sudo -n"
        else log "missing build dependencies: ${missing[*]} (run as root to install them)"; exit 1
        fi
    fi
    log "installing build dependencies: ${missing[*]}"
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi
(cd "$src" && dpkg-checkbuilddeps -I)

# --- a clean copy of the source tree ----------------------------------------------------
version=$(dpkg-parsechangelog -l "$src/debian/changelog" -S Version)
setup_version=$(sed -n 's/^version[[:space:]]*=[[:space:]]*//p' "$src/setup.cfg" | head -n1)
if [ -n "$setup_version" ] && [ "${version%%-*}" != "$setup_version" ]; then
    log "warning: debian/changelog says $version, setup.cfg says $setup_version" \
        "(add a changelog entry: dch -v $setup_version)"
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/mxbackup-deb.XXXXXX")
trap 'rm -rf "$work"' EXIT
tree="$work/mxbackup-$version"
mkdir -p "$tree"
if git -C "$src" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked files and untracked ones that are not ignored (work in progress included),
    # never .venv, spool/, caches or anything else .gitignore excludes.
    (cd "$src" && git ls-files -z --cached --others --exclude-standard) \
        | (cd "$src" && tar --null --files-from=- --ignore-failed-read -cf - 2>/dev/null) \
        | tar -xf - -C "$tree"
else
    tar -C "$src" -cf - --exclude-vcs --exclude=./.venv --exclude=./build --exclude=./dist \
        --exclude='*.egg-info' --exclude=__pycache__ --exclude=./spool --exclude=dropin.cache \
        --exclude=./.hypothesis --exclude=./.pytest_cache --exclude=./.ruff_cache . \
        | tar -xf - -C "$tree"
fi
for f in debian/rules debian/control packaging/constraints.txt packaging/make-etc-config.py \
         etc/mx.yaml setup.cfg; do
    [ -e "$tree/$f" ] || { log "source copy lacks $f"; exit 1; }
done

# --- build -------------------------------------------------------------------------------
log "building mxbackup $version in $tree"
(cd "$tree" && dpkg-buildpackage -us -uc -b -d) >&2
shopt -s nullglob
debs=("$work"/mxbackup_"$version"_*.deb)
[ ${#debs[@]} -eq 1 ] || { log "expected one .deb in $work, found ${#debs[@]}"; exit 1; }
cp "$work"/mxbackup_"$version"_*.{deb,buildinfo,changes} "$out"/
log "built $out/$(basename "${debs[0]}")"
echo "$out/$(basename "${debs[0]}")"
