package nomadbridge_test

import (
	"flag"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/nomad-runner-operator/nomad-runner-operator/nomadbridge"
)

func TestConfigFlagsOverNomadEnvironment(t *testing.T) {
	t.Setenv("NOMAD_ADDR", "http://nomad.from.env:4646")
	t.Setenv("NOMAD_REGION", "env-region")
	t.Setenv("NOMAD_NAMESPACE", "env-ns")
	t.Setenv("NOMAD_TOKEN", "env-token")

	var c nomadbridge.Config
	fs := flag.NewFlagSet("t", flag.ContinueOnError)
	c.BindFlags(fs)
	if err := fs.Parse(nil); err != nil {
		t.Fatal(err)
	}
	cfg, err := c.APIConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "http://nomad.from.env:4646" || cfg.Region != "env-region" || cfg.Namespace != "env-ns" || cfg.SecretID != "env-token" {
		t.Errorf("environment not used: %+v", cfg)
	}
	if c.Instance != "" {
		t.Errorf("instance default = %q, want empty (derived per installation at start)", c.Instance)
	}
	if c.CallTimeout != nomadbridge.DefaultCallTimeout {
		t.Errorf("call timeout default = %s", c.CallTimeout)
	}

	token := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(token, []byte("file-token\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := fs.Parse([]string{"--nomad-address=https://nomad.flag:4646", "--nomad-namespace=flag-ns", "--nomad-token-file=" + token, "--operator-instance=prod", "--nomad-call-timeout=5s"}); err != nil {
		t.Fatal(err)
	}
	cfg, err = c.APIConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Address != "https://nomad.flag:4646" || cfg.Namespace != "flag-ns" || cfg.SecretID != "file-token" || cfg.Region != "env-region" {
		t.Errorf("flags did not win: %+v", cfg)
	}
	if c.CallTimeout != 5*time.Second {
		t.Errorf("call timeout = %s, want the flag's 5s", c.CallTimeout)
	}
	client, err := nomadbridge.NewClientFromConfig(c)
	if err != nil || client.Instance() != "prod" {
		t.Errorf("NewClientFromConfig = %v, %v", client, err)
	}

	c.TokenFile = filepath.Join(t.TempDir(), "missing")
	if _, err := c.APIConfig(); err == nil {
		t.Error("a missing token file must be an error")
	}
}
