// Command discovery runs a node of the discovery service registry and a few
// helpers around it:
//
//	discovery [serve] [flags]  run a node (the default command)
//	discovery config [flags]   print the effective configuration (YAML)
//	discovery version          print version, commit and Go version
//	discovery keygen           print a new cluster secret
//	discovery health [--addr host:port] [--timeout 2s]
//	                           exit 0 when the node's /readyz answers 200
//	discovery ctl COMMAND [flags]
//	                           operate a running cluster (see package ctl)
//	discovery bench SCENARIO [flags]
//	                           load tool over real HTTP (see package loadgen)
//
// Configuration flags, environment variables and files are described in
// package configs and in configs/discovery.yaml. Exit codes: 0 success,
// 1 failure at run time (or an unready node for health), 2 bad usage or
// configuration.
package main

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"strings"

	"github.com/spf13/pflag"

	"github.com/discovery-go/discovery/configs"
)

// Set at build time: -ldflags "-X main.version=v1.2.3 -X main.commit=abc123".
var (
	version = "dev"
	commit  = "unknown"
)

const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

func main() {
	os.Exit(run(os.Args[1:], os.Environ(), os.Stdout, os.Stderr))
}

// command is one subcommand. New subcommands (e.g. bench) are one more entry
// in commands.
type command struct {
	name    string
	summary string
	run     func(args, environ []string, stdout, stderr io.Writer) int
}

func commands() []command {
	return []command{
		{"serve", "run a discovery node (default command)", serveCmd},
		{"config", "print the effective configuration as YAML", configCmd},
		{"version", "print version, commit and Go version", versionCmd},
		{"health", "exit 0 when a node's /readyz answers 200, else 1", healthCmd},
		{"keygen", "print a new cluster secret (base64 of 32 random bytes)", keygenCmd},
		{"ctl", "operate a running cluster: apps, instances, nodes, status, set, cancel, watch, health", ctlCmd},
		{"bench", "load tool: register, renew, fetchs, notify, replication, cross-notify", benchCmd},
	}
}

func run(args, environ []string, stdout, stderr io.Writer) int {
	name := "serve"
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		name, args = args[0], args[1:]
	}
	if name == "help" {
		usage(stdout)
		return exitOK
	}
	for _, c := range commands() {
		if c.name == name {
			return c.run(args, environ, stdout, stderr)
		}
	}
	fmt.Fprintf(stderr, "discovery: unknown command %q\n\n", name)
	usage(stderr)
	return exitUsage
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Usage: discovery [command] [flags]")
	fmt.Fprintln(w, "\nCommands:")
	for _, c := range commands() {
		fmt.Fprintf(w, "  %-8s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'discovery <command> --help' for the flags of a command.")
}

// newFlagSet returns a flag set whose errors and help go to stderr.
func newFlagSet(name string, stderr io.Writer) *pflag.FlagSet {
	fs := pflag.NewFlagSet("discovery "+name, pflag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.SortFlags = false
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: discovery %s [flags]\n", name)
		if name == "serve" {
			fmt.Fprintln(stderr, "serve is the default command; 'discovery help' lists the others.")
		}
		fmt.Fprintf(stderr, "\nFlags:\n%s", fs.FlagUsages())
	}
	return fs
}

// parseFlags parses args; ok false means the caller returns code.
func parseFlags(fs *pflag.FlagSet, args []string, stderr io.Writer) (code int, ok bool) {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return exitOK, false
		}
		fmt.Fprintf(stderr, "%s: %v\nRun '%s --help' for the flags.\n", fs.Name(), err, fs.Name())
		return exitUsage, false
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "%s: unexpected argument %q\n", fs.Name(), fs.Arg(0))
		return exitUsage, false
	}
	return exitOK, true
}

// loadConfig parses the configuration flags of fs and the environment;
// errors are printed.
func loadConfig(fs *pflag.FlagSet, environ []string, stderr io.Writer) (configs.Config, bool) {
	cfg, err := configs.LoadFlags(fs, environ)
	if err != nil {
		fmt.Fprintf(stderr, "discovery: configuration: %s\n", strings.ReplaceAll(err.Error(), "\n", "\n  "))
		return configs.Config{}, false
	}
	return cfg, true
}

// parseConfig parses args with the configuration flags (after fs's own
// flags) and loads the configuration; ok false means the caller returns
// code.
func parseConfig(fs *pflag.FlagSet, args, environ []string, stderr io.Writer) (cfg configs.Config, code int, ok bool) {
	configs.AddFlags(fs)
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return cfg, code, false
	}
	if cfg, ok = loadConfig(fs, environ, stderr); !ok {
		return cfg, exitUsage, false
	}
	return cfg, exitOK, true
}

func configCmd(args, environ []string, stdout, stderr io.Writer) int {
	cfg, code, ok := parseConfig(newFlagSet("config", stderr), args, environ, stderr)
	if !ok {
		return code
	}
	out, err := cfg.YAML()
	if err != nil {
		fmt.Fprintf(stderr, "discovery: %v\n", err)
		return exitFailure
	}
	if _, err := stdout.Write(out); err != nil {
		return exitFailure
	}
	return exitOK
}

// keygenCmd prints a new cluster secret for cluster.secret
// (DISCOVERY_CLUSTER_SECRET): 32 bytes from the OS's random source.
func keygenCmd(args, _ []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("keygen", stderr)
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	var k [32]byte
	if _, err := rand.Read(k[:]); err != nil {
		fmt.Fprintf(stderr, "discovery keygen: %v\n", err)
		return exitFailure
	}
	fmt.Fprintln(stdout, base64.StdEncoding.EncodeToString(k[:]))
	return exitOK
}

func versionCmd(args, _ []string, stdout, stderr io.Writer) int {
	fs := newFlagSet("version", stderr)
	if code, ok := parseFlags(fs, args, stderr); !ok {
		return code
	}
	fmt.Fprintf(stdout, "version: %s\ncommit: %s\ngo: %s\nplatform: %s/%s\n",
		version, commit, runtime.Version(), runtime.GOOS, runtime.GOARCH)
	return exitOK
}
