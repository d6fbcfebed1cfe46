package registry

import (
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Limits bound what one stored instance may hold. They are the public
// input limits of the HTTP API (spec 10.5), applied by the registry itself
// to every record whatever path it came by (client, replication, import,
// snapshot, anti-entropy), so a peer cannot store what a client may not.
type Limits struct {
	MaxStringLen     int // each of env, appid, zone, hostname, region, version
	MaxAddrs         int // addrs per instance
	MaxAddrLen       int // each addr
	MaxMetadataBytes int // metadata as JSON text (keys, values and punctuation)
	MaxMetadataKeys  int // keys in the metadata object
}

// DefaultLimits are the spec's suggested limits (spec 10.5).
func DefaultLimits() Limits {
	return Limits{MaxStringLen: 256, MaxAddrs: 64, MaxAddrLen: 1024, MaxMetadataBytes: 16 << 10, MaxMetadataKeys: 128}
}

// checkText refuses empty (when required), long, invalid UTF-8 and control
// characters: one key must be the same bytes on every node and in every
// log line, and invalid UTF-8 is replaced on the wire (U+FFFD) so it would
// split one key into different keys on different nodes.
func checkText(field, s string, max int, required bool) error {
	switch {
	case s == "" && required:
		return invalid(field, "must not be empty")
	case len(s) > max:
		return invalid(field, "longer than %d bytes", max)
	case !utf8.ValidString(s):
		return invalid(field, "not valid UTF-8")
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return invalid(field, "contains the control character %U", r)
		}
	}
	return nil
}

func (l Limits) checkKey(k Key) error {
	for _, f := range [...]struct{ name, v string }{{"env", k.Env}, {"appid", k.AppID}, {"zone", k.Zone}, {"hostname", k.Hostname}} {
		if err := checkText(f.name, f.v, l.MaxStringLen, true); err != nil {
			return err
		}
	}
	return nil
}

// checkAddr accepts scheme://host:port, optionally followed by "/" or a
// query: what kratos registers (grpc://10.0.0.5:9000, http://h:8000) and
// parses (the URL's host). Anything else (no scheme or port, javascript:,
// CRLF, user info, a fragment) is refused.
func checkAddr(field, a string, max int) error {
	if err := checkText(field, a, max, true); err != nil {
		return err
	}
	if strings.ContainsAny(a, " \t") {
		return invalid(field, "%q contains spaces", trunc(a))
	}
	u, err := url.Parse(a)
	switch {
	case err != nil:
		return invalid(field, "%q is not a URL: %v", trunc(a), err)
	case u.Scheme == "" || u.Opaque != "" || u.Host == "":
		return invalid(field, "%q is not scheme://host:port", trunc(a))
	case u.User != nil:
		return invalid(field, "%q carries user information", trunc(a))
	case u.Fragment != "" || (u.Path != "" && u.Path != "/"):
		return invalid(field, "%q has a path or fragment; want scheme://host:port", trunc(a))
	}
	host, port, err := net.SplitHostPort(u.Host)
	if err != nil || host == "" {
		return invalid(field, "%q has no host:port", trunc(a))
	}
	if p, err := strconv.Atoi(port); err != nil || p < 1 || p > 65535 {
		return invalid(field, "%q: port must be 1-65535", trunc(a))
	}
	return nil
}

// plainAddr reports whether a is scheme://host:port[/] with a scheme of
// letters, digits, '+', '-', '.' (a letter first), a host of ASCII letters,
// digits, '-' and '.', and a port of 1-65535 without leading zeros: the
// form nearly every instance registers, and a subset of what checkAddr
// accepts (a test holds it to that), checked without url.Parse's
// allocations.
func plainAddr(a string) bool {
	i := strings.Index(a, "://")
	if i < 1 || !isLetter(a[0]) {
		return false
	}
	for j := 1; j < i; j++ {
		if c := a[j]; !isLetter(c) && !isDigit(c) && c != '+' && c != '-' && c != '.' {
			return false
		}
	}
	rest := strings.TrimSuffix(a[i+3:], "/")
	colon := strings.LastIndexByte(rest, ':')
	if colon < 1 {
		return false
	}
	for j := range colon {
		if c := rest[j]; !isLetter(c) && !isDigit(c) && c != '-' && c != '.' {
			return false
		}
	}
	port := rest[colon+1:]
	if len(port) == 0 || len(port) > 5 || port[0] == '0' {
		return false
	}
	p := 0
	for j := range len(port) {
		if !isDigit(port[j]) {
			return false
		}
		p = p*10 + int(port[j]-'0')
	}
	return p <= 65535
}

func isLetter(c byte) bool { return c|0x20 >= 'a' && c|0x20 <= 'z' }
func isDigit(c byte) bool  { return c >= '0' && c <= '9' }

func trunc(s string) string {
	if len(s) > 64 {
		return s[:64] + "..."
	}
	return s
}

// checkMetadata bounds the metadata map like the JSON text clients send.
func (l Limits) checkMetadata(m map[string]string) error {
	if len(m) > l.MaxMetadataKeys {
		return invalid("metadata", "more than %d keys", l.MaxMetadataKeys)
	}
	size := 2 // {}
	for k, v := range m {
		size += len(k) + len(v) + 6 // quotes, colon, comma
		if err := checkText("metadata", k, l.MaxMetadataBytes, true); err != nil {
			return invalid("metadata", "key %q: %v", trunc(k), err)
		}
		if !utf8.ValidString(v) || strings.IndexByte(v, 0) >= 0 {
			return invalid("metadata", "value of key %q is not valid UTF-8 text", trunc(k))
		}
	}
	if size > l.MaxMetadataBytes {
		return invalid("metadata", "larger than %d bytes", l.MaxMetadataBytes)
	}
	return nil
}

// validateInstance checks what every stored instance must be.
func (l Limits) validateInstance(in *Instance) error {
	if err := l.checkKey(in.Key()); err != nil {
		return err
	}
	if err := checkText("region", in.Region, l.MaxStringLen, false); err != nil {
		return err
	}
	if err := checkText("version", in.Version, l.MaxStringLen, false); err != nil {
		return err
	}
	if in.Status != StatusUp && in.Status != StatusWaiting {
		return invalid("status", "must be 1 or 2, got %d", in.Status)
	}
	if len(in.Addrs) == 0 {
		return invalid("addrs", "at least one address is required")
	}
	if len(in.Addrs) > l.MaxAddrs {
		return invalid("addrs", "more than %d values", l.MaxAddrs)
	}
	for i, a := range in.Addrs {
		if len(a) <= l.MaxAddrLen && plainAddr(a) {
			continue // what the general check below accepts, without url.Parse
		}
		if err := checkAddr(fmt.Sprintf("addrs[%d]", i), a, l.MaxAddrLen); err != nil {
			return err
		}
	}
	return l.checkMetadata(in.Metadata)
}
