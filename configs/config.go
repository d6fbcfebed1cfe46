package configs

import (
	"errors"
	"fmt"
	"log/slog"
	"os"
	"strings"
	"unicode"

	"github.com/discovery-go/discovery/api"
	"github.com/discovery-go/discovery/registry"
	"github.com/discovery-go/discovery/syncup"
)

// Config is the whole configuration of a discovery node. Each section belongs
// to the package that uses it; this struct only assembles them. The
// mapstructure tags are the configuration keys (see discovery.yaml).
type Config struct {
	Node     NodeConfig         `mapstructure:"node"`
	HTTP     api.Config         `mapstructure:"http"`
	Registry registry.Config    `mapstructure:"registry"`
	Cluster  syncup.Config      `mapstructure:"cluster"`
	Security api.SecurityConfig `mapstructure:"security"`
	Log      LogConfig          `mapstructure:"log"`
}

// NodeConfig is the node's identity: the fields of its own infra.discovery
// record (spec 7.5.1). The defaults equal the kratos client's defaults, so an
// unconfigured client finds an unconfigured node.
type NodeConfig struct {
	// Env is the deploy env of the node's record (kratos DEPLOY_ENV).
	Env string `mapstructure:"env"`
	// Zone is the node's zone (kratos ZONE); peers in other zones are
	// reached through cluster.zones.
	Zone string `mapstructure:"zone"`
	// Region is stored and returned only (kratos REGION).
	Region string `mapstructure:"region"`
	// Hostname of the node's record. Load replaces an empty value with the
	// OS host name.
	Hostname string `mapstructure:"hostname"`
}

// LogConfig selects the process logger.
type LogConfig struct {
	// Level is debug, info, warn or error.
	Level string `mapstructure:"level"`
	// Format is text (humans) or json (containers, log shippers).
	Format string `mapstructure:"format"`
}

// DefaultConfig returns the defaults of every section. Node.Hostname is the
// OS host name ("localhost" if the OS cannot tell).
func DefaultConfig() Config {
	return Config{
		Node: NodeConfig{
			Env:      "dev",
			Zone:     "zone01",
			Region:   "region01",
			Hostname: osHostname(),
		},
		HTTP:     api.DefaultConfig(),
		Registry: registry.DefaultConfig(),
		Cluster:  syncup.DefaultConfig(),
		Log:      LogConfig{Level: "info", Format: "text"},
	}
}

// RecordLimits are the limits every stored record must pass (registry
// Limits), taken from the HTTP API's input limits so that no path (a peer,
// an import, a snapshot) stores what a client may not. Load sets
// Registry.Limits from it; callers building a Config by hand do the same.
func (c Config) RecordLimits() registry.Limits {
	l := c.HTTP.Limits
	return registry.Limits{MaxStringLen: l.MaxStringLen, MaxAddrs: l.MaxAddrs, MaxAddrLen: l.MaxAddrLen,
		MaxMetadataBytes: l.MaxMetadataBytes, MaxMetadataKeys: l.MaxMetadataKeys}
}

func osHostname() string {
	h, err := os.Hostname()
	if err != nil || h == "" {
		return "localhost"
	}
	return h
}

// Validate checks every section. Each message starts with the full key path
// (e.g. "registry.evict_after: ..."); all problems are reported together.
func (c Config) Validate() error {
	errs := []error{
		c.Node.validate(),
		c.Log.validate(),
		withSection("http", c.HTTP.Validate()),
		withSection("registry", c.Registry.Validate()),
		withSection("cluster", c.Cluster.Validate()),
		withSection("security", c.Security.Validate()),
		c.crossCheck(),
	}
	return errors.Join(errs...)
}

// crossCheck checks rules between sections.
func (c Config) crossCheck() error {
	// Peers evict the node's own infra.discovery record like any instance:
	// at least two renews must fit in the eviction window, so one lost or
	// late renew does not drop the node from every client's list.
	var errs []error
	if r, e := c.Cluster.RenewInterval, c.Registry.EvictAfter; r > 0 && e > 0 && 2*r > e {
		errs = append(errs, fmt.Errorf("cluster.renew_interval: must be at most half of registry.evict_after (%s), got %s", e, r))
	}
	// A digest lists every app: a peer must be able to send all of them.
	if d, a := c.Cluster.MaxDigests, c.Registry.MaxApps; d > 0 && a > 0 && d < a {
		errs = append(errs, fmt.Errorf("cluster.max_digests: must be at least registry.max_apps (%d), got %d", a, d))
	}
	return errors.Join(errs...)
}

// withSection prefixes each error of a section's Validate with the section
// key unless it already names its full path (api and syncup do, registry
// names only the field).
func withSection(section string, err error) error {
	if err == nil {
		return nil
	}
	var list []error
	if j, ok := err.(interface{ Unwrap() []error }); ok {
		list = j.Unwrap()
	} else {
		list = []error{err}
	}
	out := make([]error, 0, len(list))
	for _, e := range list {
		if e == nil {
			continue
		}
		if strings.HasPrefix(e.Error(), section+".") {
			out = append(out, e)
		} else {
			out = append(out, fmt.Errorf("%s.%w", section, e))
		}
	}
	return errors.Join(out...)
}

// maxIdentityLen matches the default per-string limit of the HTTP API: the
// node's own record must pass its own input checks.
const maxIdentityLen = 256

func (n NodeConfig) validate() error {
	var errs []error
	for _, f := range []struct{ key, v string }{
		{"node.env", n.Env},
		{"node.zone", n.Zone},
		{"node.region", n.Region},
		{"node.hostname", n.Hostname},
	} {
		switch {
		case f.v == "":
			errs = append(errs, fmt.Errorf("%s: must not be empty", f.key))
		case len(f.v) > maxIdentityLen:
			errs = append(errs, fmt.Errorf("%s: must be at most %d bytes, got %d", f.key, maxIdentityLen, len(f.v)))
		case strings.IndexFunc(f.v, func(r rune) bool { return unicode.IsSpace(r) || unicode.IsControl(r) }) >= 0:
			errs = append(errs, fmt.Errorf("%s: must not contain spaces or control characters, got %q", f.key, f.v))
		}
	}
	return errors.Join(errs...)
}

func (l LogConfig) validate() error {
	var errs []error
	if _, err := l.SlogLevel(); err != nil {
		errs = append(errs, err)
	}
	switch l.Format {
	case "text", "json":
	default:
		errs = append(errs, fmt.Errorf("log.format: must be text or json, got %q", l.Format))
	}
	return errors.Join(errs...)
}

// SlogLevel returns the slog level named by Level.
func (l LogConfig) SlogLevel() (slog.Level, error) {
	switch l.Level {
	case "debug":
		return slog.LevelDebug, nil
	case "info":
		return slog.LevelInfo, nil
	case "warn":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return 0, fmt.Errorf("log.level: must be debug, info, warn or error, got %q", l.Level)
}
