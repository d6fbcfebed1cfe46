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
	}
}

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
	if c.ProtectThreshold <= 0 || c.ProtectThreshold >= 1 {
		errs = append(errs, fmt.Errorf("protect_threshold: must be in (0,1), got %v", c.ProtectThreshold))
	}
	return errors.Join(errs...)
}
