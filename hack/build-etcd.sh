#!/usr/bin/env bash
# Builds etcd of ETCD_VERSION from the Go module proxy (Debian's etcd is below the
# floor of kube-apiserver 1.37). The server module replaces its siblings with ../
# paths, so the wrapper pins each sibling to the same tag.
source "$(dirname "$0")/lib.sh"

build() {
  local etcd; etcd=$(cached etcd "$ETCD_VERSION")
  if [[ -x $etcd ]]; then return; fi
  log "building etcd $ETCD_VERSION (about 1 min)"
  local work; work=$(new_workdir etcd)
  trap "rm -rf '$work'" RETURN
  cd "$work"
  go mod init nro.local/etcd-wrapper >/dev/null 2>&1
  {
    echo "require go.etcd.io/etcd/server/v3 $ETCD_VERSION"
    for m in api/v3 client/pkg/v3 client/v3 pkg/v3; do
      echo "replace go.etcd.io/etcd/$m => go.etcd.io/etcd/$m $ETCD_VERSION"
    done
    echo "tool go.etcd.io/etcd/server/v3"
  } >>go.mod
  go mod tidy >/dev/null
  CGO_ENABLED=0 go build -trimpath -ldflags '-s -w' -o "$etcd.tmp" go.etcd.io/etcd/server/v3
  mv "$etcd.tmp" "$etcd"
}

with_lock etcd build
link_into "$BIN_DIR/k8s" etcd "$ETCD_VERSION"
