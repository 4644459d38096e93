package nomaddev

import "testing"

func TestPattern(t *testing.T) {
	for _, c := range []struct{ method, path, key, id string }{
		{"GET", "/v1/job/python-1/allocations", "GET /v1/job/:id/allocations", "python-1"},
		{"DELETE", "/v1/job/python-1", "DELETE /v1/job/:id", "python-1"},
		{"PUT", "/v1/jobs", "PUT /v1/jobs", ""},
		{"POST", "/v1/jobs/parse", "POST /v1/jobs/parse", ""},
		{"GET", "/v1/allocation/abc", "GET /v1/allocation/:id", "abc"},
		{"GET", "/v1/client/allocation/abc/exec", "GET /v1/client/allocation/:id/exec", "abc"},
		{"GET", "/v1/event/stream", "GET /v1/event/stream", ""},
	} {
		key, id := Pattern(c.method, c.path)
		if key != c.key || id != c.id {
			t.Errorf("Pattern(%s %s) = %q, %q; want %q, %q", c.method, c.path, key, id, c.key, c.id)
		}
	}
}
