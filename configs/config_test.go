package configs

import (
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

// writeFile writes a config file into a test directory and returns its path.
func writeFile(t testing.TB, body string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "discovery.yaml")
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// wantErr fails unless err is non-nil and mentions every part.
func wantErr(t testing.TB, err error, parts ...string) {
	t.Helper()
	if err == nil {
		t.Fatalf("want an error mentioning %q, got nil", parts)
	}
	for _, p := range parts {
		if !strings.Contains(err.Error(), p) {
			t.Fatalf("error %q does not mention %q", err, p)
		}
	}
}

func mustLoad(t testing.TB, args, environ []string) Config {
	t.Helper()
	c, err := Load(args, environ)
	if err != nil {
		t.Fatalf("Load(%q, %q): %v", args, environ, err)
	}
	return c
}

// TestDefaultFile_EqualsDefaultConfig decodes the embedded file alone (no
// viper defaults, so a key missing from the file would decode as zero) and
// compares it with DefaultConfig, so the file cannot drift from the code.
func TestDefaultFile_EqualsDefaultConfig(t *testing.T) {
	v := viper.New()
	v.SetConfigType("yaml")
	if err := v.ReadConfig(strings.NewReader(string(defaultFile))); err != nil {
		t.Fatal(err)
	}
	var got Config
	if err := v.UnmarshalExact(&got, viper.DecodeHook(decodeHook())); err != nil {
		t.Fatal(err)
	}
	zones, _, err := zonesFromYAML(defaultFile, "cluster.zones")
	if err != nil {
		t.Fatal(err)
	}
	got.Cluster.Zones = zones
	normalize(&got, leaves())
	got.Registry.Limits = got.RecordLimits() // derived, not a key of the file

	want := DefaultConfig()
	want.Node.Hostname = "" // resolved at runtime when empty
	if diff := cmp.Diff(want, got); diff != "" {
		t.Fatalf("embedded discovery.yaml differs from DefaultConfig() (-want +got):\n%s", diff)
	}
}

// TestDefaultFile_ListsEveryKeyWithComment checks that the file has exactly
// the struct's keys, each with a comment (which is also the flag help).
func TestDefaultFile_ListsEveryKeyWithComment(t *testing.T) {
	doc, err := parseDoc(defaultFile)
	if err != nil {
		t.Fatal(err)
	}
	var inFile []string
	var walk func(m *yaml.Node, prefix string)
	walk = func(m *yaml.Node, prefix string) {
		for i := 0; i+1 < len(m.Content); i += 2 {
			k, v := m.Content[i], m.Content[i+1]
			key := strings.TrimPrefix(prefix+"."+k.Value, ".")
			if v.Kind == yaml.MappingNode && key != "cluster.zones" && key != "cluster.legacy_zones" {
				walk(v, key)
				continue
			}
			inFile = append(inFile, key)
			if strings.TrimSpace(k.HeadComment) == "" {
				t.Errorf("%s: no comment above the key", key)
			}
		}
	}
	walk(docRoot(doc), "")
	if diff := cmp.Diff(Keys(), inFile); diff != "" {
		t.Fatalf("keys of discovery.yaml differ from Config (-struct +file):\n%s", diff)
	}
	docs := keyComments()
	for _, k := range Keys() {
		if docs[k] == "" {
			t.Errorf("%s: no flag help", k)
		}
	}
}

func TestLoad_NoInputGivesDefaults(t *testing.T) {
	got := mustLoad(t, nil, nil)
	if diff := cmp.Diff(DefaultConfig(), got); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
	h, _ := os.Hostname()
	if h != "" && got.Node.Hostname != h {
		t.Fatalf("node.hostname = %q, want the OS host name %q", got.Node.Hostname, h)
	}
	if got.Node.Env != "dev" || got.Node.Zone != "zone01" || got.Node.Region != "region01" {
		t.Fatalf("node = %+v, want the kratos client defaults dev/zone01/region01", got.Node)
	}
}

func TestLoad_HostnameFromConfigOrOS(t *testing.T) {
	if got := mustLoad(t, nil, []string{"DISCOVERY_NODE_HOSTNAME=node-a"}); got.Node.Hostname != "node-a" {
		t.Fatalf("hostname = %q, want node-a", got.Node.Hostname)
	}
	if got := mustLoad(t, nil, []string{"DISCOVERY_NODE_HOSTNAME="}); got.Node.Hostname != osHostname() {
		t.Fatalf("empty hostname = %q, want OS host name %q", got.Node.Hostname, osHostname())
	}
}

// TestLoad_Precedence sets one key at every level and removes the levels
// from the top: each time the next level down must show.
func TestLoad_Precedence(t *testing.T) {
	type level struct {
		embedded, file, env, flag string // "" = level does not set the key
	}
	cases := []struct {
		name  string
		key   string
		vals  level
		check func(Config) string
	}{
		{
			name: "string", key: "http.addr",
			vals:  level{"addr: 127.0.0.1:1", "addr: 127.0.0.1:2", "127.0.0.1:3", "127.0.0.1:4"},
			check: func(c Config) string { return c.HTTP.Addr },
		},
		{
			name: "duration", key: "http.poll_hold",
			vals:  level{"poll_hold: 21s", "poll_hold: 22s", "23s", "24s"},
			check: func(c Config) string { return c.HTTP.PollHold.String() },
		},
		{
			name: "list", key: "cluster.join",
			vals:  level{"join: [e:1]", "join: [f:1, f:2]", "v:1,v:2", "g:1"},
			check: func(c Config) string { return strings.Join(c.Cluster.Join, ",") },
		},
		{
			name: "zones", key: "cluster.zones",
			vals:  level{"zones: {zE: [e:1]}", "zones: {zF: [f:1]}", "zV=v:1", "zG=g:1|g:2"},
			check: func(c Config) string { return formatZones(c.Cluster.Zones) },
		},
		{
			name: "bool", key: "registry.self_preservation",
			vals: level{"self_preservation: false", "self_preservation: true", "false", "true"},
			check: func(c Config) string {
				return map[bool]string{true: "true", false: "false"}[c.Registry.SelfPreservation]
			},
		},
	}
	section := func(key, body string) string {
		sec, _, _ := strings.Cut(key, ".")
		return sec + ":\n  " + body + "\n"
	}
	def := DefaultConfig()
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			run := func(embedded, file, env, flag string) string {
				t.Helper()
				emb := defaultFile
				switch embedded {
				case "":
				case "-": // an embedded file without the key
					emb = []byte("log:\n  level: info\n")
				default:
					emb = []byte(section(tc.key, embedded))
				}
				fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
				AddFlags(fs)
				var args, environ []string
				if file != "" {
					args = append(args, "--config", writeFile(t, section(tc.key, file)))
				}
				if env != "" {
					environ = append(environ, EnvName(tc.key)+"="+env)
				}
				if flag != "" {
					args = append(args, "--"+tc.key+"="+flag)
				}
				if err := fs.Parse(args); err != nil {
					t.Fatal(err)
				}
				c, err := load(fs, environ, emb)
				if err != nil {
					t.Fatal(err)
				}
				return tc.check(c)
			}
			v := tc.vals
			// Expected text of each level, derived by loading it alone.
			want := []string{
				tc.check(def),
				run(v.embedded, "", "", ""),
				run("", v.file, "", ""),
				run("", "", v.env, ""),
				run("", "", "", v.flag),
			}
			for i := 1; i < len(want); i++ {
				if want[i] == want[i-1] {
					t.Fatalf("levels %d and %d give the same value %q; the test cannot tell them apart", i-1, i, want[i])
				}
			}
			steps := []struct {
				name string
				got  string
				want string
			}{
				{"flag > env > file > embedded", run(v.embedded, v.file, v.env, v.flag), want[4]},
				{"env > file > embedded", run(v.embedded, v.file, v.env, ""), want[3]},
				{"file > embedded", run(v.embedded, v.file, "", ""), want[2]},
				{"embedded > default", run(v.embedded, "", "", ""), want[1]},
				{"default", run("-", "", "", ""), want[0]},
			}
			for _, s := range steps {
				if s.got != s.want {
					t.Errorf("%s: got %q, want %q", s.name, s.got, s.want)
				}
			}
		})
	}
}

// TestLoad_DefaultsFillKeysMissingFromFile: viper only sees environment and
// flag values of keys it knows; defaults make every key known even when the
// embedded file lacks it.
func TestLoad_DefaultsFillKeysMissingFromFile(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	AddFlags(fs)
	c, err := load(fs, []string{"DISCOVERY_REGISTRY_EVICT_AFTER=2m"}, []byte("log:\n  level: debug\n"))
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultConfig()
	want.Log.Level = "debug"
	want.Registry.EvictAfter = 2 * time.Minute
	if diff := cmp.Diff(want, c); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

// TestLoad_DocumentedEnvNames sets each environment variable named in the
// documentation and checks the field it must reach.
func TestLoad_DocumentedEnvNames(t *testing.T) {
	secret := "MDEyMzQ1Njc4OWFiY2RlZg==" // base64 of 16 bytes
	cases := []struct {
		env, val string
		got      func(Config) any
		want     any
	}{
		{"DISCOVERY_HTTP_ADDR", "127.0.0.1:0", func(c Config) any { return c.HTTP.Addr }, "127.0.0.1:0"},
		{"DISCOVERY_HTTP_ADVERTISE", "10.0.0.5:7171", func(c Config) any { return c.HTTP.Advertise }, "10.0.0.5:7171"},
		{"DISCOVERY_NODE_REGION", "sh", func(c Config) any { return c.Node.Region }, "sh"},
		{"DISCOVERY_NODE_ZONE", "sh001", func(c Config) any { return c.Node.Zone }, "sh001"},
		{"DISCOVERY_NODE_ENV", "prod", func(c Config) any { return c.Node.Env }, "prod"},
		{"DISCOVERY_NODE_HOSTNAME", "node1", func(c Config) any { return c.Node.Hostname }, "node1"},
		{"DISCOVERY_CLUSTER_BIND", "127.0.0.1:0", func(c Config) any { return c.Cluster.Bind }, "127.0.0.1:0"},
		{"DISCOVERY_CLUSTER_ADVERTISE", "10.0.0.5:7946", func(c Config) any { return c.Cluster.Advertise }, "10.0.0.5:7946"},
		{"DISCOVERY_CLUSTER_JOIN", "node1:7946, node2:7946", func(c Config) any { return c.Cluster.Join }, []string{"node1:7946", "node2:7946"}},
		{"DISCOVERY_CLUSTER_SECRET", secret, func(c Config) any { return c.Cluster.Secret }, secret},
		{"DISCOVERY_HTTP_LIMITS_MAX_BODY_BYTES", "65536", func(c Config) any { return c.HTTP.Limits.MaxBodyBytes }, int64(65536)},
		{"DISCOVERY_CLUSTER_ZONES", "zoneB=h1:7171|h2:7171;zoneC=h3:7171",
			func(c Config) any { return c.Cluster.Zones },
			map[string][]string{"zoneB": {"h1:7171", "h2:7171"}, "zoneC": {"h3:7171"}}},
		{"DISCOVERY_HTTP_POLL_HOLD", "20s", func(c Config) any { return c.HTTP.PollHold }, 20 * time.Second},
		{"DISCOVERY_HTTP_SHUTDOWN_TIMEOUT", "3s", func(c Config) any { return c.HTTP.ShutdownTimeout }, 3 * time.Second},
		{"DISCOVERY_REGISTRY_SELF_PRESERVATION", "false", func(c Config) any { return c.Registry.SelfPreservation }, false},
		{"DISCOVERY_REGISTRY_PROTECT_THRESHOLD", "0.5", func(c Config) any { return c.Registry.ProtectThreshold }, 0.5},
		{"DISCOVERY_CLUSTER_INIT_PROTECT", "true", func(c Config) any { return c.Cluster.InitProtect }, true},
		{"DISCOVERY_CLUSTER_NODE_NAME", "n1", func(c Config) any { return c.Cluster.NodeName }, "n1"},
		{"DISCOVERY_CLUSTER_LABEL", "stack-a", func(c Config) any { return c.Cluster.Label }, "stack-a"},
		{"DISCOVERY_LOG_LEVEL", "debug", func(c Config) any { return c.Log.Level }, "debug"},
		{"DISCOVERY_LOG_FORMAT", "json", func(c Config) any { return c.Log.Format }, "json"},
	}
	for _, tc := range cases {
		t.Run(tc.env, func(t *testing.T) {
			c := mustLoad(t, nil, []string{tc.env + "=" + tc.val})
			if diff := cmp.Diff(tc.want, tc.got(c)); diff != "" {
				t.Fatalf("%s=%s (-want +got):\n%s", tc.env, tc.val, diff)
			}
		})
	}
}

// TestLoad_EveryKeyHasWorkingEnvAndFlag sets every key through its
// environment variable and its flag with a non-default value of the right
// kind and checks it lands in the field (generated from the key list, so a
// new key is covered without editing the test).
func TestLoad_EveryKeyHasWorkingEnvAndFlag(t *testing.T) {
	// Keys that are only valid together with another one.
	tlsSet := [][2]string{{"http.tls.addr", "127.0.0.1:0"}, {"http.tls.cert_file", "c.pem"}, {"http.tls.key_file", "k.pem"}}
	requires := map[string][][2]string{
		"cluster.accept_secrets": {{"cluster.secret", "MDEyMzQ1Njc4OWFiY2RlZg=="}},
		"http.tls.addr":          tlsSet[1:],
		"http.tls.advertise":     tlsSet,
		"http.tls.cert_file":     {tlsSet[0], tlsSet[2]},
		"http.tls.key_file":      tlsSet[:2],
	}
	for _, l := range leaves() {
		text, want := sampleValue(t, l)
		t.Run(l.key, func(t *testing.T) {
			var withArgs, withEnv []string
			for _, r := range requires[l.key] {
				withArgs = append(withArgs, "--"+r[0]+"="+r[1])
				withEnv = append(withEnv, EnvName(r[0])+"="+r[1])
			}
			for _, src := range []struct {
				name          string
				args, environ []string
			}{
				{"env", nil, append(withEnv, EnvName(l.key)+"="+text)},
				{"flag", append(withArgs, "--"+l.key+"="+text), nil},
			} {
				c, err := Load(src.args, src.environ)
				if err != nil {
					t.Fatalf("%s: %v", src.name, err)
				}
				if diff := cmp.Diff(want, l.value(&c).Interface()); diff != "" {
					t.Fatalf("%s %s=%s (-want +got):\n%s", src.name, l.key, text, diff)
				}
			}
		})
	}
}

// sampleValue is a valid non-default value for a key and its text form.
func sampleValue(t *testing.T, l leaf) (string, any) {
	t.Helper()
	def := DefaultConfig()
	cur := l.value(&def)
	special := map[string]struct {
		text string
		want any
	}{
		"http.poll_hold":             {"7s", 7 * time.Second},
		"http.addr":                  {"127.0.0.1:0", "127.0.0.1:0"},
		"cluster.bind":               {"127.0.0.1:0", "127.0.0.1:0"},
		"cluster.advertise":          {"10.0.0.5:7946", "10.0.0.5:7946"},
		"http.advertise":             {"10.0.0.5:7171", "10.0.0.5:7171"},
		"http.tls.addr":              {"127.0.0.1:7443", "127.0.0.1:7443"},
		"http.tls.advertise":         {"10.0.0.5:7443", "10.0.0.5:7443"},
		"cluster.secret":             {"MDEyMzQ1Njc4OWFiY2RlZg==", "MDEyMzQ1Njc4OWFiY2RlZg=="},
		"cluster.accept_secrets":     {"ZmVkY2JhOTg3NjU0MzIxMA==", []string{"ZmVkY2JhOTg3NjU0MzIxMA=="}},
		"security.write_cidrs":       {"10.0.0.0/8,192.168.1.0/24", []string{"10.0.0.0/8", "192.168.1.0/24"}},
		"registry.max_apps":          {"150000", 150000}, // at most cluster.max_digests
		"security.admin_token":       {"0123456789abcdef-token", "0123456789abcdef-token"},
		"cluster.peer_timeout":       {"7s", 7 * time.Second},
		"cluster.renew_interval":     {"40s", 40 * time.Second}, // at most half of registry.evict_after
		"cluster.renew_linger":       {"5ms", 5 * time.Millisecond},
		"registry.evict_after":       {"2m", 2 * time.Minute},
		"registry.protect_threshold": {"0.5", 0.5},
		"log.level":                  {"debug", "debug"},
		"log.format":                 {"json", "json"},
	}
	if s, ok := special[l.key]; ok {
		return s.text, s.want
	}
	switch l.kind {
	case kindString:
		return "x-" + strings.ReplaceAll(l.key, ".", "-"), reflect.ValueOf("x-" + strings.ReplaceAll(l.key, ".", "-")).Convert(l.typ).Interface()
	case kindBool:
		return map[bool]string{true: "false", false: "true"}[cur.Bool()], !cur.Bool()
	case kindInt:
		n := cur.Int()*2 + 1000 // stays above any minimum
		return strconv.FormatInt(n, 10), reflect.ValueOf(n).Convert(l.typ).Interface()
	case kindDuration:
		d := time.Duration(cur.Int()) + 2*time.Hour // stays above any minimum
		return d.String(), d
	case kindList:
		return "a:1,b:2", []string{"a:1", "b:2"}
	case kindZones:
		return "zX=x:1|x:2", map[string][]string{"zX": {"x:1", "x:2"}}
	}
	t.Fatalf("%s: no sample for kind %d", l.key, l.kind)
	return "", nil
}

func TestLoad_Lists(t *testing.T) {
	file := writeFile(t, "cluster:\n  join: [f1:1, f2:2]\n")
	cases := []struct {
		name          string
		args, environ []string
		want          []string
	}{
		{"file list", []string{"--config", file}, nil, []string{"f1:1", "f2:2"}},
		{"file comma string", []string{"--config", writeFile(t, "cluster:\n  join: \"a:1, b:2\"\n")}, nil, []string{"a:1", "b:2"}},
		{"env comma list, blanks and empties dropped", nil, []string{"DISCOVERY_CLUSTER_JOIN= a:1 ,,b:2, "}, []string{"a:1", "b:2"}},
		{"empty env clears the file's list", []string{"--config", file}, []string{"DISCOVERY_CLUSTER_JOIN="}, nil},
		{"flag comma list", []string{"--cluster.join=a:1,b:2"}, nil, []string{"a:1", "b:2"}},
		{"flag repeated", []string{"--cluster.join", "a:1", "--cluster.join", "b:2"}, nil, []string{"a:1", "b:2"}},
		{"flag replaces env", []string{"--cluster.join=c:3"}, []string{"DISCOVERY_CLUSTER_JOIN=a:1,b:2"}, []string{"c:3"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := mustLoad(t, tc.args, tc.environ)
			if diff := cmp.Diff(tc.want, c.Cluster.Join); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestParseZones(t *testing.T) {
	ok := []struct {
		in   string
		want map[string][]string
	}{
		{"", map[string][]string{}},
		{"  ", map[string][]string{}},
		{"zoneB=h1:7171|h2:7171;zoneC=h3:7171", map[string][]string{"zoneB": {"h1:7171", "h2:7171"}, "zoneC": {"h3:7171"}}},
		{" zoneB = h1:7171 , h2:7171 ; ", map[string][]string{"zoneB": {"h1:7171", "h2:7171"}}},
		{"sh001=10.0.0.1:7171", map[string][]string{"sh001": {"10.0.0.1:7171"}}},
	}
	for _, tc := range ok {
		got, err := parseZones(tc.in)
		if err != nil {
			t.Errorf("parseZones(%q): %v", tc.in, err)
			continue
		}
		if diff := cmp.Diff(tc.want, got); diff != "" {
			t.Errorf("parseZones(%q) (-want +got):\n%s", tc.in, diff)
		}
		if len(got) > 0 {
			back, err := parseZones(formatZones(got))
			if err != nil || !cmp.Equal(back, got) {
				t.Errorf("formatZones(%v) does not round-trip: %v %v", got, back, err)
			}
		}
	}
	bad := []struct{ in, mention string }{
		{"zoneB", `"zoneB"`},
		{"=h1:1", `"=h1:1"`},
		{"zoneB=", `zone "zoneB" has no seeds`},
		{"zoneB=|,", `zone "zoneB" has no seeds`},
		{"zoneB=h:1;zoneB=h:2", `zone "zoneB" listed twice`},
	}
	for _, tc := range bad {
		_, err := parseZones(tc.in)
		wantErr(t, err, tc.mention)
	}
}

func TestLoad_Zones(t *testing.T) {
	want := map[string][]string{"zoneB": {"h1:7171", "h2:7171"}, "zoneC": {"h3:7171"}}
	cases := []struct {
		name string
		file string
	}{
		{"mapping of lists keeps zone case", "cluster:\n  zones:\n    zoneB: [h1:7171, h2:7171]\n    zoneC:\n      - h3:7171\n"},
		{"mapping of comma strings", "cluster:\n  zones:\n    zoneB: h1:7171,h2:7171\n    zoneC: h3:7171\n"},
		{"one-line string", "cluster:\n  zones: \"zoneB=h1:7171|h2:7171;zoneC=h3:7171\"\n"},
		{"section keys are case-insensitive like viper", "Cluster:\n  Zones:\n    zoneB: [h1:7171, h2:7171]\n    zoneC: [h3:7171]\n"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			c := mustLoad(t, []string{"--config", writeFile(t, tc.file)}, nil)
			if diff := cmp.Diff(want, c.Cluster.Zones); diff != "" {
				t.Fatalf("(-want +got):\n%s", diff)
			}
		})
	}
	t.Run("env replaces the file's map", func(t *testing.T) {
		c := mustLoad(t, []string{"--config", writeFile(t, cases[0].file)}, []string{"DISCOVERY_CLUSTER_ZONES=zoneD=d:1"})
		if diff := cmp.Diff(map[string][]string{"zoneD": {"d:1"}}, c.Cluster.Zones); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
	t.Run("empty env clears", func(t *testing.T) {
		c := mustLoad(t, []string{"--config", writeFile(t, cases[0].file)}, []string{"DISCOVERY_CLUSTER_ZONES="})
		if c.Cluster.Zones != nil {
			t.Fatalf("zones = %v, want none", c.Cluster.Zones)
		}
	})
	t.Run("flag replaces env", func(t *testing.T) {
		c := mustLoad(t, []string{"--cluster.zones", "zoneE=e:1"}, []string{"DISCOVERY_CLUSTER_ZONES=zoneD=d:1"})
		if diff := cmp.Diff(map[string][]string{"zoneE": {"e:1"}}, c.Cluster.Zones); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
	for _, bad := range []struct{ name, file, mention string }{
		{"zone without seeds", "cluster:\n  zones:\n    zoneB: []\n", "cluster.zones.zoneB"},
		{"seed not a string", "cluster:\n  zones:\n    zoneB: [{a: 1}]\n", "cluster.zones"},
		{"list instead of map", "cluster:\n  zones: [a, b]\n", "cluster.zones"},
	} {
		t.Run(bad.name, func(t *testing.T) {
			_, err := Load([]string{"--config", writeFile(t, bad.file)}, nil)
			wantErr(t, err, bad.mention)
		})
	}
	t.Run("bad env value", func(t *testing.T) {
		_, err := Load(nil, []string{"DISCOVERY_CLUSTER_ZONES=zoneB"})
		wantErr(t, err, "DISCOVERY_CLUSTER_ZONES", "cluster.zones", "zoneB")
	})
	t.Run("bad flag value", func(t *testing.T) {
		_, err := Load([]string{"--cluster.zones=zoneB="}, nil)
		wantErr(t, err, "--cluster.zones", "zoneB")
	})
}

func TestLoad_UnknownKeys(t *testing.T) {
	cases := []struct {
		name          string
		args, environ []string
		mention       []string
	}{
		{"file top-level", []string{"--config", writeFile(t, "htp:\n  addr: :1\n")}, nil, []string{"htp.addr", "unknown key"}},
		{"file nested", []string{"--config", writeFile(t, "http:\n  adr: :1\n")}, nil, []string{"http.adr", "unknown key"}},
		{"file deeper", []string{"--config", writeFile(t, "http:\n  limits:\n    max_bodybytes: 1\n")}, nil, []string{"http.limits.max_bodybytes"}},
		{"file value where a section belongs", []string{"--config", writeFile(t, "http: 5\n")}, nil, []string{"http", "section"}},
		{"file section where a value belongs", []string{"--config", writeFile(t, "http:\n  addr:\n    port: 1\n")}, nil, []string{"http.addr.port"}},
		{"env", nil, []string{"DISCOVERY_HTTP_ADR=:1"}, []string{"DISCOVERY_HTTP_ADR"}},
		{"env renamed key", nil, []string{"DISCOVERY_CLUSTER_SEEDS=a:1"}, []string{"DISCOVERY_CLUSTER_SEEDS"}},
		{"flag", []string{"--http.adr=:1"}, nil, []string{"http.adr"}},
		{"positional argument", []string{"serve"}, nil, []string{"serve"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args, tc.environ)
			wantErr(t, err, tc.mention...)
		})
	}
	t.Run("all unknown env names are reported together", func(t *testing.T) {
		_, err := Load(nil, []string{"DISCOVERY_A=1", "DISCOVERY_B=2"})
		wantErr(t, err, "DISCOVERY_A", "DISCOVERY_B")
	})
}

func TestLoad_IgnoredEnv(t *testing.T) {
	environ := []string{
		"DISCOVERY_NODES=127.0.0.1:7171", // kratos client's seeds
		"DISCOVERY_IMAGE=discovery:dev",  // compose image tag
		"discovery_http_addr=:1",         // not our prefix (names are case-sensitive)
		"HOSTNAME=x", "PATH=/bin", "MALFORMED",
	}
	if diff := cmp.Diff(DefaultConfig(), mustLoad(t, nil, environ)); diff != "" {
		t.Fatalf("(-want +got):\n%s", diff)
	}
}

func TestLoad_LastEnvWins(t *testing.T) {
	c := mustLoad(t, nil, []string{"DISCOVERY_NODE_ZONE=a", "DISCOVERY_NODE_ZONE=b"})
	if c.Node.Zone != "b" {
		t.Fatalf("zone = %q, want the last value b", c.Node.Zone)
	}
}

func TestLoad_InvalidValues(t *testing.T) {
	cases := []struct {
		name          string
		args, environ []string
		mention       []string
	}{
		{"env integer", nil, []string{"DISCOVERY_HTTP_MAX_POLLERS=many"}, []string{"DISCOVERY_HTTP_MAX_POLLERS", "http.max_pollers", "many"}},
		{"env integer overflow", nil, []string{"DISCOVERY_HTTP_LIMITS_MAX_APPIDS=99999999999999999999"}, []string{"http.limits.max_appids"}},
		{"env duration", nil, []string{"DISCOVERY_HTTP_POLL_HOLD=30"}, []string{"DISCOVERY_HTTP_POLL_HOLD", "http.poll_hold"}},
		{"env bool", nil, []string{"DISCOVERY_REGISTRY_SELF_PRESERVATION=maybe"}, []string{"registry.self_preservation"}},
		{"env float", nil, []string{"DISCOVERY_REGISTRY_PROTECT_THRESHOLD=high"}, []string{"registry.protect_threshold"}},
		{"file integer", []string{"--config", writeFile(t, "http:\n  max_pollers: many\n")}, nil, []string{"http.max_pollers"}},
		{"file duration", []string{"--config", writeFile(t, "http:\n  poll_hold: soon\n")}, nil, []string{"http.poll_hold", "soon"}},
		{"file bare number as duration", []string{"--config", writeFile(t, "registry:\n  evict_after: 90\n")}, nil, []string{"registry.evict_after", "unit"}},
		{"file list of maps", []string{"--config", writeFile(t, "cluster:\n  join: [{a: 1}]\n")}, nil, []string{"cluster.join"}},
		{"file not YAML", []string{"--config", writeFile(t, "http: [\n")}, nil, []string{"config file"}},
		{"flag duration", []string{"--http.poll_hold=soon"}, nil, []string{"http.poll_hold"}},
		{"flag integer", []string{"--http.max_pollers=many"}, nil, []string{"http.max_pollers"}},
		// Values that parse but fail a section's Validate name the full key.
		{"validate http", nil, []string{"DISCOVERY_HTTP_POLL_HOLD=31s"}, []string{"http.poll_hold"}},
		{"validate registry", nil, []string{"DISCOVERY_REGISTRY_EVICT_AFTER=0s"}, []string{"registry.evict_after"}},
		{"validate cluster", nil, []string{"DISCOVERY_CLUSTER_QUEUE_SIZE=0"}, []string{"cluster.queue_size"}},
		{"validate node", nil, []string{"DISCOVERY_NODE_ZONE="}, []string{"node.zone"}},
		// Cross-section: peers would evict the node's own record between renews.
		{"renew slower than eviction", nil, []string{"DISCOVERY_CLUSTER_RENEW_INTERVAL=2m"}, []string{"cluster.renew_interval", "registry.evict_after"}},
		{"validate node spaces", nil, []string{"DISCOVERY_NODE_ENV=my env"}, []string{"node.env"}},
		{"validate log level", nil, []string{"DISCOVERY_LOG_LEVEL=verbose"}, []string{"log.level", "verbose"}},
		{"validate log format", []string{"--log.format=xml"}, nil, []string{"log.format", "xml"}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Load(tc.args, tc.environ)
			wantErr(t, err, tc.mention...)
		})
	}
}

func TestLoad_ConfigFile(t *testing.T) {
	t.Run("missing file", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "nope.yaml")
		_, err := Load([]string{"--config", p}, nil)
		wantErr(t, err, p)
		if !errors.Is(err, os.ErrNotExist) {
			t.Fatalf("error %v does not wrap os.ErrNotExist", err)
		}
	})
	t.Run("missing file from env", func(t *testing.T) {
		p := filepath.Join(t.TempDir(), "nope.yaml")
		_, err := Load(nil, []string{EnvConfig + "=" + p})
		wantErr(t, err, p)
	})
	t.Run("env names the file, flag wins", func(t *testing.T) {
		a := writeFile(t, "node:\n  zone: from-env-file\n")
		b := writeFile(t, "node:\n  zone: from-flag-file\n")
		if c := mustLoad(t, nil, []string{EnvConfig + "=" + a}); c.Node.Zone != "from-env-file" {
			t.Fatalf("zone = %q", c.Node.Zone)
		}
		if c := mustLoad(t, []string{"--config", b}, []string{EnvConfig + "=" + a}); c.Node.Zone != "from-flag-file" {
			t.Fatalf("zone = %q", c.Node.Zone)
		}
	})
	t.Run("empty file keeps defaults", func(t *testing.T) {
		if diff := cmp.Diff(DefaultConfig(), mustLoad(t, []string{"--config", writeFile(t, "")}, nil)); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
	t.Run("partial file keeps other keys", func(t *testing.T) {
		c := mustLoad(t, []string{"--config", writeFile(t, "http:\n  limits:\n    max_addrs: 8\n")}, nil)
		want := DefaultConfig()
		want.HTTP.Limits.MaxAddrs = 8
		want.Registry.Limits = want.RecordLimits() // stored records obey the same limit
		if diff := cmp.Diff(want, c); diff != "" {
			t.Fatalf("(-want +got):\n%s", diff)
		}
	})
}

// TestYAML_RoundTrip: the printed configuration is a valid --config file
// that loads back to the same configuration.
func TestYAML_RoundTrip(t *testing.T) {
	c := mustLoad(t, []string{
		"--http.addr=127.0.0.1:0", "--cluster.join=a:1,b:2", "--cluster.zones=zoneB=h1:7171|h2:7171;zoneC=h3:7171",
		"--registry.protected_evict_after=2h30m", "--http.poll_hold=1500ms", "--node.hostname=y",
		"--registry.self_preservation=false", "--registry.protect_threshold=0.7",
	}, []string{"DISCOVERY_NODE_ENV=prod", "DISCOVERY_CLUSTER_NODE_NAME=yes"})
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	back := mustLoad(t, []string{"--config", writeFile(t, string(out))}, nil)
	if diff := cmp.Diff(c, back); diff != "" {
		t.Fatalf("round trip through YAML() (-want +got):\n%s\n%s", diff, out)
	}
	for _, s := range []string{"# Listen address", "zoneB:", "protected_evict_after: 2h30m", "evict_after: 1m30s"} {
		if !strings.Contains(string(out), s) {
			t.Errorf("output lacks %q:\n%s", s, out)
		}
	}
}

func TestYAML_RedactsSecret(t *testing.T) {
	secret := "MDEyMzQ1Njc4OWFiY2RlZg=="
	c := mustLoad(t, nil, []string{"DISCOVERY_CLUSTER_SECRET=" + secret})
	out, err := c.YAML()
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(out), secret) || !strings.Contains(string(out), "secret: "+redacted) {
		t.Fatalf("secret not redacted:\n%s", out)
	}
	if c.Cluster.Secret != secret {
		t.Fatal("YAML modified the config")
	}
	// An empty secret stays visibly empty.
	out, err = DefaultConfig().YAML()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(out), `secret: ""`) {
		t.Fatalf("empty secret not printed as empty:\n%s", out)
	}
}

func TestEnvNames_AreUniqueAndDocumented(t *testing.T) {
	seen := map[string]string{}
	for _, k := range Keys() {
		n := EnvName(k)
		if prev, dup := seen[n]; dup {
			t.Errorf("keys %s and %s share the environment name %s", prev, k, n)
		}
		seen[n] = k
	}
	if EnvName("http.limits.max_body_bytes") != "DISCOVERY_HTTP_LIMITS_MAX_BODY_BYTES" {
		t.Fatal(EnvName("http.limits.max_body_bytes"))
	}
}

func TestAddFlags_OnePerKey(t *testing.T) {
	fs := pflag.NewFlagSet("t", pflag.ContinueOnError)
	AddFlags(fs)
	for _, k := range Keys() {
		f := fs.Lookup(k)
		if f == nil {
			t.Errorf("no flag --%s", k)
			continue
		}
		if !strings.Contains(f.Usage, EnvName(k)) || len(f.Usage) < len(EnvName(k))+10 {
			t.Errorf("--%s: usage %q lacks a description or the env name", k, f.Usage)
		}
	}
	if fs.Lookup(FlagConfig) == nil {
		t.Error("no --config flag")
	}
}

func TestValidate_PrefixesSectionKeys(t *testing.T) {
	c := DefaultConfig()
	c.Registry.EvictInterval = 0
	c.HTTP.Addr = ""
	c.Cluster.Bind = ""
	err := c.Validate()
	wantErr(t, err, "registry.evict_interval:", "http.addr:", "cluster.bind:")
	if strings.Contains(err.Error(), "registry.registry.") || strings.Contains(err.Error(), "http.http.") || strings.Contains(err.Error(), "cluster.cluster.") {
		t.Fatalf("doubled prefix: %v", err)
	}
	if err := DefaultConfig().Validate(); err != nil {
		t.Fatalf("defaults invalid: %v", err)
	}
}

func TestLogConfig_SlogLevel(t *testing.T) {
	for _, name := range []string{"debug", "info", "warn", "error"} {
		lv, err := LogConfig{Level: name}.SlogLevel()
		if err != nil || !strings.EqualFold(lv.String(), name) {
			t.Errorf("%s: %v %v", name, lv, err)
		}
	}
}

// TestDecodeErrors_OneLinePerKey checks the rewriting of mapstructure's
// nested error tree.
func TestDecodeErrors_OneLinePerKey(t *testing.T) {
	_, err := Load([]string{"--config", writeFile(t, "http:\n  max_pollers: x\n  poll_hold: y\n")}, nil)
	wantErr(t, err, "http.max_pollers:", "http.poll_hold:")
	if strings.Contains(err.Error(), "decoding failed due to") {
		t.Fatalf("raw mapstructure wording left in %q", err)
	}
}

// A string limit the registry cannot store (hostname lengths are 16 bits)
// is refused by name.
func TestValidate_MaxStringLenBounded(t *testing.T) {
	_, err := Load(nil, []string{"DISCOVERY_HTTP_LIMITS_MAX_STRING_LEN=70000"})
	wantErr(t, err, "http.limits.max_string_len: must be <= 65535")
}
