// Package controlplane starts a real kube-apiserver and etcd (controller-runtime's
// envtest) with this project's CRDs installed, from the binaries hack/ builds into
// bin/k8s. It is shared by every integration suite and the local quickstart.
package controlplane

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"time"

	"k8s.io/apimachinery/pkg/runtime"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/envtest"

	executionv1alpha1 "github.com/nomad-runner-operator/nomad-runner-operator/api/v1alpha1"
)

// New returns an envtest environment with our CRDs that refuses to start without
// them or without the binaries, so a broken checkout fails loudly.
func New() (*envtest.Environment, error) {
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	assets := os.Getenv("KUBEBUILDER_ASSETS")
	if assets == "" {
		assets = filepath.Join(root, "bin", "k8s")
	}
	if _, err := os.Stat(filepath.Join(assets, "kube-apiserver")); err != nil {
		return nil, fmt.Errorf("no kube-apiserver in %s: run `make test-bins` (or set KUBEBUILDER_ASSETS)", assets)
	}
	return &envtest.Environment{
		CRDDirectoryPaths:     []string{filepath.Join(root, "config", "crd", "bases")},
		ErrorIfCRDPathMissing: true,
		BinaryAssetsDirectory: assets,
		DownloadBinaryAssets:  false,
	}, nil
}

// ControlPlane is a started control plane: its environment, a client with our
// scheme, and a kubeconfig file for the real kubectl.
type ControlPlane struct {
	Env        *envtest.Environment
	Config     *rest.Config
	Client     client.Client
	Kubeconfig string

	removeKubeconfig func()
}

// Start starts kube-apiserver and etcd with our CRDs and the admission
// policies of config/policy, in effect. The caller must Stop it, also when a
// test fails.
func Start() (*ControlPlane, error) {
	env, err := New()
	if err != nil {
		return nil, err
	}
	cfg, err := env.Start()
	if err != nil {
		return nil, fmt.Errorf("start control plane: %w", err)
	}
	cp := &ControlPlane{Env: env, Config: cfg}
	if cp.Client, err = client.New(cfg, client.Options{Scheme: Scheme()}); err != nil {
		cp.Stop()
		return nil, err
	}
	if cp.Kubeconfig, cp.removeKubeconfig, err = AdminKubeconfig(env); err != nil {
		cp.Stop()
		return nil, err
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := InstallPolicies(ctx, env, cp.Client); err != nil {
		cp.Stop()
		return nil, err
	}
	return cp, nil
}

// Stop stops the control plane and removes the kubeconfig.
func (cp *ControlPlane) Stop() {
	if cp.removeKubeconfig != nil {
		cp.removeKubeconfig()
	}
	_ = cp.Env.Stop()
}

// Scheme holds the built-in kinds and ours.
func Scheme() *runtime.Scheme {
	s := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(s); err != nil {
		panic(err)
	}
	if err := executionv1alpha1.AddToScheme(s); err != nil {
		panic(err)
	}
	return s
}

// RepoRoot walks up from the working directory to the folder holding go.mod.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.mod")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("go.mod not found above the working directory")
		}
		dir = parent
	}
}

// AdminKubeconfig writes a kubeconfig of a system:masters user of a started
// environment, for the real kubectl, into a temp dir that cleanup removes.
func AdminKubeconfig(env *envtest.Environment) (path string, cleanup func(), err error) {
	admin, err := env.AddUser(envtest.User{Name: "admin", Groups: []string{"system:masters"}}, nil)
	if err != nil {
		return "", nil, fmt.Errorf("add admin user: %w", err)
	}
	raw, err := admin.KubeConfig()
	if err != nil {
		return "", nil, fmt.Errorf("render admin kubeconfig: %w", err)
	}
	dir, err := os.MkdirTemp("", "nro-test-kubeconfig-")
	if err != nil {
		return "", nil, err
	}
	cleanup = func() { _ = os.RemoveAll(dir) }
	path = filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(path, raw, 0o600); err != nil {
		cleanup()
		return "", nil, err
	}
	return path, cleanup, nil
}
