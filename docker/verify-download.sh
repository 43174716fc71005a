#!/bin/sh
# verify-download.sh FILE NAME [VERSIONS_FILE]
#
# Checks FILE against the SHA-256 that VERSIONS_FILE (default: versions.env beside this script)
# records as NAME_SHA256. Refuses, with a message, a checksum that is missing, empty, malformed or
# different: the image never installs a download nobody has hashed. Used by the Dockerfile (and
# tested on local files by tests/image_static.rs).
set -eu

if [ "$#" -lt 2 ] || [ "$#" -gt 3 ]; then
    echo "usage: verify-download.sh FILE NAME [VERSIONS_FILE]" >&2
    exit 2
fi
file="$1"
name="$2"
versions="${3:-$(dirname "$0")/versions.env}"

if [ ! -f "$versions" ]; then
    echo "verify-download.sh: $versions not found" >&2
    exit 1
fi
expected="$(sed -n "s/^${name}_SHA256=//p" "$versions" | tail -n 1 | tr -d ' \r')"
if [ -z "$expected" ]; then
    echo "verify-download.sh: no checksum for $name in $versions (${name}_SHA256 is empty)." >&2
    echo "  Run docker/update-versions.sh where the network is open and commit versions.env;" >&2
    echo "  the image refuses downloads nobody has hashed." >&2
    exit 1
fi
if ! printf '%s' "$expected" | grep -Eq '^[0-9a-f]{64}$'; then
    echo "verify-download.sh: ${name}_SHA256 in $versions is not a SHA-256 (64 hex digits): $expected" >&2
    exit 1
fi
if [ ! -f "$file" ]; then
    echo "verify-download.sh: $file not found" >&2
    exit 1
fi
actual="$(sha256sum "$file" | cut -d' ' -f1)"
if [ "$actual" != "$expected" ]; then
    echo "verify-download.sh: checksum mismatch for $name ($file)" >&2
    echo "  expected $expected (from $versions)" >&2
    echo "  got      $actual" >&2
    echo "  The download changed or was tampered with; refusing it." >&2
    exit 1
fi
echo "verify-download.sh: $name ok ($actual)"
