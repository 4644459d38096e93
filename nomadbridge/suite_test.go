package nomadbridge_test

import (
	"context"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

// The suite runs the bridge against a real Nomad dev agent (raw_exec), started
// once for all specs and stopped however they end.
var (
	agent    *nomaddev.Agent
	nomadAPI *nomad.Client
	bridge   *nomadbridge.NomadClient
)

func TestNomadBridge(t *testing.T) {
	RegisterFailHandler(Fail)
	// What the dev agent usually takes to place or stop a job; waits that
	// need longer say so.
	fixtures.SetDefaultWaits(30 * time.Second)
	RunSpecs(t, "nomadbridge integration suite (real Nomad agent)")
}

var _ = BeforeSuite(func(ctx context.Context) {
	var err error
	agent, err = nomaddev.Start(ctx, nomaddev.Options{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(agent.Stop)

	nomadAPI, err = agent.Client()
	Expect(err).NotTo(HaveOccurred())
	bridge, err = nomadbridge.NewClient(nomadAPI, "suite")
	Expect(err).NotTo(HaveOccurred())
}, NodeTimeout(90e9))
