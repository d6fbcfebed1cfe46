package loadgen

import (
	"errors"
	"fmt"
	"math"
	"net"
	"strconv"
	"strings"
	"time"
)

// Scenario names (the first argument of `discovery bench`).
const (
	ScenarioRegister    = "register"
	ScenarioRenew       = "renew"
	ScenarioFetchs      = "fetchs"
	ScenarioNotify      = "notify"
	ScenarioReplication = "replication"
	ScenarioCrossNotify = "cross-notify"
)

// scenarios lists every scenario with a one-line summary (usage text order).
var scenarios = []struct{ name, summary string }{
	{ScenarioRegister, "time POST /discovery/register of --instances instances over --appids appids"},
	{ScenarioRenew, "register the instances (not timed), then time POST /discovery/renew"},
	{ScenarioFetchs, "register the instances (not timed), then time GET /discovery/fetchs of --batch appids"},
	{ScenarioNotify, "park --pollers long-polls, make one change, time every poll's answer (--count changes)"},
	{ScenarioReplication, "write on the first node, time until a poll parked on every other node answers"},
	{ScenarioCrossNotify, "park --pollers long-polls on the other nodes, change on the first node, time the answers"},
}

// Config is one bench run. Zero values are not defaults: use
// DefaultConfig and Validate.
type Config struct {
	Scenario string
	// ChangeExe, when set, is the discovery binary: the change of each
	// notify round is then sent by a child process (`bench __change`), so
	// its acknowledgement is measured away from the flood of poll answers
	// in this process. Main sets it; library callers may leave it empty.
	ChangeExe string
	// Nodes are the host:port HTTP addresses of the nodes under test. Load
	// is spread round-robin over all of them; notify uses the first one;
	// replication and cross-notify write to the first and watch the others.
	Nodes []string
	// Concurrency is the number of concurrent clients (workers). For notify
	// it bounds how many polls are being sent at once while parking.
	Concurrency int
	// Count is the number of timed operations (register/renew/fetchs
	// requests, notify/cross-notify changes, replication writes); 0 means
	// no count limit (Duration must then be set).
	Count int64
	// Duration bounds the timed phase; 0 means no time limit (Count must
	// then be set). When both are set the first limit reached ends the run.
	Duration time.Duration
	// Rate caps operations per second over all workers; 0 is unlimited.
	Rate float64
	// Env, Zone, Region of the generated instances and requests.
	Env, Zone, Region string
	// AppPrefix prefixes every generated appid.
	AppPrefix string
	// AppIDs is the number of appids the instances are spread over.
	AppIDs int
	// Instances is the number of distinct instances (register cycles over
	// them; renew and fetchs register them first).
	Instances int
	// Batch is the number of appids per fetchs request.
	Batch int
	// Pollers is the number of parked long-polls (notify, cross-notify).
	Pollers int
	// Timeout bounds every non-poll request.
	Timeout time.Duration
	// PollTimeout bounds every long-poll request; it is also sent as
	// x1-bmspy-timeout (like kratos), so the node answers -304 before it.
	PollTimeout time.Duration
	// Settle bounds waiting for setup conditions (polls parked, writes
	// replicated).
	Settle time.Duration
	// Cleanup cancels the instances the run registered, after the timed
	// phase (not timed).
	Cleanup bool
	// JSON prints one JSON object instead of a table.
	JSON bool
}

// DefaultConfig returns the defaults of every flag.
func DefaultConfig() Config {
	return Config{
		Nodes:       []string{"127.0.0.1:7171"},
		Concurrency: 32,
		Count:       10000,
		Env:         "bench",
		Zone:        "zone01",
		Region:      "region01",
		AppPrefix:   "bench.app",
		AppIDs:      10,
		Instances:   1000,
		Batch:       10,
		Pollers:     1000,
		Timeout:     5 * time.Second,
		PollTimeout: 40 * time.Second,
		Settle:      60 * time.Second,
	}
}

// Limits that keep one run sane (and its file descriptors available).
const (
	maxConcurrency = 10000
	maxPollers     = 100000
	maxInstances   = 10000000
	maxAppIDs      = 1000000
)

// Validate reports the first invalid setting, naming its flag.
func (c Config) Validate() error {
	known := false
	for _, s := range scenarios {
		known = known || s.name == c.Scenario
	}
	if !known {
		return fmt.Errorf("unknown scenario %q (want one of %s)", c.Scenario, scenarioNames())
	}
	if len(c.Nodes) == 0 {
		return errors.New("--nodes: at least one host:port is required")
	}
	for _, n := range c.Nodes {
		if err := checkHostPort(n); err != nil {
			return fmt.Errorf("--nodes: %q: %w", n, err)
		}
	}
	if (c.Scenario == ScenarioReplication || c.Scenario == ScenarioCrossNotify) && len(c.Nodes) < 2 {
		return fmt.Errorf("--nodes: %s needs at least 2 nodes (write on the first, watch the others), got %d", c.Scenario, len(c.Nodes))
	}
	switch {
	case c.Concurrency < 1 || c.Concurrency > maxConcurrency:
		return fmt.Errorf("--concurrency: must be in [1, %d], got %d", maxConcurrency, c.Concurrency)
	case c.Count < 0:
		return fmt.Errorf("--count: must be >= 0, got %d", c.Count)
	case c.Duration < 0:
		return fmt.Errorf("--duration: must be >= 0, got %s", c.Duration)
	case c.Count == 0 && c.Duration == 0:
		return errors.New("--count, --duration: at least one must be > 0 (every run is bounded)")
	case c.Rate < 0 || math.IsNaN(c.Rate) || math.IsInf(c.Rate, 0):
		return fmt.Errorf("--rate: must be >= 0, got %v", c.Rate)
	case c.Env == "":
		return errors.New("--env: must not be empty")
	case c.Zone == "":
		return errors.New("--zone: must not be empty")
	case c.AppPrefix == "":
		return errors.New("--app-prefix: must not be empty")
	case c.AppIDs < 1 || c.AppIDs > maxAppIDs:
		return fmt.Errorf("--appids: must be in [1, %d], got %d", maxAppIDs, c.AppIDs)
	case c.Instances < 1 || c.Instances > maxInstances:
		return fmt.Errorf("--instances: must be in [1, %d], got %d", maxInstances, c.Instances)
	case c.Instances < c.AppIDs && (c.Scenario == ScenarioRegister || c.Scenario == ScenarioRenew || c.Scenario == ScenarioFetchs):
		return fmt.Errorf("--instances: must be >= --appids (%d) so every appid has an instance, got %d", c.AppIDs, c.Instances)
	case c.Scenario == ScenarioFetchs && (c.Batch < 1 || c.Batch > c.AppIDs):
		return fmt.Errorf("--batch: must be in [1, --appids (%d)], got %d", c.AppIDs, c.Batch)
	case c.Pollers < 1 || c.Pollers > maxPollers:
		return fmt.Errorf("--pollers: must be in [1, %d], got %d", maxPollers, c.Pollers)
	case c.Timeout <= 0:
		return fmt.Errorf("--timeout: must be > 0, got %s", c.Timeout)
	case c.PollTimeout < time.Second:
		return fmt.Errorf("--poll-timeout: must be >= 1s, got %s", c.PollTimeout)
	case c.Settle <= 0:
		return fmt.Errorf("--settle: must be > 0, got %s", c.Settle)
	}
	return nil
}

func checkHostPort(s string) error {
	host, port, err := net.SplitHostPort(s)
	if err != nil {
		return err
	}
	if host == "" {
		return errors.New("missing host")
	}
	p, err := strconv.Atoi(port)
	if err != nil || p < 1 || p > 65535 {
		return fmt.Errorf("port %q must be in [1, 65535]", port)
	}
	return nil
}

func scenarioNames() string {
	names := make([]string, len(scenarios))
	for i, s := range scenarios {
		names[i] = s.name
	}
	return strings.Join(names, ", ")
}
