#!/usr/bin/env bash
# Builds the Nomad agent of NOMAD_VERSION from the Go module proxy, for tests only
# (Nomad >= 1.7 is BUSL-1.1: we run it in tests and never ship it). The wrapper
# repeats Nomad's two non-local replaces and uses the pinned api pseudo-version
# instead of its ./api replace. It must not be `go mod tidy`ed: that fails, and
# `-e` silently upgrades otel.
source "$(dirname "$0")/lib.sh"

build() {
  local nomad; nomad=$(cached nomad "$NOMAD_VERSION")
  if [[ -x $nomad ]]; then return; fi
  log "building nomad $NOMAD_VERSION (cold: 4-7 min)"
  local work; work=$(new_workdir nomad)
  trap "rm -rf '$work'" RETURN
  cd "$work"
  cat >go.mod <<MOD
module nro.local/nomad-wrapper

go 1.26

require (
	github.com/hashicorp/nomad $NOMAD_VERSION
	github.com/hashicorp/nomad/api $NOMAD_API_VERSION
)

replace (
	github.com/Microsoft/go-winio => github.com/endocrimes/go-winio v0.4.13-0.20190628114223-fb47a8b41948
	github.com/hashicorp/hcl => github.com/hashicorp/hcl v1.0.1-nomad-1
)
MOD
  CGO_ENABLED=1 go build -mod=mod -trimpath -tags "codegen_generated hashicorpmetrics release" \
    -o "$nomad.tmp" github.com/hashicorp/nomad
  mv "$nomad.tmp" "$nomad"
}

with_lock nomad build
link_into "$BIN_DIR" nomad "$NOMAD_VERSION"
