package client_test

import (
	"errors"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/discovery-go/discovery/api/client"
)

func envMap(m map[string]string) client.Option {
	return client.WithEnv(func(k string) string { return m[k] })
}

func TestNew_MissingNodesIsAnError(t *testing.T) {
	_, err := client.New(client.Config{}, envMap(nil))
	if !errors.Is(err, client.ErrNoNodes) {
		t.Fatalf("New without nodes: got %v, want ErrNoNodes", err)
	}
}

func TestNew_EnvironmentFallbacks(t *testing.T) {
	c, err := client.New(client.Config{}, envMap(map[string]string{
		"DISCOVERY_NODES": " 127.0.0.1:7171, ,127.0.0.1:7172",
		"REGION":          "sh", "ZONE": "sh001", "DEPLOY_ENV": "prod", "HOSTNAME": "pod-1",
	}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := c.Config()
	if !slices.Equal(cfg.Nodes, []string{"127.0.0.1:7171", "127.0.0.1:7172"}) {
		t.Errorf("Nodes = %q", cfg.Nodes)
	}
	if cfg.Region != "sh" || cfg.Zone != "sh001" || cfg.Env != "prod" || cfg.Hostname != "pod-1" {
		t.Errorf("identity = %q %q %q %q", cfg.Region, cfg.Zone, cfg.Env, cfg.Hostname)
	}
	def := client.DefaultConfig()
	if cfg.RenewInterval != def.RenewInterval || cfg.PollTimeout != def.PollTimeout || cfg.MaxResponseBytes != 16<<20 {
		t.Errorf("tunables not defaulted: %+v", cfg)
	}
}

func TestNew_KratosDefaults(t *testing.T) {
	c, err := client.New(client.Config{Nodes: []string{"127.0.0.1:7171"}}, envMap(nil))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	cfg := c.Config()
	host, _ := os.Hostname()
	if cfg.Region != "region01" || cfg.Zone != "zone01" || cfg.Env != "dev" || cfg.Hostname != host {
		t.Errorf("defaults = %q %q %q %q, want region01 zone01 dev %q", cfg.Region, cfg.Zone, cfg.Env, cfg.Hostname, host)
	}
}

func TestNew_ExplicitFieldsWinOverEnvironment(t *testing.T) {
	c, err := client.New(client.Config{Nodes: []string{"127.0.0.1:1"}, Zone: "z9"},
		envMap(map[string]string{"DISCOVERY_NODES": "127.0.0.1:2", "ZONE": "zenv"}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if cfg := c.Config(); cfg.Zone != "z9" || !slices.Equal(cfg.Nodes, []string{"127.0.0.1:1"}) {
		t.Errorf("got zone %q nodes %q", cfg.Zone, cfg.Nodes)
	}
}

func TestNew_InvalidConfigNamesTheField(t *testing.T) {
	for _, tc := range []struct {
		name  string
		cfg   client.Config
		field string
	}{
		{"node without port", client.Config{Nodes: []string{"localhost"}}, "Nodes[0]"},
		{"node bad port", client.Config{Nodes: []string{"127.0.0.1:1", "h:99999"}}, "Nodes[1]"},
		{"negative renew", client.Config{Nodes: []string{"h:1"}, RenewInterval: -1}, "RenewInterval"},
		{"backoff max below initial", client.Config{Nodes: []string{"h:1"}, BackoffInitial: 2e9, BackoffMax: 1e9}, "BackoffMax"},
		{"tiny body cap", client.Config{Nodes: []string{"h:1"}, MaxResponseBytes: 10}, "MaxResponseBytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := client.New(tc.cfg, envMap(nil))
			if !errors.Is(err, client.ErrInvalidConfig) || !strings.Contains(err.Error(), tc.field) {
				t.Fatalf("got %v, want ErrInvalidConfig naming %s", err, tc.field)
			}
		})
	}
}
