package configs

import (
	"errors"
	"fmt"
	"reflect"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/go-viper/mapstructure/v2"
)

// parseText converts the text form of a value (environment variable or
// flag) into the key's Go type. The error names only the problem; callers
// add the variable or key.
func parseText(l leaf, s string) (any, error) {
	switch l.kind {
	case kindString:
		return reflect.ValueOf(s).Convert(l.typ).Interface(), nil
	case kindBool:
		b, err := strconv.ParseBool(strings.TrimSpace(s))
		if err != nil {
			return nil, fmt.Errorf("invalid boolean %q (want true or false)", s)
		}
		return b, nil
	case kindInt:
		n, err := strconv.ParseInt(strings.TrimSpace(s), 10, l.typ.Bits())
		if err != nil {
			return nil, fmt.Errorf("invalid integer %q", s)
		}
		return reflect.ValueOf(n).Convert(l.typ).Interface(), nil
	case kindFloat:
		f, err := strconv.ParseFloat(strings.TrimSpace(s), l.typ.Bits())
		if err != nil {
			return nil, fmt.Errorf("invalid number %q", s)
		}
		return reflect.ValueOf(f).Convert(l.typ).Interface(), nil
	case kindDuration:
		return parseDuration(s)
	case kindList:
		return parseList(s), nil
	case kindZones:
		return parseZones(s)
	}
	return nil, fmt.Errorf("unsupported kind %d", l.kind)
}

func parseDuration(s string) (time.Duration, error) {
	d, err := time.ParseDuration(strings.TrimSpace(s))
	if err != nil {
		return 0, fmt.Errorf("invalid duration %q (want e.g. 500ms, 30s, 15m, 1h)", s)
	}
	return d, nil
}

// parseList splits a comma-separated list, trimming blanks and dropping
// empty items, so "a, b," is [a b] and "" is the empty list.
func parseList(s string) []string {
	return splitItems(s, ",")
}

func splitItems(s, seps string) []string {
	var out []string
	for _, item := range strings.FieldsFunc(s, func(r rune) bool { return strings.ContainsRune(seps, r) }) {
		if item = strings.TrimSpace(item); item != "" {
			out = append(out, item)
		}
	}
	return out
}

// parseZones parses the one-line form of cluster.zones:
//
//	zoneB=h1:7171|h2:7171;zoneC=h3:7171
//
// Zones are separated by ";", a zone's seeds by "|" (or ","). Blanks around
// items are ignored; the empty string is the empty map. Zone names keep their
// case.
func parseZones(s string) (map[string][]string, error) {
	out := map[string][]string{}
	for _, part := range strings.Split(s, ";") {
		part = strings.TrimSpace(part)
		if part == "" {
			continue
		}
		name, seeds, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("zone entry %q: want zone=host:port|host:port", part)
		}
		if _, dup := out[name]; dup {
			return nil, fmt.Errorf("zone %q listed twice", name)
		}
		list := splitItems(seeds, "|,")
		if len(list) == 0 {
			return nil, fmt.Errorf("zone %q has no seeds", name)
		}
		out[name] = list
	}
	return out, nil
}

// formatZones is the inverse of parseZones (sorted by zone).
func formatZones(z map[string][]string) string {
	names := make([]string, 0, len(z))
	for name := range z {
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, name := range names {
		parts = append(parts, name+"="+strings.Join(z[name], "|"))
	}
	return strings.Join(parts, ";")
}

// decodeHook converts file and flag values while decoding. viper.DecodeHook
// replaces viper's default hooks rather than adding to them, so durations
// and comma lists are handled here too.
func decodeHook() mapstructure.DecodeHookFunc {
	return mapstructure.ComposeDecodeHookFunc(durationHook, listHook, zonesHook)
}

// durationHook parses Go durations and refuses bare numbers, which weak
// decoding would otherwise read as nanoseconds (evict_after: 90 → 90ns).
func durationHook(from, to reflect.Type, data any) (any, error) {
	if to != durationType || from == durationType {
		return data, nil
	}
	switch from.Kind() {
	case reflect.String:
		return parseDuration(reflect.ValueOf(data).String())
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64,
		reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64,
		reflect.Float32, reflect.Float64:
		return nil, fmt.Errorf("duration %v has no unit (want e.g. \"30s\")", data)
	}
	return data, nil
}

// listHook splits a comma-separated string into a list.
func listHook(from, to reflect.Type, data any) (any, error) {
	if to != listType || from.Kind() != reflect.String {
		return data, nil
	}
	return parseList(reflect.ValueOf(data).String()), nil
}

// zonesHook parses the one-line cluster.zones syntax.
func zonesHook(from, to reflect.Type, data any) (any, error) {
	if to != zonesType || from.Kind() != reflect.String {
		return data, nil
	}
	return parseZones(reflect.ValueOf(data).String())
}

// decodeErrors rewrites mapstructure's error tree as one line per field,
// each starting with the full key path.
func decodeErrors(err error) error {
	var lines []error
	var walk func(error)
	walk = func(e error) {
		var de *mapstructure.DecodeError
		// This walks the error tree itself, node by node: the comparison
		// and the type switch look at this node, not down its chain.
		if errors.As(e, &de) && e == error(de) { //nolint:errorlint // this node itself
			lines = append(lines, fmt.Errorf("%s: %w", de.Name(), de.Unwrap()))
			return
		}
		switch u := e.(type) { //nolint:errorlint // this node itself
		case interface{ Unwrap() []error }:
			for _, c := range u.Unwrap() {
				walk(c)
			}
		case interface{ Unwrap() error }:
			walk(u.Unwrap())
		default:
			lines = append(lines, e)
		}
	}
	walk(err)
	return errors.Join(lines...)
}
