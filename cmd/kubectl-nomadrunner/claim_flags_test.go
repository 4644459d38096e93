package main

import (
	"strings"
	"testing"
	"time"

	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
)

func TestInactivityTimeoutFlag(t *testing.T) {
	for _, tc := range []struct {
		name string
		flag time.Duration
		want time.Duration
	}{
		{"the flag's default is the library's finite default", claim.DefaultInactivityTimeout, claim.DefaultInactivityTimeout},
		{"a chosen timeout", time.Hour, time.Hour},
		{"0 typed on purpose: never", 0, claim.NoInactivityTimeout},
		{"negative: never", -time.Second, claim.NoInactivityTimeout},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := inactivityTimeout(tc.flag); got != tc.want {
				t.Fatalf("inactivityTimeout(%v) = %v, want %v", tc.flag, got, tc.want)
			}
		})
	}
}

func TestClaimFlagDefaultsToAFiniteTimeout(t *testing.T) {
	// --help of a subcommand prints its flags; the timeout's default must be finite.
	var out, errOut strings.Builder
	code, err := run(t.Context(), []string{"claim", "-h"}, nil, &out, &errOut)
	if err == nil || code != 2 {
		t.Fatalf("claim -h: code %d, err %v; want the flag usage and code 2", code, err)
	}
	if want := "(default 10m0s)"; !strings.Contains(errOut.String(), want) {
		t.Fatalf("claim -h does not show %q:\n%s", want, errOut.String())
	}
	if want := "0 = never"; !strings.Contains(errOut.String(), want) {
		t.Fatalf("claim -h does not say how to opt out (%q):\n%s", want, errOut.String())
	}
}
