// Command manager runs nomad-runner-operator: it keeps pools of prewarmed runner
// jobs on Nomad for every ExecutionEnvironment, each mirrored by a Runner object.
package main

import (
	"context"
	"flag"
	"net/http"
	"os"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	utilruntime "k8s.io/apimachinery/pkg/util/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	executionv1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
	"github.com/nomad-runner-operator/nomad-runner-operator/controllers"
	"github.com/nomad-runner-operator/nomad-runner-operator/metrics"
	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

var (
	scheme   = runtime.NewScheme()
	setupLog = ctrl.Log.WithName("setup")
)

func init() {
	utilruntime.Must(clientgoscheme.AddToScheme(scheme))
	utilruntime.Must(executionv1alpha1.AddToScheme(scheme))
}

func main() {
	var (
		metricsAddr          string
		metricsSecure        bool
		metricsCertDir       string
		probeAddr            string
		pprofAddr            string
		enableLeaderElection bool
		leaderElectionNS     string
		nomadConfig          nomadbridge.Config
		defaultTemplateFile  string
		orphanInterval       time.Duration
		resyncPeriod         time.Duration
	)
	flag.StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address the metrics endpoint binds to; \"0\" disables it")
	flag.BoolVar(&metricsSecure, "metrics-secure", true,
		"serve metrics over HTTPS, only to callers the API server authenticates (TokenReview) and authorizes (get on the non-resource URL /metrics)")
	flag.StringVar(&metricsCertDir, "metrics-cert-dir", "",
		"folder with tls.crt and tls.key for the metrics endpoint; empty: a self-signed certificate made at start")
	flag.StringVar(&probeAddr, "health-probe-bind-address", ":8081", "address the health and readiness probes bind to")
	flag.StringVar(&pprofAddr, "pprof-bind-address", "0",
		"address Go's pprof endpoints (/debug/pprof/) bind to, for profiling; \"0\" (the default) disables them")
	flag.BoolVar(&enableLeaderElection, "leader-elect", false,
		"enable leader election, so that of several replicas only one reconciles at a time")
	flag.StringVar(&leaderElectionNS, "leader-election-namespace", "",
		"namespace of the leader election lease; needed when running outside the cluster (in-cluster default: the pod's namespace)")
	flag.StringVar(&defaultTemplateFile, "default-template-file", "",
		"file with the Nomad job (HCL or JSON) used for environments without spec.templateJob; default: a docker task kept alive with sleep infinity")
	flag.DurationVar(&orphanInterval, "orphan-collection-interval", 5*time.Minute,
		"how often Nomad jobs of this operator instance without a Runner are purged")
	flag.DurationVar(&resyncPeriod, "resync-period", 10*time.Minute,
		"how often every object is reconciled again as a safety net (jittered); Nomad's event stream drives the normal work")
	nomadConfig.BindFlags(flag.CommandLine)
	opts := zap.Options{Development: true}
	opts.BindFlags(flag.CommandLine)
	flag.Parse()
	ctrl.SetLogger(zap.New(zap.UseFlagOptions(&opts)))

	var defaultTemplate string
	if defaultTemplateFile != "" {
		b, err := os.ReadFile(defaultTemplateFile)
		if err != nil {
			setupLog.Error(err, "Failed to read the default template", "file", defaultTemplateFile)
			os.Exit(1)
		}
		defaultTemplate = string(b)
	}

	metricsOptions := metricsserver.Options{BindAddress: metricsAddr}
	if metricsSecure {
		metricsOptions.SecureServing = true
		metricsOptions.CertDir = metricsCertDir
		metricsOptions.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	mgr, err := ctrl.NewManager(ctrl.GetConfigOrDie(), ctrl.Options{
		Scheme:                  scheme,
		Cache:                   cache.Options{SyncPeriod: &resyncPeriod},
		Metrics:                 metricsOptions,
		HealthProbeBindAddress:  probeAddr,
		PprofBindAddress:        pprofAddr,
		LeaderElection:          enableLeaderElection,
		LeaderElectionID:        "5e1f2a7c.execution.nomadrunner.io",
		LeaderElectionNamespace: leaderElectionNS,
		// The manager ends only after the leader lease is given up, so a
		// replacement takes over at once instead of waiting out the lease.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		setupLog.Error(err, "Failed to create the manager")
		os.Exit(1)
	}

	ctx := ctrl.SetupSignalHandler()
	if nomadConfig.Instance == "" {
		// The manager's cache does not run yet: read the API server directly.
		namespace := controllers.OperatorNamespace()
		lookup, cancel := context.WithTimeout(ctx, 30*time.Second)
		nomadConfig.Instance, err = controllers.ResolveInstance(lookup, mgr.GetAPIReader(), "", namespace)
		cancel()
		if err != nil {
			setupLog.Error(err, "Failed to derive the operator instance")
			os.Exit(1)
		}
		setupLog.Info("Derived the operator instance from the cluster and namespace",
			"operatorInstance", nomadConfig.Instance, "namespace", namespace, "clusterNamespace", controllers.ClusterIdentityNamespace)
	}
	nomadConfig.WrapTransport = metrics.NomadTransport
	bridge, err := nomadbridge.NewClientFromConfig(nomadConfig)
	if err != nil {
		setupLog.Error(err, "Failed to configure the Nomad client")
		os.Exit(1)
	}

	if err := controllers.Setup(ctx, mgr, controllers.Options{
		Bridge: bridge, DefaultTemplate: defaultTemplate, OrphanInterval: orphanInterval,
	}); err != nil {
		setupLog.Error(err, "Failed to set up the controllers")
		os.Exit(1)
	}
	if err := mgr.AddHealthzCheck("healthz", healthz.Ping); err != nil {
		setupLog.Error(err, "Failed to set up the health check")
		os.Exit(1)
	}
	// Every replica is ready while Nomad answers the bridge's Ping, the check
	// the leader's health probe makes too.
	if err := mgr.AddReadyzCheck("nomad", func(req *http.Request) error { return bridge.Ping(req.Context()) }); err != nil {
		setupLog.Error(err, "Failed to set up the readiness check")
		os.Exit(1)
	}

	setupLog.Info("Starting the manager", "nomadAddress", bridge.API().Address(), "operatorInstance", bridge.Instance(),
		"nomadCallTimeout", nomadConfig.CallTimeout)
	if err := mgr.Start(ctx); err != nil {
		setupLog.Error(err, "Failed to run the manager")
		os.Exit(1)
	}
}
