package nomadbridge

import (
	"context"
	"fmt"
	"sync"

	nomad "github.com/hashicorp/nomad/api"
)

// placement is where this client puts jobs that name no namespace, and the one
// region it talks to.
type placement struct {
	mu        sync.Mutex
	namespace string
	region    string
}

// Placement implements Client.
func (c *NomadClient) Placement(ctx context.Context) (namespace, region string, err error) {
	ctx, done := c.bound(ctx)
	defer done(&err)
	c.placement.mu.Lock()
	defer c.placement.mu.Unlock()
	namespace = c.placement.namespace
	if namespace == "" {
		namespace = "default"
	}
	if c.placement.region == "" {
		// Not configured: the agent's own region, which it never changes.
		var self struct{ Config struct{ Region string } }
		q := (&nomad.QueryOptions{}).WithContext(ctx)
		if _, err := c.api.Raw().Query("/v1/agent/self", &self, q); err != nil {
			return "", "", fmt.Errorf("ask nomad for its region: %w", err)
		}
		c.placement.region = self.Config.Region
	}
	return namespace, c.placement.region, nil
}
