package controllers_test

import (
	"context"
	"crypto/tls"
	"io"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/nomad-runner-operator/nomad-runner-operator/claim"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
)

var _ = Describe("The metrics endpoint and probes", func() {
	var ns string
	BeforeEach(func(ctx context.Context) { ns = newNamespace(ctx) })

	It("serves the pool gauges, claims and Nomad calls to an authorized scraper only", func(ctx SpecContext) {
		By("getting tokens for a ServiceAccount bound to the metrics-reader role and for one that is not")
		Expect(operatorRBAC.MetricsReader).NotTo(BeEmpty(), "config/default renders a ClusterRole for /metrics")
		scraper, stranger := serviceAccountToken(ctx, ns, "scraper"), serviceAccountToken(ctx, ns, "stranger")
		binding := &rbacv1.ClusterRoleBinding{
			ObjectMeta: metav1.ObjectMeta{Name: "scraper-" + ns},
			RoleRef:    rbacv1.RoleRef{APIGroup: "rbac.authorization.k8s.io", Kind: "ClusterRole", Name: operatorRBAC.MetricsReader},
			Subjects:   []rbacv1.Subject{{Kind: "ServiceAccount", Namespace: ns, Name: "scraper"}},
		}
		Expect(k8sClient.Create(ctx, binding)).To(Succeed())
		DeferCleanup(func(ctx context.Context) { Expect(k8sClient.Delete(ctx, binding)).To(Succeed()) })

		// The manager may still be starting its metrics server when this spec runs first.
		Eventually(func(g Gomega) {
			code, _, err := scrape(ctx, "")
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(code).To(Equal(http.StatusUnauthorized), "no token")
		}).Should(Succeed())
		code, _, err := scrape(ctx, stranger)
		Expect(err).NotTo(HaveOccurred())
		Expect(code).To(Equal(http.StatusForbidden), "a token without the metrics-reader role")

		By("reading a pool of 2 Idle runners")
		fixtures.NewEnvironment(ctx, Default, k8sClient, ns, "metered", 2)
		expectIdlePool(ctx, ns, "metered", 2, 0)
		pool := map[string]string{"namespace": ns, "environment": "metered"}
		phase := func(p string) map[string]string { return with(pool, "phase", p) }
		Eventually(func(g Gomega) {
			text := scrapeOK(ctx, g, scraper)
			g.Expect(metricValue(text, "nomadrunner_pool_target", pool)).To(Equal(2.0))
			g.Expect(metricValue(text, "nomadrunner_runners", phase("Idle"))).To(Equal(2.0))
			g.Expect(metricValue(text, "nomadrunner_runners", phase("Pending"))).To(Equal(0.0))
			g.Expect(metricValue(text, "nomadrunner_runners", phase("Claimed"))).To(Equal(0.0))
			g.Expect(metricValue(text, "nomadrunner_runner_startup_seconds_count", pool)).To(BeNumerically(">=", 2))
			g.Expect(metricValue(text, "nomadrunner_nomad_event_stream_connected", nil)).To(Equal(1.0))
			g.Expect(metricValue(text, "nomadrunner_nomad_requests_total",
				map[string]string{"method": "PUT", "path": "/v1/jobs", "code": "200"})).To(BeNumerically(">=", 2))
		}).WithTimeout(20 * time.Second).Should(Succeed())

		By("claiming one: 1 Claimed, 1 claim counted, and the pool refilled to 2 Idle")
		_, err = claim.Claim(ctx, k8sClient, ns, "metered", claim.Options{Holder: "metrics", Token: "t-m"})
		Expect(err).NotTo(HaveOccurred())
		expectIdlePool(ctx, ns, "metered", 2, 1)
		Eventually(func(g Gomega) {
			text := scrapeOK(ctx, g, scraper)
			g.Expect(metricValue(text, "nomadrunner_runners", phase("Idle"))).To(Equal(2.0))
			g.Expect(metricValue(text, "nomadrunner_runners", phase("Claimed"))).To(Equal(1.0))
			g.Expect(metricValue(text, "nomadrunner_claims_total", pool)).To(Equal(1.0))
		}).WithTimeout(20 * time.Second).Should(Succeed())

		By("scaling to 0: the gauges say 0, the series stay")
		Expect(fixtures.SetPool(ctx, k8sClient, ns, "metered", 0)).To(Succeed())
		Eventually(func(g Gomega) {
			text := scrapeOK(ctx, g, scraper)
			g.Expect(metricValue(text, "nomadrunner_pool_target", pool)).To(Equal(0.0))
			g.Expect(metricValue(text, "nomadrunner_runners", phase("Idle"))).To(Equal(0.0))
			g.Expect(metricValue(text, "nomadrunner_runners", phase("Claimed"))).To(Equal(1.0))
		}).Should(Succeed())
	}, SpecTimeout(120*time.Second))

	It("is ready once the leader reads Nomad's event stream", func(ctx SpecContext) {
		// The spec may run first, while the manager is still starting.
		for _, path := range []string{"/healthz", "/readyz"} {
			Eventually(func(g Gomega) {
				resp, err := http.Get(probesURL + path + "?verbose")
				g.Expect(err).NotTo(HaveOccurred())
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				g.Expect(resp.StatusCode).To(Equal(http.StatusOK), "%s: %s", path, body)
				if path == "/readyz" {
					g.Expect(string(body)).To(ContainSubstring("[+]nomad-event-stream ok"))
				}
			}).Should(Succeed())
		}
	})
})

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{k: v}
	for mk, mv := range m {
		out[mk] = mv
	}
	return out
}

// serviceAccountToken creates a ServiceAccount and returns a token for it.
func serviceAccountToken(ctx context.Context, ns, name string) string {
	GinkgoHelper()
	cs, err := kubernetes.NewForConfig(testEnv.Config)
	Expect(err).NotTo(HaveOccurred())
	_, err = cs.CoreV1().ServiceAccounts(ns).Create(ctx, &corev1.ServiceAccount{ObjectMeta: metav1.ObjectMeta{Name: name}}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	tr, err := cs.CoreV1().ServiceAccounts(ns).CreateToken(ctx, name, &authenticationv1.TokenRequest{}, metav1.CreateOptions{})
	Expect(err).NotTo(HaveOccurred())
	return tr.Status.Token
}

// scrape GETs the metrics endpoint (its certificate is self-signed).
func scrape(ctx context.Context, token string) (int, string, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, metricsURL, nil)
	if err != nil {
		return 0, "", err
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	resp, err := c.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body), err
}

func scrapeOK(ctx context.Context, g Gomega, token string) string {
	code, text, err := scrape(ctx, token)
	g.Expect(err).NotTo(HaveOccurred())
	g.Expect(code).To(Equal(http.StatusOK), text)
	return text
}

var sampleLine = regexp.MustCompile(`^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})? (\S+)$`)
var labelPair = regexp.MustCompile(`([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"`)

// metricValue returns the value of the sample of name whose labels include
// labels, from Prometheus' text format; -1 if there is none.
func metricValue(text, name string, labels map[string]string) float64 {
	for _, line := range strings.Split(text, "\n") {
		m := sampleLine.FindStringSubmatch(line)
		if len(m) == 0 || m[1] != name {
			continue
		}
		have := map[string]string{}
		for _, p := range labelPair.FindAllStringSubmatch(m[2], -1) {
			have[p[1]] = p[2]
		}
		match := true
		for k, v := range labels {
			if have[k] != v {
				match = false
			}
		}
		if match {
			v, err := strconv.ParseFloat(m[3], 64)
			if err == nil {
				return v
			}
		}
	}
	return -1
}
