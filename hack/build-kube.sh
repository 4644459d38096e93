#!/usr/bin/env bash
# Builds kube-apiserver and kubectl of KUBE_VERSION from the Go module proxy.
# k8s.io/kubernetes cannot be `go install`ed (its go.mod replaces the staging modules
# with ./staging paths), so a throwaway wrapper module requires it and replaces each
# staging module with its published tag.
source "$(dirname "$0")/lib.sh"

build() {
  local apiserver kubectl
  apiserver=$(cached kube-apiserver "$KUBE_VERSION")
  kubectl=$(cached kubectl "$KUBE_VERSION")
  if [[ -x $apiserver && -x $kubectl ]]; then return; fi
  log "building kube-apiserver and kubectl $KUBE_VERSION (cold: 4-8 min)"
  local work; work=$(new_workdir kube)
  trap "rm -rf '$work'" RETURN
  cd "$work"
  go mod init nro.local/kube-wrapper >/dev/null 2>&1
  local gomod
  gomod=$(go mod download -json "k8s.io/kubernetes@$KUBE_VERSION" | sed -n 's/.*"GoMod": "\(.*\)",*/\1/p')
  {
    echo "require k8s.io/kubernetes $KUBE_VERSION"
    # Every ./staging replace of kubernetes' go.mod, except unpublished samples.
    sed -n 's#^[[:space:]]*\(k8s\.io/[^ ]*\) => \./staging/.*#\1#p' "$gomod" | grep -v '/sample-' |
      while read -r m; do echo "replace $m => $m $KUBE_STAGING_VERSION"; done
    echo "tool ("
    echo "  k8s.io/kubernetes/cmd/kube-apiserver"
    echo "  k8s.io/kubernetes/cmd/kubectl"
    echo ")"
  } >>go.mod
  go mod tidy >/dev/null
  local v=${KUBE_VERSION#v} ldflags
  ldflags="-s -w -X k8s.io/component-base/version.gitVersion=$KUBE_VERSION"
  ldflags+=" -X k8s.io/component-base/version.gitMajor=${v%%.*}"
  ldflags+=" -X k8s.io/component-base/version.gitMinor=$(cut -d. -f2 <<<"$v")"
  ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"
  mkdir -p out
  CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o out/ \
    k8s.io/kubernetes/cmd/kube-apiserver k8s.io/kubernetes/cmd/kubectl
  mv out/kube-apiserver "$apiserver.tmp" && mv "$apiserver.tmp" "$apiserver"
  mv out/kubectl "$kubectl.tmp" && mv "$kubectl.tmp" "$kubectl"
}

with_lock kube build
link_into "$BIN_DIR/k8s" kube-apiserver "$KUBE_VERSION"
link_into "$BIN_DIR/k8s" kubectl "$KUBE_VERSION"
link_into "$BIN_DIR" kubectl "$KUBE_VERSION"
