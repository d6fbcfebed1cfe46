package configs

import (
	"bytes"
	_ "embed"
	"errors"
	"fmt"
	"io"
	"os"
	"reflect"
	"sort"
	"strings"
	"time"

	"github.com/spf13/pflag"
	"github.com/spf13/viper"
	"go.yaml.in/yaml/v3"
)

//go:embed discovery.yaml
var defaultFile []byte

const (
	envPrefix = "DISCOVERY_"
	// EnvConfig names the config file when --config is not given.
	EnvConfig = "DISCOVERY_CONFIG"
	// FlagConfig is the flag naming a YAML file merged over the defaults.
	FlagConfig = "config"
)

// ignoredEnv reports DISCOVERY_* variables that belong to other programs and
// are not configuration keys: DISCOVERY_NODES is the kratos client's seed
// list (often set for every process of a deployment) and DISCOVERY_IMAGE the
// image tag used by deploy/compose.
func ignoredEnv(name string) bool {
	return name == "DISCOVERY_NODES" || name == "DISCOVERY_IMAGE"
}

// DefaultYAML returns the embedded default file.
func DefaultYAML() []byte { return bytes.Clone(defaultFile) }

// EnvName returns the environment variable that sets key, e.g.
// "http.addr" → "DISCOVERY_HTTP_ADDR".
func EnvName(key string) string { return envName(key) }

// Keys lists every configuration key in file order.
func Keys() []string {
	ls := leaves()
	out := make([]string, len(ls))
	for i, l := range ls {
		out[i] = l.key
	}
	return out
}

// AddFlags adds --config and one flag per configuration key (named by the
// key: --http.addr, --cluster.join, ...) to fs. Lists take comma-separated
// values or repeat the flag; --cluster.zones takes the one-line map syntax.
func AddFlags(fs *pflag.FlagSet) {
	docs := keyComments()
	d := DefaultConfig()
	fs.String(FlagConfig, "", "YAML configuration file merged over the defaults (env "+EnvConfig+")")
	for _, l := range leaves() {
		usage := strings.TrimSuffix(docs[l.key], ".") + " (env " + envName(l.key) + ")"
		v := l.value(&d)
		switch l.kind {
		case kindString:
			fs.String(l.key, v.String(), usage)
		case kindBool:
			fs.Bool(l.key, v.Bool(), usage)
		case kindInt:
			fs.Int64(l.key, v.Int(), usage)
		case kindFloat:
			fs.Float64(l.key, v.Float(), usage)
		case kindDuration:
			fs.Duration(l.key, time.Duration(v.Int()), usage)
		case kindList:
			fs.StringSlice(l.key, v.Interface().([]string), usage)
		case kindZones:
			fs.String(l.key, formatZones(v.Interface().(map[string][]string)), usage)
		}
	}
}

// Load builds the configuration from command-line arguments (flags only, no
// positional arguments) and an environment (os.Environ() form). See
// LoadFlags for the sources and their precedence.
func Load(args []string, environ []string) (Config, error) {
	fs := pflag.NewFlagSet("discovery", pflag.ContinueOnError)
	fs.SetOutput(io.Discard)
	AddFlags(fs)
	if err := fs.Parse(args); err != nil {
		return Config{}, err
	}
	if fs.NArg() > 0 {
		return Config{}, fmt.Errorf("unexpected argument %q", fs.Arg(0))
	}
	return LoadFlags(fs, environ)
}

// LoadFlags builds the configuration from a parsed flag set prepared with
// AddFlags and an environment. Sources, lowest precedence first: defaults,
// the embedded discovery.yaml, the file named by --config (or
// DISCOVERY_CONFIG), DISCOVERY_* environment variables, flags that were set.
// Unknown keys in the file and unknown DISCOVERY_* variables are errors, as
// are invalid values; every message names the key (and the variable). The
// result is validated; an empty node.hostname becomes the OS host name.
func LoadFlags(fs *pflag.FlagSet, environ []string) (Config, error) {
	return load(fs, environ, defaultFile)
}

func load(fs *pflag.FlagSet, environ []string, embedded []byte) (Config, error) {
	ls := leaves()
	env, err := readEnv(environ, ls)
	if err != nil {
		return Config{}, err
	}

	v := viper.New()
	v.SetConfigType("yaml")
	def := DefaultConfig()
	for _, l := range ls {
		if l.kind == kindZones {
			// The map has no default entries; a nil default would shadow
			// the file's entries in viper's key walk.
			continue
		}
		v.SetDefault(l.key, l.value(&def).Interface())
	}

	// The zone maps (cluster.zones, cluster.legacy_zones) are tracked
	// outside viper as well: viper lower-cases map keys, and zone names
	// are case-sensitive identifiers.
	if err := v.ReadConfig(bytes.NewReader(embedded)); err != nil {
		return Config{}, fmt.Errorf("embedded default configuration: %w", err)
	}
	if err := checkFileKeys(embedded, ls); err != nil {
		return Config{}, fmt.Errorf("embedded default configuration: %w", err)
	}
	zones := map[string]map[string][]string{} // zone-map key -> value
	if err := zoneMapsFromYAML(embedded, ls, zones); err != nil {
		return Config{}, fmt.Errorf("embedded default configuration: %w", err)
	}

	path := env.configPath
	if f := fs.Lookup(FlagConfig); f != nil && f.Changed {
		path = f.Value.String()
	}
	if path != "" {
		data, err := os.ReadFile(path)
		if err != nil {
			return Config{}, fmt.Errorf("config file: %w", err)
		}
		if err := v.MergeConfig(bytes.NewReader(data)); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
		if err := checkFileKeys(data, ls); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
		if err := zoneMapsFromYAML(data, ls, zones); err != nil {
			return Config{}, fmt.Errorf("config file %s: %w", path, err)
		}
	}

	if len(env.values) > 0 {
		m := map[string]any{}
		for key, val := range env.values {
			setNested(m, key, val)
		}
		if err := v.MergeConfigMap(m); err != nil {
			return Config{}, fmt.Errorf("environment: %w", err)
		}
	}
	for k, z := range env.zones {
		zones[k] = z
	}

	for _, l := range ls {
		f := fs.Lookup(l.key)
		if f == nil {
			continue
		}
		if l.kind == kindZones {
			if f.Changed {
				z, err := parseZones(f.Value.String())
				if err != nil {
					return Config{}, fmt.Errorf("flag --%s: %w", l.key, err)
				}
				zones[l.key] = z
			}
			continue
		}
		if err := v.BindPFlag(l.key, f); err != nil {
			return Config{}, fmt.Errorf("flag --%s: %w", l.key, err)
		}
	}

	var cfg Config
	if err := v.UnmarshalExact(&cfg, viper.DecodeHook(decodeHook())); err != nil {
		return Config{}, decodeErrors(err)
	}
	for _, l := range ls {
		if z, ok := zones[l.key]; ok && l.kind == kindZones {
			l.value(&cfg).Set(reflect.ValueOf(z))
		}
	}
	normalize(&cfg, ls)
	if cfg.Node.Hostname == "" {
		cfg.Node.Hostname = osHostname()
	}
	cfg.Registry.Limits = cfg.RecordLimits()
	if err := cfg.Validate(); err != nil {
		return Config{}, err
	}
	return cfg, nil
}

// normalize turns empty lists and maps into nil so that "join: []" and an
// unset list compare equal.
func normalize(c *Config, ls []leaf) {
	for _, l := range ls {
		if l.kind == kindList || l.kind == kindZones {
			if v := l.value(c); v.Len() == 0 {
				v.Set(reflect.Zero(l.typ))
			}
		}
	}
}

func setNested(m map[string]any, key string, val any) {
	parts := strings.Split(key, ".")
	for _, p := range parts[:len(parts)-1] {
		next, ok := m[p].(map[string]any)
		if !ok {
			next = map[string]any{}
			m[p] = next
		}
		m = next
	}
	m[parts[len(parts)-1]] = val
}

// checkFileKeys reports every key of a YAML file that is not a
// configuration key. It reads the file itself: viper's merge silently drops
// a scalar given where the defaults hold a section ("http: 5").
func checkFileKeys(data []byte, ls []leaf) error {
	maps := map[string]bool{}
	for _, l := range ls {
		if l.kind == kindZones {
			maps[l.key] = true
		}
	}
	var m map[string]any
	if err := yaml.Unmarshal(data, &m); err != nil {
		return err
	}
	var keys []string
	var walk func(m map[string]any, prefix string)
	walk = func(m map[string]any, prefix string) {
		for k, v := range m {
			key := strings.ToLower(k)
			if prefix != "" {
				key = prefix + "." + key
			}
			if sub, ok := v.(map[string]any); ok && !maps[key] {
				walk(sub, key)
				continue
			}
			keys = append(keys, key)
		}
	}
	walk(m, "")
	return checkKeys(keys, ls)
}

// checkKeys reports every key that is not a configuration key.
func checkKeys(all []string, ls []leaf) error {
	known := leafSet(ls)
	var bad []string
	for _, k := range all {
		if known[k] {
			continue
		}
		bad = append(bad, k)
	}
	if len(bad) == 0 {
		return nil
	}
	sort.Strings(bad)
	var errs []error
	for _, k := range bad {
		if isSection(k, ls) {
			errs = append(errs, fmt.Errorf("%s: is a section, not a value (keys under it: %s)", k, sectionKeys(k, ls)))
			continue
		}
		errs = append(errs, fmt.Errorf("%s: unknown key", k))
	}
	return errors.Join(errs...)
}

func isSection(k string, ls []leaf) bool {
	for _, l := range ls {
		if strings.HasPrefix(l.key, k+".") {
			return true
		}
	}
	return false
}

func sectionKeys(k string, ls []leaf) string {
	var names []string
	for _, l := range ls {
		if rest, ok := strings.CutPrefix(l.key, k+"."); ok {
			names = append(names, rest)
		}
	}
	return strings.Join(names, ", ")
}

// envLayer is what the environment sets.
type envLayer struct {
	values map[string]any                 // key → typed value (zone maps excluded)
	zones  map[string]map[string][]string // zone-map key → value, for those set

	configPath string
}

// readEnv picks the DISCOVERY_* variables out of environ. A name that is
// not a configuration key is an error (a renamed key in a compose file must
// not be silently ignored). When a name repeats, the last one wins, as with
// os/exec.
func readEnv(environ []string, ls []leaf) (envLayer, error) {
	byName := make(map[string]leaf, len(ls))
	for _, l := range ls {
		byName[envName(l.key)] = l
	}
	out := envLayer{values: map[string]any{}}
	var errs []error
	for _, kv := range environ {
		name, val, ok := strings.Cut(kv, "=")
		if !ok || !strings.HasPrefix(name, envPrefix) || ignoredEnv(name) {
			continue
		}
		if name == EnvConfig {
			out.configPath = val
			continue
		}
		l, ok := byName[name]
		if !ok {
			errs = append(errs, fmt.Errorf("environment variable %s: no configuration key has this name", name))
			continue
		}
		x, err := parseText(l, val)
		if err != nil {
			errs = append(errs, fmt.Errorf("environment variable %s (%s): %w", name, l.key, err))
			continue
		}
		if l.kind == kindZones {
			if out.zones == nil {
				out.zones = map[string]map[string][]string{}
			}
			out.zones[l.key] = x.(map[string][]string)
			continue
		}
		out.values[l.key] = x
	}
	return out, errors.Join(errs...)
}

// zoneMapsFromYAML sets, in out, every zone map (kindZones key) the YAML
// file sets.
func zoneMapsFromYAML(data []byte, ls []leaf, out map[string]map[string][]string) error {
	for _, l := range ls {
		if l.kind != kindZones {
			continue
		}
		z, ok, err := zonesFromYAML(data, l.key)
		if err != nil {
			return err
		}
		if ok {
			out[l.key] = z
		}
	}
	return nil
}

// zonesFromYAML reads the zone map at key (e.g. cluster.zones) from a YAML
// file with the zone names' case kept. ok is false when the file does not
// set it. Both forms are accepted: a mapping of zone to a list (or
// comma-separated string) of host:port, and the one-line string form.
func zonesFromYAML(data []byte, key string) (zones map[string][]string, ok bool, err error) {
	doc, err := parseDoc(data)
	if err != nil {
		return nil, false, err
	}
	n := docRoot(doc)
	for _, part := range strings.Split(key, ".") {
		if n = lookupFold(n, part); n == nil {
			return nil, false, nil
		}
	}
	switch {
	case n.Kind == yaml.ScalarNode && n.Tag == "!!null":
		return map[string][]string{}, true, nil
	case n.Kind == yaml.ScalarNode:
		z, err := parseZones(n.Value)
		if err != nil {
			return nil, false, fmt.Errorf(key+": %w", err)
		}
		return z, true, nil
	case n.Kind != yaml.MappingNode:
		return nil, false, errors.New(key + ": want a mapping of zone name to a list of host:port")
	}
	zones = map[string][]string{}
	for i := 0; i+1 < len(n.Content); i += 2 {
		name, v := n.Content[i].Value, n.Content[i+1]
		var seeds []string
		switch v.Kind {
		case yaml.ScalarNode:
			seeds = parseList(v.Value)
		case yaml.SequenceNode:
			for _, s := range v.Content {
				if s.Kind != yaml.ScalarNode {
					return nil, false, fmt.Errorf("%s.%s: want host:port strings", key, name)
				}
				if s := strings.TrimSpace(s.Value); s != "" {
					seeds = append(seeds, s)
				}
			}
		default:
			return nil, false, fmt.Errorf("%s.%s: want a list of host:port", key, name)
		}
		if strings.TrimSpace(name) == "" {
			return nil, false, errors.New(key + ": empty zone name")
		}
		if _, dup := zones[name]; dup {
			return nil, false, fmt.Errorf("%s.%s: zone listed twice", key, name)
		}
		if len(seeds) == 0 {
			return nil, false, fmt.Errorf("%s.%s: zone has no host:port", key, name)
		}
		zones[name] = seeds
	}
	return zones, true, nil
}

// lookupFold finds a key of a mapping node ignoring case, as viper does.
func lookupFold(m *yaml.Node, key string) *yaml.Node {
	if m == nil || m.Kind != yaml.MappingNode {
		return nil
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		if strings.EqualFold(m.Content[i].Value, key) {
			return m.Content[i+1]
		}
	}
	return nil
}
