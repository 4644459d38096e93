package faults_test

import (
	"context"
	"sync"
	"testing"
	"time"

	nomad "github.com/hashicorp/nomad/api"
	. "github.com/onsi/ginkgo/v2"
	. "github.com/onsi/gomega"
	"github.com/onsi/gomega/gleak"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/config"
	logf "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	v1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/controllers"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/controlplane"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/fixtures"
	"github.com/nomad-runner-operator/nomad-runner-operator/test/nomaddev"
)

const instance = "faults-suite"

var (
	k8sClient client.Client
	restCfg   *rest.Config
	agent     *nomaddev.Agent
	nomadAPI  *nomad.Client
	bridge    *nomadbridge.NomadClient // the real one, for assertions
	regs      *ledger
)

func TestFaults(t *testing.T) {
	RegisterFailHandler(Fail)
	// What a restarted operator or Nomad usually takes to get somewhere;
	// waits that need longer (a full convergence) say so.
	fixtures.SetDefaultWaits(30 * time.Second)
	RunSpecs(t, "fault suite (real kube-apiserver, etcd and Nomad; managers killed, Nomad restarted)")
}

var _ = BeforeSuite(func(ctx context.Context) {
	logf.SetLogger(zap.New(zap.WriteTo(GinkgoWriter), zap.UseDevMode(true)))
	// Goroutines before anything of ours runs: after every manager, the control
	// plane and the agent are stopped, none of ours may remain (poseidon#429).
	snapshot := gleak.Goroutines()
	started := false
	DeferCleanup(func() {
		if !started {
			return // a failed start leaks envtest's own goroutines; nothing to learn
		}
		Eventually(gleak.Goroutines).WithTimeout(10 * time.Second).ShouldNot(gleak.HaveLeaked(snapshot,
			// Process-wide singletons of client-go/klog/zap and of net/http's
			// idle connections, started once and never stopped by design.
			gleak.IgnoringTopFunction("k8s.io/klog/v2.(*flushDaemon).run.func1"),
			gleak.IgnoringTopFunction("net/http.(*persistConn).readLoop"),
			gleak.IgnoringTopFunction("net/http.(*persistConn).writeLoop"),
			gleak.IgnoringTopFunction("internal/poll.runtime_pollWait"),
		))
	})

	var err error
	agent, err = nomaddev.Start(ctx, nomaddev.Options{})
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(agent.Stop)
	nomadAPI, err = agent.Client()
	Expect(err).NotTo(HaveOccurred())
	bridge, err = nomadbridge.NewClient(nomadAPI, instance)
	Expect(err).NotTo(HaveOccurred())
	regs = newLedger()

	cp, err := controlplane.Start()
	Expect(err).NotTo(HaveOccurred())
	DeferCleanup(cp.Stop)
	k8sClient, restCfg = cp.Client, cp.Config
	// The dev agent runs raw_exec only, which the built-in policy refuses.
	Expect(controlplane.AllowRawExec(context.Background(), k8sClient)).To(Succeed())
	started = true
}, NodeTimeout(600*time.Second))

// operator is one in-process manager running the whole operator over its own
// faultBridge. Kill cancels its context: whatever it was doing stops there,
// like a crashed pod (nothing is flushed or released on the way out).
type operator struct {
	name   string
	bridge *faultBridge
	mgr    manager.Manager
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
}

type operatorOptions struct {
	leaderElection bool
}

var (
	operatorsMu sync.Mutex
	operators   []*operator
)

func startOperator(name string, o operatorOptions, hooks ...func(*faultBridge)) *operator {
	GinkgoHelper()
	fb := &faultBridge{Client: bridge, ledger: regs}
	for _, h := range hooks {
		h(fb)
	}
	opts := ctrl.Options{
		Scheme:                 controlplane.Scheme(),
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		// Several managers live in this process over the suite (and two at once
		// for leader election): their controllers share names.
		Controller: config.Controller{SkipNameValidation: ptr.To(true)},
	}
	if o.leaderElection {
		opts.LeaderElection = true
		opts.LeaderElectionID = "faults.execution.nomadrunner.io"
		opts.LeaderElectionNamespace = "default"
		opts.LeaderElectionReleaseOnCancel = false // a killed leader does not hand over
		// Short enough for a quick handover, long enough that a loaded CI
		// machine does not lose the lease by itself (a shorter lease was lost
		// to CPU starvation alone).
		opts.LeaseDuration = ptr.To(10 * time.Second)
		opts.RenewDeadline = ptr.To(8 * time.Second)
		opts.RetryPeriod = ptr.To(time.Second)
	}
	cfg := rest.CopyConfig(restCfg)
	mgr, err := ctrl.NewManager(cfg, opts)
	Expect(err).NotTo(HaveOccurred())
	ctx, cancel := context.WithCancel(logf.IntoContext(context.Background(), logf.Log.WithName(name)))
	Expect(controllers.Setup(ctx, mgr, controllers.Options{
		Bridge:             fb,
		OrphanInterval:     2 * time.Second,
		NomadProbeInterval: 500 * time.Millisecond,
	})).To(Succeed())
	op := &operator{name: name, bridge: fb, mgr: mgr, cancel: cancel, done: make(chan error, 1)}
	go func() {
		defer GinkgoRecover()
		op.done <- mgr.Start(ctx)
	}()
	operatorsMu.Lock()
	operators = append(operators, op)
	operatorsMu.Unlock()
	return op
}

// kill cancels the manager (safe from inside a hook: it does not wait).
func (op *operator) kill() { op.once.Do(op.cancel) }

// stop kills the manager and waits until it has returned.
func (op *operator) stop() {
	GinkgoHelper()
	op.kill()
	Eventually(op.done, 30*time.Second).Should(Receive(BeNil()), "manager %s did not stop", op.name)
	op.done <- nil // so that stop can be called again
}

// waitDead waits until a hook killed the manager and it has returned.
func (op *operator) waitDead() {
	GinkgoHelper()
	Eventually(op.done, 120*time.Second).Should(Receive(), "manager %s was not killed", op.name)
	op.done <- nil
}

func stopOperators() {
	operatorsMu.Lock()
	ops := operators
	operators = nil
	operatorsMu.Unlock()
	for _, op := range ops {
		op.stop()
	}
}

// newNamespace makes a namespace for one spec; its cleanup deletes every
// environment in it (with a running operator, which purges the Nomad jobs),
// then stops every operator the spec started.
func newNamespace(ctx context.Context) string {
	GinkgoHelper()
	ns := fixtures.NewNamespace(ctx, Default, k8sClient, "faults-", nil)
	DeferCleanup(func(ctx context.Context) {
		defer stopOperators()
		operatorsMu.Lock()
		running := len(operators) > 0
		for _, op := range operators {
			op.bridge.set(func(b *faultBridge) {
				b.down, b.eventsBlocked, b.beforeRegister, b.afterRegister, b.beforePurge = false, false, nil, nil, nil
			})
		}
		operatorsMu.Unlock()
		if !running {
			return
		}
		// Claimed runners would keep their environments Terminating: end them.
		envs := &v1alpha1.ExecutionEnvironmentList{}
		Expect(k8sClient.List(ctx, envs, client.InNamespace(ns))).To(Succeed())
		for _, ee := range envs.Items {
			Expect(fixtures.DeleteEnvironment(ctx, k8sClient, ns, ee.Name)).To(Succeed())
		}
		Eventually(func(g Gomega) {
			g.Expect(fixtures.Runners(ctx, g, k8sClient, ns, "")).To(BeEmpty())
			g.Expect(fixtures.NomadJobs(ctx, g, bridge, ns, "")).To(BeEmpty())
		}).WithTimeout(60 * time.Second).WithPolling(500 * time.Millisecond).Should(Succeed())
	}, NodeTimeout(120*time.Second))
	return ns
}

func getEnv(ctx context.Context, g Gomega, ns, name string) *v1alpha1.ExecutionEnvironment {
	ee := &v1alpha1.ExecutionEnvironment{}
	g.Expect(k8sClient.Get(ctx, types.NamespacedName{Namespace: ns, Name: name}, ee)).To(Succeed())
	return ee
}

// converged waits for the invariants the operator keeps through every fault,
// and returns the idle runners:
//   - exactly idle Idle runners of the environment's current template hash,
//     each with a running allocation, and nothing Pending or Failed unclaimed;
//   - Nomad holds exactly one job per Runner of the namespace, and no job
//     without a Runner;
//   - no job was registered twice (Nomad job version 0, one successful
//     registration per job ID in the ledger of every manager);
//   - each claimed runner is untouched: same UID, claim, job and allocation,
//     still Claimed, and its job still runs that allocation.
func converged(ctx context.Context, ns, env string, idle int, claimed []v1alpha1.Runner) []v1alpha1.Runner {
	GinkgoHelper()
	var out []v1alpha1.Runner
	Eventually(func(g Gomega) {
		ee := getEnv(ctx, g, ns, env)
		all := fixtures.Runners(ctx, g, k8sClient, ns, "")
		out = fixtures.ByPhase(all, v1alpha1.RunnerIdle)
		g.Expect(out).To(HaveLen(idle))
		g.Expect(all).To(HaveLen(idle+len(claimed)), "runners besides the idle and claimed ones")
		for _, r := range out {
			g.Expect(r.Spec.TemplateHash).To(Equal(ee.Status.TemplateHash))
		}
		jobs := fixtures.NomadJobs(ctx, g, bridge, ns, "")
		g.Expect(jobs).To(HaveLen(len(all)), "Nomad jobs vs Runners")
		for _, r := range all {
			g.Expect(jobs).To(HaveKey(r.Annotations[v1alpha1.JobIDAnnotation]), "runner %s has no job", r.Name)
		}
		for id := range jobs {
			job, _, err := nomadAPI.Jobs().Info(id, nil)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(*job.Version).To(BeZero(), "job %s was registered more than once", id)
		}
		for _, c := range claimed {
			now := &v1alpha1.Runner{}
			g.Expect(k8sClient.Get(ctx, client.ObjectKeyFromObject(&c), now)).To(Succeed())
			g.Expect(now.UID).To(Equal(c.UID))
			g.Expect(now.Status.Phase).To(Equal(v1alpha1.RunnerClaimed))
			g.Expect(now.Status.Claim).To(Equal(c.Status.Claim))
			g.Expect(now.Status.AllocationID).To(Equal(c.Status.AllocationID))
			allocs, err := bridge.JobAllocations(ctx, "default", now.Status.NomadJobID)
			g.Expect(err).NotTo(HaveOccurred())
			g.Expect(allocs).To(HaveLen(1))
			g.Expect(allocs[0].ID).To(Equal(c.Status.AllocationID))
			g.Expect(allocs[0].ClientStatus).To(Equal(nomad.AllocClientStatusRunning))
		}
		g.Expect(meta.IsStatusConditionTrue(ee.Status.Conditions, v1alpha1.ReadyCondition)).To(BeTrue())
	}).WithTimeout(90 * time.Second).WithPolling(300 * time.Millisecond).Should(Succeed())
	_, perJob := regs.registrations(env + "-")
	for id, n := range perJob {
		Expect(n).To(Equal(1), "job %s registered %d times", id, n)
	}
	return out
}

// eventsFor lists the Events about one object (events.k8s.io/v1 as recorded).
func eventReasons(ctx context.Context, ns, name string) []string {
	list := &corev1.EventList{}
	if err := k8sClient.List(ctx, list, client.InNamespace(ns)); err != nil && !apierrors.IsNotFound(err) {
		return nil
	}
	var out []string
	for _, e := range list.Items {
		if e.InvolvedObject.Name == name {
			out = append(out, e.Reason)
		}
	}
	return out
}

func keyOf(o client.Object) client.ObjectKey { return client.ObjectKeyFromObject(o) }
