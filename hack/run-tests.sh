#!/usr/bin/env bash
# run-tests.sh CMD...: runs the test command, then fails if it left anything behind:
# a process of a test binary from the tools cache, a Nomad task, or a test temp dir.
# The suites stop what they start even when a test fails; this proves it.
source "$(dirname "$0")/lib.sh"
set +e

ours() {
  # PIDs of processes running a cached test binary, or a Nomad task (raw_exec
  # tasks carry NOMAD_ALLOC_ID in their environment).
  local p exe
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    if [[ $exe == "$TOOLS_CACHE"/* ]] || tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -q '^NOMAD_ALLOC_ID='; then
      echo "${p#/proc/}"
    fi
  done | sort
}

tmp=${TMPDIR:-/tmp}
before=$(ours)
marker=$(mktemp "$tmp/nro-run-XXXXXX")
"$@"
rc=$?

sleep 1
leaked=$(comm -13 <(echo "$before") <(ours) | grep -v '^$')
if [[ -n $leaked ]]; then
  log "tests left processes behind:"
  for pid in $leaked; do ps -o pid=,args= -p "$pid" >&2; kill -9 "$pid" 2>/dev/null; done
  rc=1
fi
dirs=$(find "$tmp" -maxdepth 1 -name 'nro-test-*' -newer "$marker" 2>/dev/null)
if [[ -n $dirs ]]; then
  log "tests left temp dirs behind: $dirs"
  rm -rf $dirs
  rc=1
fi
rm -f "$marker"
exit $rc
