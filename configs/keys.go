package configs

import (
	"fmt"
	"reflect"
	"strings"
	"time"
)

// kind is how a leaf value is written in the environment and on the command
// line.
type kind int

const (
	kindString kind = iota
	kindBool
	kindInt
	kindFloat
	kindDuration
	kindList  // []string: comma-separated
	kindZones // map[string][]string: zoneB=h1|h2;zoneC=h3
)

// leaf is one configuration key. The list of leaves is derived from the
// Config struct's mapstructure tags, so flags, environment names, defaults
// and the unknown-key checks can never disagree with the struct.
type leaf struct {
	key   string // dotted path, e.g. "http.limits.max_body_bytes"
	index []int  // field index path in Config
	typ   reflect.Type
	kind  kind
}

var (
	durationType = reflect.TypeFor[time.Duration]()
	listType     = reflect.TypeFor[[]string]()
	zonesType    = reflect.TypeFor[map[string][]string]()
)

// leaves lists every key of Config in struct order.
func leaves() []leaf {
	var out []leaf
	walkLeaves(reflect.TypeFor[Config](), "", nil, &out)
	return out
}

func walkLeaves(t reflect.Type, prefix string, index []int, out *[]leaf) {
	for i := range t.NumField() {
		f := t.Field(i)
		tag := f.Tag.Get("mapstructure")
		if tag == "-" {
			continue // derived by the program from other keys (registry.Limits from http.limits)
		}
		if tag == "" {
			// A field without a key could never be configured: a contract
			// change that must be handled here, not silently skipped.
			panic(fmt.Sprintf("configs: field %s.%s has no mapstructure tag", t.Name(), f.Name))
		}
		key := tag
		if prefix != "" {
			key = prefix + "." + tag
		}
		idx := append(append([]int(nil), index...), i)
		if f.Type.Kind() == reflect.Struct {
			walkLeaves(f.Type, key, idx, out)
			continue
		}
		*out = append(*out, leaf{key: key, index: idx, typ: f.Type, kind: kindOf(key, f.Type)})
	}
}

func kindOf(key string, t reflect.Type) kind {
	switch t {
	case durationType:
		return kindDuration
	case listType:
		return kindList
	case zonesType:
		return kindZones
	}
	switch t.Kind() {
	case reflect.String:
		return kindString
	case reflect.Bool:
		return kindBool
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return kindInt
	case reflect.Float32, reflect.Float64:
		return kindFloat
	}
	panic(fmt.Sprintf("configs: key %s has unsupported type %s", key, t))
}

// envName is the environment variable of a key.
func envName(key string) string {
	return envPrefix + strings.ToUpper(strings.ReplaceAll(key, ".", "_"))
}

// value returns the leaf's value in c.
func (l leaf) value(c *Config) reflect.Value {
	return reflect.ValueOf(c).Elem().FieldByIndex(l.index)
}
