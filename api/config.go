package api

import (
	"errors"
	"fmt"
	"strings"
	"time"
)

// Config is the HTTP layer's configuration (configuration section "http").
type Config struct {
	// Addr is the listen address, e.g. ":7171".
	Addr string `mapstructure:"addr"`
	// Advertise is the host:port published to clients and peers
	// (infra.discovery addr, node list). Empty: derived from Addr, replacing
	// an unspecified host with the first non-loopback interface address
	// (never 0.0.0.0, spec 7.5.4).
	Advertise string `mapstructure:"advertise"`
	// PollHold is how long a long-poll is held before -304 (spec: 30 s, and
	// never more than 30 s so kratos' 40 s timeout keeps its margin).
	PollHold time.Duration `mapstructure:"poll_hold"`
	// MaxPollers caps concurrently parked polls; beyond it a poll answers
	// -503 at once (kratos then backs off 1 s and tries another node). Every
	// kratos process keeps one poll parked on one node. 0 (the default)
	// derives it from the connection cap: MaxConns less a twentieth (at
	// most 500) left for every other request.
	//
	// Memory: a poll parked lean (LeanPolls, plain keep-alive HTTP/1.1, what
	// kratos sends) costs about 6 KB of RSS, its socket, its waiter and one
	// small goroutine (measured at 10 000 and 19 000 parked polls, go1.26,
	// linux/amd64); one parked through net/http (TLS, or LeanPolls off)
	// about 21-27 KB: per-connection read and write buffers, request and
	// response plus two goroutine stacks. Polls beyond the cap fail over to
	// other nodes.
	MaxPollers int `mapstructure:"max_pollers"`
	// MaxConns caps the HTTP connections open at once; beyond, a new one
	// gets HTTP 503 and is closed (counted). 0 (the default): the process's
	// open-file limit less 256 for peers, gossip and files.
	MaxConns int `mapstructure:"max_conns"`
	// MaxConnsPerIP caps the connections of one client address (loopback
	// excepted), so one host cannot take them all. Clients behind one NAT
	// address share it: raise it for them.
	MaxConnsPerIP int `mapstructure:"max_conns_per_ip"`
	// ReadHeaderTimeout, IdleTimeout bound slow or idle connections.
	ReadHeaderTimeout time.Duration `mapstructure:"read_header_timeout"`
	IdleTimeout       time.Duration `mapstructure:"idle_timeout"`
	// RequestTimeout bounds non-poll requests.
	RequestTimeout time.Duration `mapstructure:"request_timeout"`
	// ShutdownTimeout bounds the graceful drain of in-flight requests.
	ShutdownTimeout time.Duration `mapstructure:"shutdown_timeout"`
	// Limits on request input (spec 10.5).
	Limits Limits `mapstructure:"limits"`
	// LeanPolls parks long-polls on plain keep-alive connections outside
	// net/http (lean.go): a few KB per parked poll instead of about 22 KB.
	LeanPolls bool `mapstructure:"lean_polls"`
	// LeanWrites reads plain keep-alive HTTP/1.1 connections outside
	// net/http from their first byte and serves kratos' register, renew
	// and cancel there, through the same handler chain (leanwrite.go):
	// less CPU per write. Anything else goes to net/http.
	LeanWrites bool `mapstructure:"lean_writes"`
	// TLS is the optional HTTPS listener beside the plain one kratos
	// needs, for the SDK, ctl and the web page.
	TLS TLSConfig `mapstructure:"tls"`
}

// TLSConfig is the HTTPS listener (configuration section "http.tls"). The
// certificate and key are read again whenever either file changes (a
// renewal by cert-manager, certbot or a mounted Secret), without a restart.
type TLSConfig struct {
	// Addr is the HTTPS listen address, e.g. ":7443". Empty: no HTTPS.
	Addr string `mapstructure:"addr"`
	// Advertise is the HTTPS host:port published in the node's own
	// infra.discovery record (an https:// addr beside the http:// one).
	// Empty: derived from Addr like http.advertise.
	Advertise string `mapstructure:"advertise"`
	// CertFile and KeyFile are the PEM certificate chain and private key.
	CertFile string `mapstructure:"cert_file"`
	KeyFile  string `mapstructure:"key_file"`
}

// Limits bound what one request may carry (spec 10.5). Each must accept all
// that a normal kratos client sends.
type Limits struct {
	MaxBodyBytes     int64 `mapstructure:"max_body_bytes"`     // request body
	MaxAppIDs        int   `mapstructure:"max_appids"`         // per fetchs/polls
	MaxAddrs         int   `mapstructure:"max_addrs"`          // per instance
	MaxStringLen     int   `mapstructure:"max_string_len"`     // each string parameter
	MaxAddrLen       int   `mapstructure:"max_addr_len"`       // each addr
	MaxMetadataBytes int   `mapstructure:"max_metadata_bytes"` // metadata JSON text
	MaxMetadataKeys  int   `mapstructure:"max_metadata_keys"`  // keys in one metadata object
	MaxSetHostnames  int   `mapstructure:"max_set_hostnames"`  // hostnames per set
}

// DefaultConfig returns the defaults: the spec's suggested limits and the
// original's 30 s hold.
func DefaultConfig() Config {
	return Config{
		Addr:              ":7171",
		PollHold:          30 * time.Second,
		MaxPollers:        0,
		MaxConns:          0,
		MaxConnsPerIP:     512,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       45 * time.Second,
		RequestTimeout:    10 * time.Second,
		ShutdownTimeout:   10 * time.Second,
		LeanPolls:         true,
		LeanWrites:        true,
		Limits: Limits{
			MaxBodyBytes:     1 << 20,
			MaxAppIDs:        1000,
			MaxAddrs:         64,
			MaxStringLen:     256,
			MaxAddrLen:       1024,
			MaxMetadataBytes: 16 << 10,
			MaxMetadataKeys:  128,
			MaxSetHostnames:  500,
		},
	}
}

// Validate reports invalid fields by their key under "http".
func (c Config) Validate() error {
	var errs []error
	if c.Addr == "" {
		errs = append(errs, errors.New("http.addr: must not be empty"))
	}
	if c.PollHold <= 0 || c.PollHold > 30*time.Second {
		errs = append(errs, fmt.Errorf("http.poll_hold: must be in (0s, 30s], got %s", c.PollHold))
	}
	for _, d := range []struct {
		key string
		v   time.Duration
	}{
		{"http.read_header_timeout", c.ReadHeaderTimeout},
		{"http.idle_timeout", c.IdleTimeout},
		{"http.request_timeout", c.RequestTimeout},
		{"http.shutdown_timeout", c.ShutdownTimeout},
	} {
		if d.v <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be > 0, got %s", d.key, d.v))
		}
	}
	for _, v := range []struct {
		key string
		n   int
	}{{"http.max_pollers", c.MaxPollers}, {"http.max_conns", c.MaxConns}} {
		if v.n < 0 {
			errs = append(errs, fmt.Errorf("%s: must be >= 0 (0 derives it from the open-file limit), got %d", v.key, v.n))
		}
	}
	if c.MaxConnsPerIP < 1 {
		errs = append(errs, fmt.Errorf("http.max_conns_per_ip: must be >= 1, got %d", c.MaxConnsPerIP))
	}
	if c.MaxConns > 0 && c.MaxPollers > c.MaxConns {
		errs = append(errs, fmt.Errorf("http.max_pollers: must be at most http.max_conns (%d), got %d", c.MaxConns, c.MaxPollers))
	}
	if c.TLS.Addr != "" && (c.TLS.CertFile == "" || c.TLS.KeyFile == "") {
		errs = append(errs, errors.New("http.tls.cert_file, http.tls.key_file: both required when http.tls.addr is set"))
	}
	if c.TLS.Addr == "" && (c.TLS.CertFile != "" || c.TLS.KeyFile != "" || c.TLS.Advertise != "") {
		errs = append(errs, errors.New("http.tls.addr: must be set when a certificate or advertise address is (no HTTPS listener otherwise)"))
	}
	if c.TLS.Addr != "" && c.TLS.Addr == c.Addr && !strings.HasSuffix(c.Addr, ":0") {
		errs = append(errs, fmt.Errorf("http.tls.addr: must differ from http.addr (%s)", c.Addr))
	}
	l := c.Limits
	for _, v := range []struct {
		key string
		v   int64
		min int64
	}{
		{"http.limits.max_body_bytes", l.MaxBodyBytes, 4 << 10},
		{"http.limits.max_appids", int64(l.MaxAppIDs), 1},
		{"http.limits.max_addrs", int64(l.MaxAddrs), 1},
		{"http.limits.max_string_len", int64(l.MaxStringLen), 64},
		{"http.limits.max_addr_len", int64(l.MaxAddrLen), 64},
		{"http.limits.max_metadata_bytes", int64(l.MaxMetadataBytes), 2},
		{"http.limits.max_metadata_keys", int64(l.MaxMetadataKeys), 1},
		{"http.limits.max_set_hostnames", int64(l.MaxSetHostnames), 1},
	} {
		if v.v < v.min {
			errs = append(errs, fmt.Errorf("%s: must be >= %d, got %d", v.key, v.min, v.v))
		}
	}
	if l.MaxStringLen > 65535 { // the registry keeps a hostname's length in 16 bits
		errs = append(errs, fmt.Errorf("http.limits.max_string_len: must be <= 65535, got %d", l.MaxStringLen))
	}
	return errors.Join(errs...)
}

// Limits returns MaxConns and MaxPollers with the zero values derived from
// the open-file limit fds (0: unknown, then 20 000 connections): 256
// descriptors are kept for what is not a client connection (peer
// connections, gossip, files), and a twentieth of the connections, at most
// 500, for requests other than parked polls. At 20 000 descriptors that
// parks 19 244 polls.
func (c Config) connLimits(fds int) (maxConns, maxPollers int) {
	maxConns = c.MaxConns
	if maxConns == 0 {
		maxConns = 20000
		if fds > 0 {
			maxConns = max(fds-256, 64)
		}
	}
	maxPollers = c.MaxPollers
	if maxPollers == 0 {
		maxPollers = max(maxConns-min(500, maxConns/20), 1)
	}
	return maxConns, maxPollers
}
