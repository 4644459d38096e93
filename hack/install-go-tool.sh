#!/usr/bin/env bash
# install-go-tool.sh NAME PACKAGE VERSION: `go install`s PACKAGE@VERSION into the
# tools cache as NAME-VERSION and links bin/NAME to it. A present binary is kept.
source "$(dirname "$0")/lib.sh"
name=$1 pkg=$2 version=$3

build() {
  local out; out=$(cached "$name" "$version")
  if [[ -x $out ]]; then return; fi
  log "installing $name $version"
  local work; work=$(new_workdir "$name")
  trap "rm -rf '$work'" RETURN
  GOBIN=$work go install "$pkg@$version"
  mv "$work/$(basename "${pkg%/v[0-9]*}")" "$out.tmp" 2>/dev/null || mv "$work"/* "$out.tmp"
  mv "$out.tmp" "$out"
}

with_lock "$name" build
link_into "$BIN_DIR" "$name" "$version"
