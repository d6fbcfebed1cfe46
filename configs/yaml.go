package configs

import (
	"bytes"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.yaml.in/yaml/v3"
)

// redacted replaces a non-empty secret in printed configurations.
const redacted = "<redacted>"

// parseDoc parses a YAML document into its node tree (comments included).
func parseDoc(data []byte) (*yaml.Node, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, err
	}
	return &doc, nil
}

// docRoot returns the top-level mapping of doc, or nil for an empty document.
func docRoot(doc *yaml.Node) *yaml.Node {
	if doc.Kind == yaml.DocumentNode && len(doc.Content) == 1 && doc.Content[0].Kind == yaml.MappingNode {
		return doc.Content[0]
	}
	return nil
}

// walkLeafNodes calls fn for every key of the document that is a
// configuration key (set isLeaf), with its key and value nodes.
func walkLeafNodes(m *yaml.Node, prefix string, isLeaf func(string) bool, fn func(key string, k, v *yaml.Node)) {
	if m == nil || m.Kind != yaml.MappingNode {
		return
	}
	for i := 0; i+1 < len(m.Content); i += 2 {
		k, v := m.Content[i], m.Content[i+1]
		key := strings.ToLower(k.Value)
		if prefix != "" {
			key = prefix + "." + key
		}
		if isLeaf(key) {
			fn(key, k, v)
			continue
		}
		walkLeafNodes(v, key, isLeaf, fn)
	}
}

// keyComments returns the comment written above each key of the embedded
// file, as one line (used as flag help).
func keyComments() map[string]string {
	out := map[string]string{}
	doc, err := parseDoc(defaultFile)
	if err != nil {
		return out // the embedded file is checked by tests
	}
	known := leafSet(leaves())
	walkLeafNodes(docRoot(doc), "", func(k string) bool { return known[k] }, func(key string, k, _ *yaml.Node) {
		var words []string
		for _, line := range strings.Split(k.HeadComment, "\n") {
			words = append(words, strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(line), "#")))
		}
		out[key] = strings.TrimSpace(strings.Join(words, " "))
	})
	return out
}

func leafSet(ls []leaf) map[string]bool {
	m := make(map[string]bool, len(ls))
	for _, l := range ls {
		m[l.key] = true
	}
	return m
}

// YAML renders c in the layout of the embedded default file, comments
// included, so the output is itself a valid --config file. A non-empty
// secret (cluster.secret, cluster.accept_secrets) is printed as "<redacted>".
func (c Config) YAML() ([]byte, error) {
	doc, err := parseDoc(defaultFile)
	if err != nil {
		return nil, fmt.Errorf("embedded default configuration: %w", err)
	}
	ls := leaves()
	byKey := make(map[string]leaf, len(ls))
	for _, l := range ls {
		byKey[l.key] = l
	}
	seen := map[string]bool{}
	var errs []error
	walkLeafNodes(docRoot(doc), "", func(k string) bool { _, ok := byKey[k]; return ok }, func(key string, _, v *yaml.Node) {
		seen[key] = true
		n, err := valueNode(c.printValue(byKey[key]))
		if err != nil {
			errs = append(errs, fmt.Errorf("%s: %w", key, err))
			return
		}
		n.HeadComment, n.LineComment, n.FootComment = v.HeadComment, v.LineComment, v.FootComment
		*v = *n
	})
	for _, l := range ls {
		if !seen[l.key] {
			errs = append(errs, fmt.Errorf("%s: missing from the embedded default file", l.key))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return nil, err
	}
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(doc); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return spaceSections(buf.Bytes()), nil
}

// spaceSections puts back the blank line before each top-level section's
// comment, which the YAML encoder drops.
func spaceSections(b []byte) []byte {
	lines := strings.Split(string(b), "\n")
	out := make([]string, 0, len(lines)+8)
	for i, line := range lines {
		if i > 0 && strings.HasPrefix(line, "#") && strings.HasPrefix(lines[i-1], " ") {
			out = append(out, "")
		}
		out = append(out, line)
	}
	return []byte(strings.Join(out, "\n"))
}

// isSecret reports whether key holds key material, never printed.
func isSecret(key string) bool {
	switch key {
	case "cluster.secret", "cluster.accept_secrets", "security.admin_token":
		return true
	}
	return false
}

// printValue is the value of l in c as it is printed.
func (c Config) printValue(l leaf) any {
	v := l.value(&c)
	if isSecret(l.key) && !v.IsZero() {
		if l.kind == kindList {
			out := make([]string, v.Len())
			for i := range out {
				out[i] = redacted
			}
			return out
		}
		return redacted
	}
	switch l.kind {
	case kindDuration:
		return formatDuration(time.Duration(v.Int()))
	case kindList:
		if v.Len() == 0 {
			return []string{}
		}
	case kindZones:
		if v.Len() == 0 {
			return map[string][]string{}
		}
	}
	return v.Interface()
}

func valueNode(v any) (*yaml.Node, error) {
	var n yaml.Node
	if err := n.Encode(v); err != nil {
		return nil, err
	}
	flowLists(&n)
	return &n, nil
}

// flowLists prints lists on one line ([a, b]) and empty maps as {}.
func flowLists(n *yaml.Node) {
	if n.Kind == yaml.SequenceNode || (n.Kind == yaml.MappingNode && len(n.Content) == 0) {
		n.Style = yaml.FlowStyle
	}
	for _, c := range n.Content {
		flowLists(c)
	}
}

// formatDuration prints 1h instead of 1h0m0s and 15m instead of 15m0s.
func formatDuration(d time.Duration) string {
	s := d.String()
	if strings.HasSuffix(s, "m0s") {
		s = strings.TrimSuffix(s, "0s")
	}
	if strings.HasSuffix(s, "h0m") {
		s = strings.TrimSuffix(s, "0m")
	}
	return s
}
