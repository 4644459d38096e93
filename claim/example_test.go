package claim_test

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
)

// A client claims a runner of the "python" environment, waiting up to 30
// seconds for one, keeps it alive while it works, and gives it back. The claim
// carries claim.DefaultInactivityTimeout: had this client died before Release,
// the operator would delete the runner once it went that long without a Renew.
func Example() {
	scheme := runtime.NewScheme()
	_ = v1alpha1.AddToScheme(scheme)
	c, err := client.New(ctrl.GetConfigOrDie(), client.Options{Scheme: scheme})
	if err != nil {
		panic(err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	rn, err := claim.Claim(ctx, c, "default", "python", claim.Options{
		Holder: "grader-7",
		Wait:   true,
		// InactivityTimeout: 0 is DefaultInactivityTimeout; set a duration to
		// choose another, or claim.NoInactivityTimeout to hold it until Release.
	})
	if errors.Is(err, claim.ErrNoIdleRunner) {
		fmt.Println("the pool is empty; try again later")
		return
	}
	if err != nil {
		panic(err)
	}
	token := rn.Status.Claim.Token
	fmt.Println("claimed", rn.Name, "Nomad allocation", rn.Status.AllocationID)

	// ... run code in the allocation (claim.Exec), renewing more often than
	// the inactivity timeout ...
	_ = claim.Renew(context.Background(), c, rn, token)

	if err := claim.Release(context.Background(), c, rn, token); err != nil {
		panic(err)
	}
}
