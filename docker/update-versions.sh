#!/usr/bin/env bash
# Maintainer tool: downloads the pinned releases of docker/versions.env, hashes them, and writes
# the checksums (and the Forge commit of FORGE_BRANCH) back into that file. Run it where the
# network is open, review the diff, commit it. Nothing in the build or CI runs it.
#
#   docker/update-versions.sh                   # hash the versions written in versions.env
#   FILEBROWSER_VERSION=2.32.0 docker/update-versions.sh   # move one pin, then hash
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
file="$here/versions.env"

value() { sed -n "s/^$1=//p" "$file" | tail -n 1; }
filebrowser_version="${FILEBROWSER_VERSION:-$(value FILEBROWSER_VERSION)}"
logdy_version="${LOGDY_VERSION:-$(value LOGDY_VERSION)}"
forge_branch="${FORGE_BRANCH:-$(value FORGE_BRANCH)}"

work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

# The same URLs as the Dockerfile's.
hash_of() {
    curl -fsSL --retry 3 -o "$work/download" "$1"
    sha256sum "$work/download" | cut -d' ' -f1
}
filebrowser_sha="$(hash_of "https://github.com/filebrowser/filebrowser/releases/download/v${filebrowser_version}/linux-amd64-filebrowser.tar.gz")"
logdy_sha="$(hash_of "https://github.com/logdyhq/logdy-core/releases/download/v${logdy_version}/logdy_linux_amd64")"
forge_commit="$(git ls-remote https://github.com/lllyasviel/stable-diffusion-webui-forge.git "refs/heads/${forge_branch}" | cut -f1)"
if ! [[ "$forge_commit" =~ ^[0-9a-f]{40}$ ]]; then
    echo "update-versions.sh: no commit found for Forge branch ${forge_branch}" >&2
    exit 1
fi

set_value() {
    sed -i "s|^$1=.*|$1=$2|" "$file"
}
set_value FILEBROWSER_VERSION "$filebrowser_version"
set_value FILEBROWSER_SHA256 "$filebrowser_sha"
set_value LOGDY_VERSION "$logdy_version"
set_value LOGDY_SHA256 "$logdy_sha"
set_value FORGE_BRANCH "$forge_branch"
set_value FORGE_COMMIT "$forge_commit"
echo "updated $file:"
grep -E '^[A-Z_]+=' "$file"
