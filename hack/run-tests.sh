#!/usr/bin/env bash
# run-tests.sh CMD...: runs the test command, then fails if it left anything behind:
# a process of a test binary from the tools cache, a Nomad task, or a test temp dir.
# The suites stop what they start even when a test fails; this proves it.
source "$(dirname "$0")/lib.sh"
set +e

# The run's own temp dir. Every process the tests start inherits it (TMPDIR) or
# names it (data, cert and task dirs lie under it), so the checks below judge
# only this run's processes: a benchmark or another test run on the same
# machine starts the same binaries and Nomad tasks, and is none of ours.
tmp=${TMPDIR:-/tmp}
run_tmp=$(mktemp -d "$tmp/nro-run-XXXXXX")
export TMPDIR=$run_tmp

ours() {
  # PIDs of processes of this run running a cached test binary, or a Nomad
  # task (raw_exec tasks carry NOMAD_ALLOC_ID in their environment).
  local p exe
  for p in /proc/[0-9]*; do
    exe=$(readlink "$p/exe" 2>/dev/null) || continue
    if [[ $exe == "$TOOLS_CACHE"/* ]] || tr '\0' '\n' <"$p/environ" 2>/dev/null | grep -q '^NOMAD_ALLOC_ID='; then
      if grep -qsF "$run_tmp" "$p/environ" "$p/cmdline"; then
        echo "${p#/proc/}"
      fi
    fi
  done | sort
}

before=$(ours)
"$@"
rc=$?

sleep 1
leaked=$(comm -13 <(echo "$before") <(ours) | grep -v '^$')
if [[ -n $leaked ]]; then
  log "tests left processes behind:"
  for pid in $leaked; do ps -o pid=,args= -p "$pid" >&2; kill -9 "$pid" 2>/dev/null; done
  rc=1
fi
dirs=$(find "$run_tmp" -maxdepth 1 -name 'nro-test-*' 2>/dev/null)
if [[ -n $dirs ]]; then
  log "tests left temp dirs behind: $dirs"
  rc=1
fi
rm -rf "$run_tmp"
exit $rc
