package registry

import (
	"errors"
	"fmt"
	"time"
)

// Config holds the registry's tunables. The zero value is not valid; start
// from DefaultConfig. Field tags are the configuration keys (configs/).
type Config struct {
	// EvictInterval is how often the eviction scan runs; each scan first
	// closes the self-preservation window. Original: 60 s.
	EvictInterval time.Duration `mapstructure:"evict_interval"`
	// EvictAfter: an instance silent for longer than this is evicted when the
	// node is not protected. Original: 90 s (three missed renews).
	EvictAfter time.Duration `mapstructure:"evict_after"`
	// ProtectedEvictAfter: while protected, only instances silent longer than
	// this are evicted. Original: 1 h.
	ProtectedEvictAfter time.Duration `mapstructure:"protected_evict_after"`
	// SelfPreservation enables the guard. Off means "always evict after
	// EvictAfter", which a network partition turns into mass eviction.
	SelfPreservation bool `mapstructure:"self_preservation"`
	// ProtectThreshold is the fraction of expected renews below which the
	// node is protected; it also bounds evictions per scan. Original: 0.85.
	ProtectThreshold float64 `mapstructure:"protect_threshold"`
	// ExpectedResetInterval: expected renews are recomputed as 2 × instances
	// this often. Original: 15 min.
	ExpectedResetInterval time.Duration `mapstructure:"expected_reset_interval"`
	// TombstoneTTL is how long a cancel is remembered (anti-entropy and
	// replay protection). Must exceed the anti-entropy interval by far.
	TombstoneTTL time.Duration `mapstructure:"tombstone_ttl"`
	// MaxClockSkew bounds how far ahead of this node's clock a timestamp
	// from another node (dirty_timestamp, set_timestamp, a cancel time, any
	// timestamp of an imported copy) may be: a version from the future
	// outranks every later write of the real owner until the clock catches
	// up, and a renew_timestamp from the future is never evicted. Nodes'
	// clocks must agree within it (NTP).
	MaxClockSkew time.Duration `mapstructure:"max_clock_skew"`
	// MaxInstances, MaxApps and MaxEnvs cap what the node holds; a write
	// that would go beyond is refused (-503, counted) and the node keeps
	// what it has. They bound memory and the metric series (one per env).
	MaxInstances int `mapstructure:"max_instances"`
	MaxApps      int `mapstructure:"max_apps"`
	MaxEnvs      int `mapstructure:"max_envs"`
	// Limits bound every stored record; the node sets them from the HTTP
	// API's input limits (http.limits), so they are not keys of their own.
	Limits Limits `mapstructure:"-"`
}

// DefaultConfig returns the original system's numbers.
func DefaultConfig() Config {
	return Config{
		EvictInterval:         60 * time.Second,
		EvictAfter:            90 * time.Second,
		ProtectedEvictAfter:   time.Hour,
		SelfPreservation:      true,
		ProtectThreshold:      0.85,
		ExpectedResetInterval: 15 * time.Minute,
		TombstoneTTL:          time.Hour,
		MaxClockSkew:          time.Minute,
		MaxInstances:          1_000_000,
		MaxApps:               100_000,
		MaxEnvs:               64,
		Limits:                DefaultLimits(),
	}
}

// maxStringLen bounds Limits.MaxStringLen: no appid, zone or hostname is
// near 64 KiB, and the HTTP layer's bound (configs) is the same.
const maxStringLen = 1<<16 - 1

// Validate reports the first invalid field by its key.
func (c Config) Validate() error {
	var errs []error
	pos := func(key string, d time.Duration) {
		if d <= 0 {
			errs = append(errs, fmt.Errorf("%s: must be > 0, got %s", key, d))
		}
	}
	pos("evict_interval", c.EvictInterval)
	pos("evict_after", c.EvictAfter)
	pos("protected_evict_after", c.ProtectedEvictAfter)
	pos("expected_reset_interval", c.ExpectedResetInterval)
	pos("tombstone_ttl", c.TombstoneTTL)
	if c.ProtectedEvictAfter > 0 && c.ProtectedEvictAfter < c.EvictAfter {
		errs = append(errs, fmt.Errorf("protected_evict_after: must be >= evict_after (%s), got %s", c.EvictAfter, c.ProtectedEvictAfter))
	}
	pos("max_clock_skew", c.MaxClockSkew)
	for _, v := range []struct {
		key string
		n   int
	}{{"max_instances", c.MaxInstances}, {"max_apps", c.MaxApps}, {"max_envs", c.MaxEnvs}} {
		if v.n < 1 {
			errs = append(errs, fmt.Errorf("%s: must be >= 1, got %d", v.key, v.n))
		}
	}
	l := c.Limits
	if l.MaxStringLen < 1 || l.MaxAddrs < 1 || l.MaxAddrLen < 1 || l.MaxMetadataBytes < 2 || l.MaxMetadataKeys < 1 {
		errs = append(errs, fmt.Errorf("limits: every limit must be positive, got %+v", l))
	}
	if l.MaxStringLen > maxStringLen {
		errs = append(errs, fmt.Errorf("limits: max string length %d above %d", l.MaxStringLen, maxStringLen))
	}
	if c.ProtectThreshold <= 0 || c.ProtectThreshold >= 1 {
		errs = append(errs, fmt.Errorf("protect_threshold: must be in (0,1), got %v", c.ProtectThreshold))
	}
	return errors.Join(errs...)
}
