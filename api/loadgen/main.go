package loadgen

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"strings"
)

// Exit codes of Main.
const (
	ExitOK      = 0 // run complete, no operation failed
	ExitFailure = 1 // setup failed, an operation failed, or interrupted
	ExitUsage   = 2 // bad scenario or flag
)

// Main runs `discovery bench <scenario> [flags]`: args are the arguments
// after "bench". It parses its own flags, runs the scenario until --count or
// --duration (or ctx) ends it, prints the report to stdout (a table, or one
// JSON object with --json) and progress to stderr, and returns an exit code.
// Cancelling ctx (Ctrl-C) stops the run cleanly; the partial report is still
// printed and the exit code is ExitFailure.
func Main(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return MainExe(ctx, "", args, stdout, stderr)
}

// MainExe is Main for the discovery binary itself, exe (its path): notify
// rounds then send their change from a child process of exe
// (Config.ChangeExe). exe must be a binary whose `bench` command is this
// Main, or the child runs something else.
func MainExe(ctx context.Context, exe string, args []string, stdout, stderr io.Writer) int {
	if len(args) > 0 && args[0] == changeArg {
		return runChangeChild(ctx, args[1:], stdout)
	}
	cfg, code, ok := parseArgs(args, stderr)
	if !ok {
		return code
	}
	cfg.ChangeExe = exe
	progress := stderr
	rep := Run(ctx, cfg, progress)
	var err error
	if cfg.JSON {
		err = rep.WriteJSON(stdout)
	} else {
		err = rep.WriteTable(stdout)
	}
	if err != nil {
		fmt.Fprintf(stderr, "bench: write report: %v\n", err)
		return ExitFailure
	}
	switch {
	case rep.Error != "":
		fmt.Fprintf(stderr, "bench: %s\n", rep.Error)
		return ExitFailure
	case rep.Interrupted:
		fmt.Fprintln(stderr, "bench: interrupted")
		return ExitFailure
	case rep.ErrorTotal() > 0:
		fmt.Fprintf(stderr, "bench: %d operations failed\n", rep.ErrorTotal())
		return ExitFailure
	}
	return ExitOK
}

// parseArgs returns the config, or ok false and the exit code (usage errors
// are printed to stderr with the offending flag's name).
func parseArgs(args []string, stderr io.Writer) (cfg Config, code int, ok bool) {
	cfg = DefaultConfig()
	fs := flag.NewFlagSet("discovery bench", flag.ContinueOnError)
	fs.SetOutput(stderr)
	nodes := strings.Join(cfg.Nodes, ",")
	fs.StringVar(&nodes, "nodes", nodes, "comma-separated `host:port` HTTP addresses of the nodes under test")
	fs.IntVar(&cfg.Concurrency, "concurrency", cfg.Concurrency, "concurrent clients (notify: polls being sent at once while parking)")
	fs.Int64Var(&cfg.Count, "count", cfg.Count, "timed operations: requests (register, renew, fetchs), changes (notify, cross-notify) or writes (replication); 0 = no limit\n(default 10000; notify, cross-notify: 1; replication: 200; 0 when only --duration is given)")
	fs.DurationVar(&cfg.Duration, "duration", cfg.Duration, "bound of the timed phase; 0 = no limit")
	fs.Float64Var(&cfg.Rate, "rate", cfg.Rate, "operations per second over all clients; 0 = unlimited")
	fs.StringVar(&cfg.Env, "env", cfg.Env, "env of the generated instances and requests")
	fs.StringVar(&cfg.Zone, "zone", cfg.Zone, "zone of the generated instances")
	fs.StringVar(&cfg.Region, "region", cfg.Region, "region of the generated instances")
	fs.StringVar(&cfg.AppPrefix, "app-prefix", cfg.AppPrefix, "prefix of every generated appid")
	fs.IntVar(&cfg.AppIDs, "appids", cfg.AppIDs, "appids the instances are spread over")
	fs.IntVar(&cfg.Instances, "instances", cfg.Instances, "distinct instances (register cycles over them)")
	fs.IntVar(&cfg.Batch, "batch", cfg.Batch, "appids per fetchs request (default 10, at most --appids)")
	fs.IntVar(&cfg.Pollers, "pollers", cfg.Pollers, "parked long-polls, each on its own connection (notify, cross-notify)")
	fs.DurationVar(&cfg.Timeout, "timeout", cfg.Timeout, "bound of every non-poll request")
	fs.DurationVar(&cfg.PollTimeout, "poll-timeout", cfg.PollTimeout, "bound of every long-poll, also sent as x1-bmspy-timeout")
	fs.DurationVar(&cfg.Settle, "settle", cfg.Settle, "bound of waiting for polls to park or writes to replicate")
	fs.BoolVar(&cfg.Cleanup, "cleanup", cfg.Cleanup, "cancel the registered instances after the timed phase")
	fs.BoolVar(&cfg.JSON, "json", cfg.JSON, "print one JSON object instead of a table")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: discovery bench <scenario> [flags]")
		fmt.Fprintln(stderr, "\nScenarios:")
		for _, s := range scenarios {
			fmt.Fprintf(stderr, "  %-13s %s\n", s.name, s.summary)
		}
		fmt.Fprintln(stderr, "\nFlags:")
		fs.PrintDefaults()
		fmt.Fprintln(stderr, "\nExit codes: 0 complete without failed operations, 1 failure or interrupted, 2 bad usage.")
	}

	// The scenario may come before or after the flags.
	rest := args
	if len(rest) > 0 && !strings.HasPrefix(rest[0], "-") {
		cfg.Scenario, rest = rest[0], rest[1:]
	}
	if err := fs.Parse(rest); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return cfg, ExitOK, false
		}
		return cfg, ExitUsage, false // flag already printed the error and usage
	}
	if cfg.Scenario == "" && fs.NArg() > 0 {
		cfg.Scenario = fs.Arg(0)
		if err := fs.Parse(fs.Args()[1:]); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return cfg, ExitOK, false
			}
			return cfg, ExitUsage, false
		}
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench: unexpected argument %q\nRun 'discovery bench --help' for usage.\n", fs.Arg(0))
		return cfg, ExitUsage, false
	}
	if cfg.Scenario == "" {
		fmt.Fprintf(stderr, "bench: missing scenario (want one of %s)\nRun 'discovery bench --help' for usage.\n", scenarioNames())
		return cfg, ExitUsage, false
	}

	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	if !set["count"] {
		switch {
		case set["duration"]:
			cfg.Count = 0 // --duration alone: time-bound only
		case cfg.Scenario == ScenarioNotify || cfg.Scenario == ScenarioCrossNotify:
			cfg.Count = 1
		case cfg.Scenario == ScenarioReplication:
			cfg.Count = 200
		}
	}
	if !set["batch"] {
		cfg.Batch = min(cfg.Batch, cfg.AppIDs) // default: 10, or all appids when fewer
	}
	cfg.Nodes = splitList(nodes)
	if err := cfg.Validate(); err != nil {
		fmt.Fprintf(stderr, "bench: %v\nRun 'discovery bench --help' for usage.\n", err)
		return cfg, ExitUsage, false
	}
	return cfg, ExitOK, true
}

func splitList(s string) []string {
	var out []string
	for _, p := range strings.Split(s, ",") {
		if p = strings.TrimSpace(p); p != "" {
			out = append(out, p)
		}
	}
	return out
}
