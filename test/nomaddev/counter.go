package nomaddev

import (
	"bytes"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httputil"
	"net/url"
	"sort"
	"strings"
	"sync"

	"github.com/nomad-runner-operator/nomad-runner-operator/metrics"
)

// Counter is an http.RoundTripper in front of a Nomad agent that counts every
// request by method and path pattern ("GET /v1/job/:id/allocations") and by the
// job or allocation it names, and can cut the event streams it carries (a forced
// reconnect). Give it to a Nomad API client (Client) or put it behind a reverse
// proxy (Proxy) for a separate process. Tests and benchmarks only.
type Counter struct {
	// Next does the requests (default http.DefaultTransport).
	Next http.RoundTripper

	mu      sync.Mutex
	byKey   map[string]int
	byID    map[string]map[string]int // ID → key → count
	streams map[*cutBody]struct{}
}

// NewCounter returns a Counter over http.DefaultTransport.
func NewCounter() *Counter {
	return &Counter{byKey: map[string]int{}, byID: map[string]map[string]int{}, streams: map[*cutBody]struct{}{}}
}

// RoundTrip implements http.RoundTripper.
func (c *Counter) RoundTrip(req *http.Request) (*http.Response, error) {
	key, id := Pattern(req.Method, req.URL.Path)
	if id == "" && req.URL.Path == "/v1/jobs" && req.Method != http.MethodGet && req.Body != nil {
		// A registration names its job in the body.
		body, err := io.ReadAll(req.Body)
		_ = req.Body.Close()
		if err != nil {
			return nil, err
		}
		req.Body = io.NopCloser(bytes.NewReader(body))
		var r struct{ Job struct{ ID string } }
		if json.Unmarshal(body, &r) == nil {
			id = r.Job.ID
		}
	}
	c.mu.Lock()
	c.byKey[key]++
	if id != "" {
		if c.byID[id] == nil {
			c.byID[id] = map[string]int{}
		}
		c.byID[id][key]++
	}
	c.mu.Unlock()
	next := c.Next
	if next == nil {
		next = http.DefaultTransport
	}
	resp, err := next.RoundTrip(req)
	if err != nil || req.URL.Path != "/v1/event/stream" {
		return resp, err
	}
	b := &cutBody{ReadCloser: resp.Body, c: c}
	c.mu.Lock()
	c.streams[b] = struct{}{}
	c.mu.Unlock()
	resp.Body = b
	return resp, nil
}

// Pattern names a Nomad API request with its IDs replaced by ":id", and returns
// the job or allocation ID it names, if any.
func Pattern(method, path string) (key, id string) {
	key = metrics.NomadPathPattern(path)
	named, orig := strings.Split(key, "/"), strings.Split("/"+strings.Trim(path, "/"), "/")
	for i := range named {
		if named[i] == ":id" && i < len(orig) {
			id = orig[i]
			break
		}
	}
	return method + " " + key, id
}

// Count is how many requests of a pattern went through.
func (c *Counter) Count(key string) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.byKey[key]
}

// Snapshot copies the counts by pattern.
func (c *Counter) Snapshot() map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]int, len(c.byKey))
	for k, v := range c.byKey {
		out[k] = v
	}
	return out
}

// ForID copies the counts of requests that named id (a job or an allocation).
func (c *Counter) ForID(id string) map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]int{}
	for k, v := range c.byID[id] {
		out[k] = v
	}
	return out
}

// IDs copies the counts of every ID (job or allocation) by pattern.
func (c *Counter) IDs() map[string]map[string]int {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := make(map[string]map[string]int, len(c.byID))
	for id, m := range c.byID {
		cp := make(map[string]int, len(m))
		for k, v := range m {
			cp[k] = v
		}
		out[id] = cp
	}
	return out
}

// Reset forgets every count.
func (c *Counter) Reset() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.byKey, c.byID = map[string]int{}, map[string]map[string]int{}
}

// CutStreams closes every open event stream, as a dropped connection would.
func (c *Counter) CutStreams() int {
	c.mu.Lock()
	bodies := make([]*cutBody, 0, len(c.streams))
	for b := range c.streams {
		bodies = append(bodies, b)
	}
	c.mu.Unlock()
	for _, b := range bodies {
		_ = b.Close()
	}
	return len(bodies)
}

// Diff returns after minus before for every pattern that changed, sorted.
func Diff(before, after map[string]int) []KeyCount {
	var out []KeyCount
	for k, v := range after {
		if d := v - before[k]; d != 0 {
			out = append(out, KeyCount{Key: k, Count: d})
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Key < out[j].Key })
	return out
}

// KeyCount is one line of a Diff.
type KeyCount struct {
	Key   string `json:"key"`
	Count int    `json:"count"`
}

// Proxy returns a reverse proxy to target that sends everything through the
// counter (event streams are flushed as they come).
func (c *Counter) Proxy(target string) (http.Handler, error) {
	u, err := url.Parse(target)
	if err != nil {
		return nil, err
	}
	p := httputil.NewSingleHostReverseProxy(u)
	p.Transport = c
	p.FlushInterval = -1
	return p, nil
}

type cutBody struct {
	io.ReadCloser
	c    *Counter
	once sync.Once
}

func (b *cutBody) Close() error {
	b.once.Do(func() {
		b.c.mu.Lock()
		delete(b.c.streams, b)
		b.c.mu.Unlock()
	})
	return b.ReadCloser.Close()
}
