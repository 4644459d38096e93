package claim_test

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
)

var update = flag.Bool("update", false, "rewrite the golden files in testdata from what the code sends")

// sampleToken is the token of config/samples/claim-patch.json.
const sampleToken = "3f1c2a8e-2b7d-4c1e-9d55-0c6b1f0e7a42"

// claimedAt is an hour east of UTC and not on a whole second: the patch must
// carry it in UTC, truncated, as the sample does (2026-01-01T00:00:00Z).
var claimedAt = time.Date(2026, 1, 1, 1, 0, 0, 700_000_000, time.FixedZone("CET", 3600))

// The bytes a claim sends are a contract with the API server's CEL rules and
// admission policies and with every client that claims without this package:
// a change to them must show up as a change to these files.
func TestPatchGolden(t *testing.T) {
	for _, tc := range []struct {
		golden string
		opts   claim.Options
	}{
		{"patch-default-timeout.golden.json", claim.Options{Holder: "alice", Token: sampleToken}},
		{"patch-no-timeout.golden.json", claim.Options{Holder: "alice", Token: sampleToken, InactivityTimeout: claim.NoInactivityTimeout}},
		{"patch-fractional-timeout.golden.json", claim.Options{Holder: "grader-7", Token: "t-1", InactivityTimeout: 2500 * time.Millisecond}},
	} {
		t.Run(tc.golden, func(t *testing.T) {
			got, err := claim.Patch(tc.opts, claimedAt)
			if err != nil {
				t.Fatal(err)
			}
			got = append(got, '\n')
			path := filepath.Join("testdata", tc.golden)
			if *update {
				if err := os.WriteFile(path, got, 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(path)
			if err != nil {
				t.Fatalf("%v (go test ./claim -run TestPatchGolden -update writes it)", err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("claim patch changed:\n got %s\nwant %s", got, want)
			}
		})
	}
}

// The sample users copy for kubectl is the patch this package sends.
func TestSampleClaimPatchIsWhatClaimSends(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join("..", "config", "samples", "claim-patch.json"))
	if err != nil {
		t.Fatal(err)
	}
	sent, err := claim.Patch(claim.Options{Holder: "alice", Token: sampleToken}, claimedAt)
	if err != nil {
		t.Fatal(err)
	}
	var sample, ours any
	if err := json.Unmarshal(raw, &sample); err != nil {
		t.Fatal(err)
	}
	if err := json.Unmarshal(sent, &ours); err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(sample, ours) {
		t.Errorf("config/samples/claim-patch.json differs from claim.Patch:\nsample %s\nsent   %s", raw, sent)
	}
}
