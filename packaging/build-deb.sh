#!/bin/bash
# Build marketprism_<version>_<arch>.deb out of tree (what `make deb` runs).
#
#   packaging/build-deb.sh [--out DIR] [--version VERSION]
#
# --out      where the .deb lands (default build/deb); the build itself happens in DIR/work
#            and is removed afterwards (KEEP_WORK=1 keeps it).
# --version  add a changelog entry with this version on top of packaging/debian/changelog
#            (a local rebuild to test upgrades; the committed changelog is never touched).
#
# Why out of tree: dpkg-buildpackage writes next to debian/ and one level above the source
# directory; a symlinked debian/ -> packaging/debian collects build output inside the checkout.
# So the tracked (and untracked, not ignored) files are copied to DIR/work/src and
# packaging/debian is copied, not linked, to DIR/work/src/debian.
#
# Why a clean PATH: pybuild runs `python3` from PATH; on these machines a pyenv python3.11 comes
# first, and the package must be built for (and depend on) Debian's /usr/bin/python3.
#
# Debian 12 has no orjson, nats-py or picows: their wheels (orjson's and picows' manylinux ones
# for this architecture) are fetched from PyPI with pip (the venv's, or $PIP) into build/wheels
# (a cache shared by all builds) and handed to debian/rules in src/vendor/. ORJSON=orjson==V,
# NATS=nats-py==V and PICOWS=picows==V pick other versions; empty builds without them (the
# package then uses the json fallback, the aiohttp WebSocket fallback, and nats-bridge@ units
# cannot start).
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$REPO/build/deb
VERSION=
ORJSON=${ORJSON-orjson==3.13.0}
NATS=${NATS-nats-py==2.16.0}
PICOWS=${PICOWS-picows==1.9.0}
PIP=${PIP:-$REPO/.venv/bin/python -m pip}
WHEELS=$REPO/build/wheels

while [ $# -gt 0 ]; do
    case "$1" in
        --out) OUT=$(realpath -m "$2"); shift 2 ;;
        --version) VERSION=$2; shift 2 ;;
        *) echo "usage: $0 [--out DIR] [--version VERSION]" >&2; exit 2 ;;
    esac
done

log() { echo "[build-deb] $*" >&2; }

WORK=$OUT/work
rm -rf "$WORK"
mkdir -p "$WORK/src" "$WORK/home" "$WHEELS"

# --- the source tree -----------------------------------------------------------------------
git -C "$REPO" ls-files -z --cached --others --exclude-standard |
    while IFS= read -r -d '' f; do [ -e "$REPO/$f" ] && printf '%s\0' "$f"; done |
    tar -C "$REPO" --null -T - -cf - | tar -C "$WORK/src" -xf -
cp -a "$REPO/packaging/debian" "$WORK/src/debian"

if [ -n "$VERSION" ]; then
    maint=$(sed -n 's/^Maintainer: //p' "$WORK/src/debian/control")
    { printf 'marketprism (%s) unstable; urgency=medium\n\n' "$VERSION"
      printf '  * Local build of the working tree.\n\n'
      printf ' -- %s  %s\n\n' "$maint" "$(date -R)"
      cat "$REPO/packaging/debian/changelog"; } > "$WORK/src/debian/changelog"
fi

# --- the bundled compiled wheels (orjson, picows) -------------------------------------------
# bundle_manylinux NAME==VERSION: this architecture's CPython wheel into src/vendor/.
bundle_manylinux() {
    local spec=$1 name=${1%%==*} want=${1#*==} arch platform pyver wheel_glob
    arch=$(dpkg --print-architecture)
    case "$arch" in
        amd64) platform=manylinux_2_17_x86_64 ;;
        arm64) platform=manylinux_2_17_aarch64 ;;
        *) platform= ;;
    esac
    if [ -z "$platform" ]; then
        log "no $name wheel for $arch: the package will use its fallback"
        return
    fi
    pyver=$(/usr/bin/python3 -c 'import sys; print("%d.%d" % sys.version_info[:2])')
    # (unquoted below: a glob)
    wheel_glob="${name}-${want}-cp${pyver/./}-*${platform#manylinux_2_17_}*.whl"
    if ! ls "$WHEELS"/$wheel_glob >/dev/null 2>&1; then
        $PIP download --disable-pip-version-check --quiet --no-deps --only-binary=:all: \
            --platform "$platform" --implementation cp --python-version "$pyver" \
            --abi "cp${pyver/./}" --dest "$WHEELS" "$spec"
    fi
    mkdir -p "$WORK/src/vendor"
    cp "$WHEELS"/$wheel_glob "$WORK/src/vendor/"
}
[ -z "$ORJSON" ] || bundle_manylinux "$ORJSON"
[ -z "$PICOWS" ] || bundle_manylinux "$PICOWS"

# --- the bundled nats-py wheel (pure Python; the optional nats-bridge@ units need it) -------
if [ -n "$NATS" ]; then
    want=${NATS#nats-py==}
    if ! [ -e "$WHEELS/nats_py-$want-py3-none-any.whl" ]; then
        $PIP download --disable-pip-version-check --quiet --no-deps --only-binary=:all: \
            --dest "$WHEELS" "$NATS"
    fi
    mkdir -p "$WORK/src/vendor"
    cp "$WHEELS/nats_py-$want-py3-none-any.whl" "$WORK/src/vendor/"
fi

# --- build -----------------------------------------------------------------------------------
log "building in $WORK/src"
(cd "$WORK/src" &&
    env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME="$WORK/home" LC_ALL=C.UTF-8 \
        DEB_BUILD_OPTIONS="${DEB_BUILD_OPTIONS:-parallel=$(nproc)}" \
        dpkg-buildpackage -b -us -uc) > "$WORK/build.log" 2>&1 || {
    tail -n 60 "$WORK/build.log" >&2
    log "build failed; full log: $WORK/build.log"
    exit 1
}
rm -f "$OUT"/marketprism_*.deb "$OUT"/marketprism-dbgsym_*.deb
mv "$WORK"/marketprism_*.deb "$OUT/"
# The dbgsym package (extensions' debug symbols) is not shipped.
[ -n "${KEEP_WORK:-}" ] || rm -rf "$WORK"
ls "$OUT"/marketprism_*.deb
