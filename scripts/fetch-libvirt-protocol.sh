#!/usr/bin/env bash
# Fetches the source of the libvirt that the peers run (Debian's source package, `apt-get source`)
# into a cache beside the tree, so the protocol generator can read libvirt's own definitions.
# libvirt is LGPL and this project is MIT: the source stays in the gitignored cache, never in git.
#
#   scripts/fetch-libvirt-protocol.sh [--print-dir]
#
# Prints the lines `LIBVIRT_SRC_DIR=...`, `REMOTE_PROTOCOL_X=...`, `VIRNET_PROTOCOL_X=...` and
# `ADMIN_PROTOCOL_X=...` (or only the directory with --print-dir). Needs root for the deb-src entry
# and `apt-get update` unless both are already in place; needs dpkg-dev for `apt-get source`.
# LIBVIRT_VERSION (default: the installed libvirt-daemon's, else 9.0.0-4+deb12u2) picks the version.
set -euo pipefail

repository_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cache_dir="${LIBVIRT_SRC_CACHE:-$repository_root/.cache/libvirt-src}"
deb_src_list=/etc/apt/sources.list.d/virtauth-deb-src.sources

version="${LIBVIRT_VERSION:-}"
if [[ -z $version ]]; then
  version="$(dpkg-query -W -f='${Version}' libvirt-daemon 2>/dev/null || true)"
  version="${version:-9.0.0-4+deb12u2}"
fi
upstream_version="${version#*:}"
upstream_version="${upstream_version%%-*}"
source_dir="$cache_dir/libvirt-$upstream_version"

print_paths() {
  if [[ ${1:-} == --print-dir ]]; then
    echo "$source_dir"
    return
  fi
  echo "LIBVIRT_SRC_DIR=$source_dir"
  echo "REMOTE_PROTOCOL_X=$source_dir/src/remote/remote_protocol.x"
  echo "VIRNET_PROTOCOL_X=$source_dir/src/rpc/virnetprotocol.x"
  echo "ADMIN_PROTOCOL_X=$source_dir/src/admin/admin_protocol.x"
}

# The generator reads the three protocol files and libvirt's public headers (flag and typed
# parameter constants the annotations name).
required=(src/remote/remote_protocol.x src/rpc/virnetprotocol.x src/admin/admin_protocol.x include/libvirt/libvirt.h)
complete() {
  local f
  for f in "${required[@]}"; do [[ -f $source_dir/$f ]] || return 1; done
}

if complete; then
  print_paths "$@"
  exit 0
fi

has_deb_src() {
  grep -rqsE '^(Types:.*deb-src|deb-src )' /etc/apt/sources.list /etc/apt/sources.list.d/ 2>/dev/null
}

if ! has_deb_src; then
  if [[ $(id -u) -ne 0 ]]; then
    echo "no deb-src entry in /etc/apt and not root: cannot add one to run 'apt-get source libvirt'" >&2
    exit 2
  fi
  # The same suites as the machine's binary entries, for source packages.
  cat >"$deb_src_list" <<'SOURCES'
Types: deb-src
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb-src
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SOURCES
  echo "added $deb_src_list" >&2
  apt-get update -o Acquire::Retries=3 >&2
fi

if ! command -v dpkg-source >/dev/null; then
  echo "dpkg-source is missing: install dpkg-dev (apt-get install -y dpkg-dev)" >&2
  exit 2
fi

mkdir -p "$cache_dir"
work="$(mktemp -d "$cache_dir/.fetch.XXXXXX")"
trap 'rm -rf "$work"' EXIT
# apt's sandbox user cannot write into a root-only cache; the download then runs as root (a warning).
(cd "$work" && apt-get source -o Acquire::Retries=3 "libvirt=$version" >&2)
unpacked="$(find "$work" -mindepth 1 -maxdepth 1 -type d -name 'libvirt-*' | head -n 1)"
if [[ -z $unpacked ]]; then
  echo "apt-get source libvirt=$version left no libvirt-* directory" >&2
  exit 1
fi
rm -rf "$source_dir"
mv "$unpacked" "$source_dir"
if ! complete; then
  echo "libvirt $version's source lacks one of: ${required[*]}" >&2
  exit 1
fi
print_paths "$@"
