package nomadbridge

import (
	"crypto/tls"
	"flag"
	"fmt"
	"net/http"
	"os"
	"strings"
	"time"

	nomad "github.com/hashicorp/nomad/api"
)

// Config is how the operator reaches Nomad. Unset fields fall back to Nomad's own
// environment variables (NOMAD_ADDR, NOMAD_TOKEN, NOMAD_NAMESPACE, NOMAD_REGION,
// NOMAD_CACERT, NOMAD_CAPATH, NOMAD_CLIENT_CERT, NOMAD_CLIENT_KEY,
// NOMAD_TLS_SERVER_NAME, NOMAD_SKIP_VERIFY), read by the api package's
// DefaultConfig, so the operator is configured like the nomad CLI.
type Config struct {
	Address       string
	Region        string
	Namespace     string
	TokenFile     string
	CACert        string
	ClientCert    string
	ClientKey     string
	TLSServerName string
	// Instance names this operator installation in every job's meta. Empty
	// on the command line means "derive it" (see DefaultInstance); the client
	// itself needs one.
	Instance string
	// CallTimeout bounds every call to Nomad but the event stream (0:
	// DefaultCallTimeout).
	CallTimeout time.Duration
	// EventStreamIdleTimeout ends an event stream on which nothing, not even
	// Nomad's heartbeat, arrived for that long (0: DefaultEventStreamIdleTimeout).
	EventStreamIdleTimeout time.Duration
	// WrapTransport, if set, wraps the HTTP transport of every call to Nomad
	// (the operator counts and times them; see package metrics).
	WrapTransport func(http.RoundTripper) http.RoundTripper
}

// BindFlags registers the Nomad flags on fs. Flags win over environment variables.
func (c *Config) BindFlags(fs *flag.FlagSet) {
	fs.StringVar(&c.Address, "nomad-address", "", "Nomad HTTP API address (default $NOMAD_ADDR, else http://127.0.0.1:4646)")
	fs.StringVar(&c.Region, "nomad-region", "", "Nomad region (default $NOMAD_REGION)")
	fs.StringVar(&c.Namespace, "nomad-namespace", "", "default Nomad namespace of runner jobs (default $NOMAD_NAMESPACE, else \"default\")")
	fs.StringVar(&c.TokenFile, "nomad-token-file", "", "file holding the Nomad ACL token (default $NOMAD_TOKEN); a file keeps the token out of the process list")
	fs.StringVar(&c.CACert, "nomad-ca-cert", "", "CA certificate to verify Nomad's TLS certificate (default $NOMAD_CACERT)")
	fs.StringVar(&c.ClientCert, "nomad-client-cert", "", "client certificate for mutual TLS with Nomad (default $NOMAD_CLIENT_CERT)")
	fs.StringVar(&c.ClientKey, "nomad-client-key", "", "client key for mutual TLS with Nomad (default $NOMAD_CLIENT_KEY)")
	fs.StringVar(&c.TLSServerName, "nomad-tls-server-name", "", "server name to verify Nomad's certificate against (default $NOMAD_TLS_SERVER_NAME)")
	fs.StringVar(&c.Instance, "operator-instance", "", "name of this operator installation, written into every Nomad job's meta; "+
		"operators sharing one Nomad cluster need different names, as each only touches its own jobs "+
		"(default <operator namespace>-<hash of the cluster's kube-system namespace UID>, unique per installation)")
	fs.DurationVar(&c.CallTimeout, "nomad-call-timeout", DefaultCallTimeout,
		"longest wait for any one Nomad call (the event stream instead reconnects when Nomad's heartbeats stop)")
}

// APIConfig merges the flags over Nomad's environment defaults.
func (c *Config) APIConfig() (*nomad.Config, error) {
	cfg := nomad.DefaultConfig()
	set := func(dst *string, v string) {
		if v != "" {
			*dst = v
		}
	}
	set(&cfg.Address, c.Address)
	set(&cfg.Region, c.Region)
	set(&cfg.Namespace, c.Namespace)
	if c.TokenFile != "" {
		b, err := os.ReadFile(c.TokenFile)
		if err != nil {
			return nil, fmt.Errorf("read nomad token file: %w", err)
		}
		cfg.SecretID = strings.TrimSpace(string(b))
	}
	if cfg.TLSConfig == nil {
		cfg.TLSConfig = &nomad.TLSConfig{}
	}
	set(&cfg.TLSConfig.CACert, c.CACert)
	set(&cfg.TLSConfig.ClientCert, c.ClientCert)
	set(&cfg.TLSConfig.ClientKey, c.ClientKey)
	set(&cfg.TLSConfig.TLSServerName, c.TLSServerName)
	if c.WrapTransport != nil {
		// The api package configures TLS only on a client it makes itself, so
		// make the same one here (HTTP/1.1: alloc exec needs it), then wrap it.
		transport := http.DefaultTransport.(*http.Transport).Clone()
		transport.ForceAttemptHTTP2 = false
		transport.TLSClientConfig = &tls.Config{MinVersion: tls.VersionTLS12}
		cfg.HttpClient = &http.Client{Transport: transport}
		if err := nomad.ConfigureTLS(cfg.HttpClient, cfg.TLSConfig); err != nil {
			return nil, fmt.Errorf("configure nomad TLS: %w", err)
		}
		cfg.HttpClient.Transport = c.WrapTransport(cfg.HttpClient.Transport)
	}
	return cfg, nil
}

// NewClientFromConfig builds the real Client from c.
func NewClientFromConfig(c Config) (*NomadClient, error) {
	cfg, err := c.APIConfig()
	if err != nil {
		return nil, err
	}
	api, err := nomad.NewClient(cfg)
	if err != nil {
		return nil, fmt.Errorf("create nomad client for %s: %w", cfg.Address, err)
	}
	client, err := NewClient(api, c.Instance)
	if err != nil {
		return nil, err
	}
	client.placement.namespace, client.placement.region = cfg.Namespace, cfg.Region
	if c.CallTimeout > 0 {
		client.callTimeout = c.CallTimeout
	}
	if c.EventStreamIdleTimeout > 0 {
		client.idleTimeout = c.EventStreamIdleTimeout
	}
	return client, nil
}
