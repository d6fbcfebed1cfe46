package client

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Environment variables read for unset Config fields: the same names and
// defaults as the kratos v0.6.0 discovery client, so a process configured for
// kratos works unchanged.
const (
	EnvNodes    = "DISCOVERY_NODES" // comma-separated host:port seeds
	EnvRegion   = "REGION"          // default DefaultRegion
	EnvZone     = "ZONE"            // default DefaultZone
	EnvDeploy   = "DEPLOY_ENV"      // default DefaultEnv
	EnvHostname = "HOSTNAME"        // default os.Hostname()
	// EnvCAFile names a PEM file of the CA that signed the nodes' HTTPS
	// certificates; set, the client speaks HTTPS (Config.CAFile).
	EnvCAFile = "DISCOVERY_CA_FILE"

	DefaultRegion = "region01"
	DefaultZone   = "zone01"
	DefaultEnv    = "dev"
)

// Config configures a Client. Every zero field takes its value from the
// environment (identity fields, see the Env* constants) or from DefaultConfig
// (durations, limits), so Config{} is a valid start in a configured process.
type Config struct {
	// Nodes are seed discovery nodes as host:port. The client learns the
	// full node list by watching infra.discovery and keeps the seeds as the
	// last fallback. Empty: DISCOVERY_NODES; both empty is ErrNoNodes.
	Nodes []string
	// Region, Zone, Env, Hostname identify this process. They fill the
	// fields of registered instances left empty; Env scopes every read; Zone
	// orders the learned node list (same zone first) and is the resolver's
	// preferred zone.
	Region   string
	Zone     string
	Env      string
	Hostname string

	// RenewInterval is the heartbeat period of a registration. The server
	// evicts an instance silent for 90 s, so keep it well below (kratos: 30 s).
	RenewInterval time.Duration
	// PollTimeout bounds one long-poll request. It must exceed the server's
	// hold (30 s) so a healthy node answers -304 before it; it is also sent as
	// the x1-bmspy-timeout header, which makes the server answer before it.
	PollTimeout time.Duration
	// RequestTimeout bounds one non-poll request to one node.
	RequestTimeout time.Duration
	// RetryTimeout bounds the retries of one call (register, renew, cancel,
	// fetch) across nodes. Larger values ride out longer outages, but make a
	// Close or cancel with every node down take that long.
	RetryTimeout time.Duration
	// BackoffInitial and BackoffMax shape the exponential backoff (with
	// jitter) between failed attempts and after a failed poll.
	BackoffInitial time.Duration
	BackoffMax     time.Duration
	// MaxResponseBytes caps the size of an answer body; a longer body is
	// ErrBadResponse. Large registries answer big polls, so leave room.
	MaxResponseBytes int64

	// TLS, when set, makes the client speak HTTPS to the nodes' HTTPS
	// listeners (http.tls on the server): Nodes are then HTTPS host:ports
	// and the node list is learned from the https:// addrs of
	// infra.discovery. Kratos clients cannot; the plain listener stays.
	TLS *tls.Config
	// CAFile, when TLS is nil, is a PEM file of the CA that signed the
	// nodes' certificates; it sets TLS with that CA as the only root.
	// Empty: DISCOVERY_CA_FILE.
	CAFile string
}

// DefaultConfig returns the defaults for the tunables; the identity fields and
// Nodes are left empty (New fills them from the environment).
func DefaultConfig() Config {
	return Config{
		RenewInterval:    30 * time.Second,
		PollTimeout:      40 * time.Second,
		RequestTimeout:   10 * time.Second,
		RetryTimeout:     15 * time.Second,
		BackoffInitial:   250 * time.Millisecond,
		BackoffMax:       30 * time.Second,
		MaxResponseBytes: 16 << 20,
	}
}

// resolve fills zero fields from getenv and the defaults.
func (c Config) resolve(getenv func(string) string, hostname func() (string, error)) (Config, error) {
	def := DefaultConfig()
	str := func(v *string, env, fallback string) {
		if *v == "" {
			*v = strings.TrimSpace(getenv(env))
		}
		if *v == "" {
			*v = fallback
		}
	}
	if len(c.Nodes) == 0 {
		for _, n := range strings.Split(getenv(EnvNodes), ",") {
			if n = strings.TrimSpace(n); n != "" {
				c.Nodes = append(c.Nodes, n)
			}
		}
	}
	str(&c.Region, EnvRegion, DefaultRegion)
	str(&c.Zone, EnvZone, DefaultZone)
	str(&c.Env, EnvDeploy, DefaultEnv)
	str(&c.Hostname, EnvHostname, "")
	if c.TLS == nil {
		str(&c.CAFile, EnvCAFile, "")
		if c.CAFile != "" {
			pem, err := os.ReadFile(c.CAFile)
			if err != nil {
				return c, fmt.Errorf("%w: CAFile: %w", ErrInvalidConfig, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return c, fmt.Errorf("%w: CAFile %s: no PEM certificate in it", ErrInvalidConfig, c.CAFile)
			}
			c.TLS = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
		}
	}
	if c.Hostname == "" {
		h, err := hostname()
		if err != nil {
			return c, fmt.Errorf("%w: Hostname: unset, %s unset and os.Hostname failed: %w", ErrInvalidConfig, EnvHostname, err)
		}
		c.Hostname = h
	}
	dur := func(v *time.Duration, d time.Duration) {
		if *v == 0 {
			*v = d
		}
	}
	dur(&c.RenewInterval, def.RenewInterval)
	dur(&c.PollTimeout, def.PollTimeout)
	dur(&c.RequestTimeout, def.RequestTimeout)
	dur(&c.RetryTimeout, def.RetryTimeout)
	dur(&c.BackoffInitial, def.BackoffInitial)
	dur(&c.BackoffMax, def.BackoffMax)
	if c.MaxResponseBytes == 0 {
		c.MaxResponseBytes = def.MaxResponseBytes
	}
	return c, nil
}

// Validate checks a resolved Config. Errors wrap ErrNoNodes or
// ErrInvalidConfig and name the field.
func (c Config) Validate() error {
	var errs []error
	if len(c.Nodes) == 0 {
		errs = append(errs, fmt.Errorf("%w: set Config.Nodes or %s", ErrNoNodes, EnvNodes))
	}
	for i, n := range c.Nodes {
		if err := checkHostPort(n); err != nil {
			errs = append(errs, fmt.Errorf("%w: Nodes[%d] %q: %w", ErrInvalidConfig, i, n, err))
		}
	}
	for _, f := range []struct{ name, v string }{
		{"Region", c.Region}, {"Zone", c.Zone}, {"Env", c.Env}, {"Hostname", c.Hostname},
	} {
		if f.v == "" {
			errs = append(errs, fmt.Errorf("%w: %s: must not be empty", ErrInvalidConfig, f.name))
		}
	}
	for _, d := range []struct {
		name string
		v    time.Duration
	}{
		{"RenewInterval", c.RenewInterval}, {"PollTimeout", c.PollTimeout},
		{"RequestTimeout", c.RequestTimeout}, {"RetryTimeout", c.RetryTimeout},
		{"BackoffInitial", c.BackoffInitial}, {"BackoffMax", c.BackoffMax},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%w: %s: must be > 0, got %s", ErrInvalidConfig, d.name, d.v))
		}
	}
	if c.BackoffMax < c.BackoffInitial {
		errs = append(errs, fmt.Errorf("%w: BackoffMax (%s) must be >= BackoffInitial (%s)", ErrInvalidConfig, c.BackoffMax, c.BackoffInitial))
	}
	if c.MaxResponseBytes < 1024 {
		errs = append(errs, fmt.Errorf("%w: MaxResponseBytes: must be >= 1024, got %d", ErrInvalidConfig, c.MaxResponseBytes))
	}
	return errors.Join(errs...)
}

// checkHostPort accepts "host:port" with a numeric port in 1..65535.
func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("empty host")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("invalid port %q", port)
	}
	return nil
}

// Option sets an optional collaborator of the Client.
type Option func(*options)

type options struct {
	logger     *slog.Logger
	registerer prometheus.Registerer
	httpClient *http.Client
	getenv     func(string) string
	hostname   func() (string, error)
}

// WithLogger sets the logger (default: discard). The client logs node
// switches, failed polls and renews; nothing per successful request.
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// WithRegisterer registers the client's metrics (discovery_client_*) on r.
// Without it no metric is registered anywhere. Two clients on one registerer
// need prometheus.WrapRegistererWith to tell them apart.
func WithRegisterer(r prometheus.Registerer) Option { return func(o *options) { o.registerer = r } }

// WithHTTPClient replaces the HTTP client. Its Timeout should be 0: the
// client sets a deadline on every request itself (PollTimeout for polls).
// Close does not close its idle connections; the owner does.
func WithHTTPClient(hc *http.Client) Option { return func(o *options) { o.httpClient = hc } }

// WithEnv replaces os.Getenv as the source of the environment fallbacks
// (tests, or processes that keep configuration elsewhere).
func WithEnv(getenv func(string) string) Option { return func(o *options) { o.getenv = getenv } }
