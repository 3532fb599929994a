#!/bin/sh
# Fetch ONNX Runtime 1.21's C API headers (the oldest API we build against) from Debian's
# libonnxruntime-dev package, without touching the machine's apt configuration: a
# temporary sources list, lists dir and cache dir; the package is checked against its
# sha256 and unpacked with dpkg -x into DEST. Prints the include directory.
#
# usage: fetch-onnxruntime-headers.sh DEST
set -eu

DEST=$1
VERSION=1.21.0+dfsg-1
SHA256=14f7d959d5deacbcf1504830d4189f91fc67382b399ed9ae9d3aa9c4050ced08
INCLUDE="$DEST/usr/include/onnxruntime"

if [ -f "$INCLUDE/onnxruntime_c_api.h" ]; then
  echo "$INCLUDE"
  exit 0
fi
for tool in apt-get dpkg sha256sum; do
  command -v "$tool" >/dev/null 2>&1 || {
    echo "error: $tool not found; set ONNXRUNTIME_INCLUDE_DIR to a directory with onnxruntime_c_api.h (ONNX Runtime >= 1.21)" >&2
    exit 1
  }
done

# The Debian mirror the machine's own apt sources name (deb822 or one-line format).
MIRROR=$(cat /etc/apt/sources.list.d/*.sources /etc/apt/sources.list 2>/dev/null |
  sed -n -e 's/^URIs:[[:space:]]*\([^[:space:]]*\).*/\1/p' -e 's/^deb[[:space:]]\{1,\}\(\[[^]]*\][[:space:]]*\)\{0,1\}\([^[:space:]]*\).*/\2/p' |
  grep -v -e security -e '^file:' | head -n 1)
MIRROR=${MIRROR:-http://deb.debian.org/debian}

WORK=$(mktemp -d)
trap 'rm -rf "$WORK"' EXIT
mkdir -p "$WORK/lists/partial" "$WORK/cache/archives/partial"
echo "deb [trusted=yes] $MIRROR trixie main" >"$WORK/sources.list"
APT="-o Dir::Etc::SourceList=$WORK/sources.list -o Dir::Etc::SourceParts=/dev/null
     -o Dir::State::Lists=$WORK/lists -o Dir::Cache=$WORK/cache -o APT::Sandbox::User=root -q"
echo "fetching libonnxruntime-dev $VERSION from $MIRROR (ONNX Runtime C API headers)" >&2
# shellcheck disable=SC2086
apt-get $APT update >&2 || { echo "error: apt-get update against $MIRROR failed; set ONNXRUNTIME_INCLUDE_DIR" >&2; exit 1; }
# shellcheck disable=SC2086
(cd "$WORK" && apt-get $APT download "libonnxruntime-dev=$VERSION") >&2 ||
  { echo "error: could not download libonnxruntime-dev=$VERSION; set ONNXRUNTIME_INCLUDE_DIR" >&2; exit 1; }
DEB=$(ls "$WORK"/libonnxruntime-dev_*.deb)
echo "$SHA256  $DEB" | sha256sum -c --quiet - >&2 ||
  { echo "error: $DEB does not match its pinned sha256" >&2; exit 1; }
mkdir -p "$DEST.partial"
dpkg -x "$DEB" "$DEST.partial"
rm -rf "$DEST"
mv "$DEST.partial" "$DEST"
echo "$INCLUDE"
