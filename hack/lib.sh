#!/usr/bin/env bash
# Shared helpers for the hack/ build scripts. Source it; do not run it.
set -euo pipefail

HACK_DIR=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
ROOT_DIR=$(cd "$HACK_DIR/.." && pwd)
# shellcheck source=versions.env
source "$HACK_DIR/versions.env"

# Built binaries live in a per-user cache outside the clone, versioned by name, so a
# fresh clone on a reused machine costs nothing; bin/ in the clone only links to them.
TOOLS_CACHE=${NRO_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/nomad-runner-operator/tools}
BIN_DIR=${BIN_DIR:-$ROOT_DIR/bin}
mkdir -p "$TOOLS_CACHE" "$BIN_DIR"

export GOTOOLCHAIN=local
export GOFLAGS=-buildvcs=false

log() { printf '[hack] %s\n' "$*" >&2; }

# cached NAME VERSION: prints the cache path of NAME at VERSION.
cached() { printf '%s/%s-%s' "$TOOLS_CACHE" "$1" "$2"; }

# link_into DIR NAME VERSION: makes DIR/NAME point at the cached binary.
link_into() {
  mkdir -p "$1"
  ln -sfn "$(cached "$2" "$3")" "$1/$2"
}

# with_lock NAME CMD...: runs CMD under an exclusive lock, so two parallel
# `make` runs do not build the same binary at once.
with_lock() {
  local name=$1; shift
  exec {lockfd}>"$TOOLS_CACHE/.$name.lock"
  flock "$lockfd"
  "$@"
  exec {lockfd}>&-
}

# new_workdir NAME: a fresh throwaway module directory; the caller removes it (trap).
new_workdir() { mktemp -d "${TMPDIR:-/tmp}/nro-$1-XXXXXX"; }
