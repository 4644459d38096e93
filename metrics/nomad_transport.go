package metrics

import (
	"net/http"
	"strconv"
	"strings"
	"time"
)

// NomadTransport wraps the HTTP transport of the Nomad API client so that every
// call to Nomad is counted and timed. Pass it as nomadbridge.Config.WrapTransport.
func NomadTransport(next http.RoundTripper) http.RoundTripper {
	return roundTripperFunc(func(req *http.Request) (*http.Response, error) {
		path := NomadPathPattern(req.URL.Path)
		start := time.Now()
		resp, err := next.RoundTrip(req)
		NomadRequestDuration.WithLabelValues(req.Method, path).Observe(time.Since(start).Seconds())
		code := "error"
		if err == nil {
			code = strconv.Itoa(resp.StatusCode)
		}
		NomadRequests.WithLabelValues(req.Method, path, code).Inc()
		if err != nil || (resp.StatusCode >= 400 && resp.StatusCode != http.StatusNotFound) {
			NomadRequestErrors.WithLabelValues(req.Method, path).Inc()
		}
		return resp, err
	})
}

type roundTripperFunc func(*http.Request) (*http.Response, error)

func (f roundTripperFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// idSegment tells, for Nomad API paths /v1/<kind>/<id>/..., which kinds carry an
// object ID (or name) in the next segment. Replacing it keeps the metric's label
// values few.
var idSegment = map[string]bool{
	"job": true, "allocation": true, "evaluation": true, "deployment": true,
	"node": true, "namespace": true,
}

// NomadPathPattern turns a Nomad API path into a label value with IDs replaced
// by ":id": /v1/job/runner-x/allocations → /v1/job/:id/allocations.
func NomadPathPattern(path string) string {
	seg := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(seg) >= 3 && seg[0] == "v1" && idSegment[seg[1]]:
		seg[2] = ":id"
	case len(seg) >= 4 && seg[0] == "v1" && seg[1] == "client" && seg[2] == "allocation":
		seg[3] = ":id"
	case len(seg) > 4:
		seg = append(seg[:4], "...")
	}
	return "/" + strings.Join(seg, "/")
}
