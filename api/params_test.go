package api

import (
	"errors"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func mustQuery(t *testing.T, raw string) url.Values {
	t.Helper()
	v, err := parseQuery(raw)
	if err != nil {
		t.Fatalf("parseQuery(%q): %v", raw, err)
	}
	return v
}

func fieldOf(t *testing.T, err error) string {
	t.Helper()
	var pe *paramError
	if !errors.As(err, &pe) {
		t.Fatalf("error %v (%T) is not a *paramError", err, err)
	}
	return pe.field
}

func TestMergeForm_BodyFirstThenQuery(t *testing.T) {
	body := url.Values{"appid": {"b1", "b2"}, "zone": {"bz"}}
	query := url.Values{"appid": {"q1"}, "zone": {"qz"}, "env": {"qe"}}
	got := mergeForm(body, query)
	want := url.Values{"appid": {"b1", "b2", "q1"}, "zone": {"bz", "qz"}, "env": {"qe"}}
	if d := cmp.Diff(want, got); d != "" {
		t.Fatalf("merge (-want +got):\n%s", d)
	}
	// Inputs untouched.
	if len(body["appid"]) != 2 || len(query["appid"]) != 1 {
		t.Fatalf("inputs modified: %v %v", body, query)
	}
}

func TestFormList_RepeatedNoCommaSplitDropEmpty(t *testing.T) {
	v := mustQuery(t, "addrs=a,b&addrs=&addrs=c")
	got, err := formList(v, "addrs", 10, 100)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"a,b", "c"}, got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
	if _, err := formList(mustQuery(t, "addrs=a&addrs=b&addrs=c"), "addrs", 2, 100); err == nil ||
		fieldOf(t, err) != "addrs" || !strings.Contains(err.Error(), "2") {
		t.Fatalf("count limit: %v", err)
	}
	if _, err := formList(mustQuery(t, "addrs=abcdef"), "addrs", 2, 5); err == nil ||
		fieldOf(t, err) != "addrs" || !strings.Contains(err.Error(), "5 bytes") {
		t.Fatalf("length limit: %v", err)
	}
}

func TestParseInt64(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want int64
		ok   bool
	}{
		{"", 0, true}, {"0", 0, true}, {"42", 42, true}, {"-7", -7, true}, {"+3", 3, true},
		{"9223372036854775807", 1<<63 - 1, true},
		{"9223372036854775808", 0, false}, {"abc", 0, false}, {"1.5", 0, false}, {"0x10", 0, false}, {" 1", 0, false},
	} {
		got, err := parseInt64("dirty_timestamp", tc.in)
		if tc.ok != (err == nil) || got != tc.want {
			t.Errorf("parseInt64(%q) = %d, %v; want %d ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
		if err != nil && fieldOf(t, err) != "dirty_timestamp" {
			t.Errorf("error %v does not name the field", err)
		}
	}
}

func TestFormBool(t *testing.T) {
	for in, want := range map[string]bool{
		"1": true, "t": true, "T": true, "TRUE": true, "true": true, "True": true,
		"0": false, "f": false, "F": false, "FALSE": false, "false": false, "False": false, "": false,
		"yes": false, "on": false, "tRuE": false,
	} {
		if got := formBool(url.Values{"replication": {in}}, "replication"); got != want {
			t.Errorf("formBool(%q) = %v, want %v", in, got, want)
		}
	}
	if formBool(url.Values{}, "replication") {
		t.Error("absent must be false")
	}
}

func TestParseMetadata(t *testing.T) {
	l := DefaultConfig().Limits
	for _, tc := range []struct {
		in   string
		want map[string]string
		err  string // substring; "" = ok
	}{
		{"", nil, ""},
		{"null", nil, ""},
		{`{}`, map[string]string{}, ""},
		{`{"weight":"10","color":"red"}`, map[string]string{"weight": "10", "color": "red"}, ""},
		{`{"weight":10}`, map[string]string{"weight": "10"}, ""},
		{`{"w":1.50,"e":-2e3}`, map[string]string{"w": "1.50", "e": "-2e3"}, ""},
		{`{"a":true,"b":false,"c":null}`, map[string]string{"a": "true", "b": "false", "c": ""}, ""},
		{` { "a" : "x" } `, map[string]string{"a": "x"}, ""},
		{`{"a":{"b":"c"}}`, nil, `key "a" holds a nested`},
		{`{"a":["x"]}`, nil, "nested"},
		{`{"a":`, nil, "not a JSON object"},
		{`not json`, nil, "not a JSON object"},
		{`"str"`, nil, "not a JSON object"},
		{`[1,2]`, nil, "not a JSON object"},
		{`10`, nil, "not a JSON object"},
		{`{"a":"x"} trailing`, nil, "not a JSON object"},
	} {
		got, err := parseMetadata("metadata", tc.in, l)
		if tc.err == "" {
			if err != nil {
				t.Errorf("parseMetadata(%q): %v", tc.in, err)
				continue
			}
			if d := cmp.Diff(tc.want, got); d != "" {
				t.Errorf("parseMetadata(%q) (-want +got):\n%s", tc.in, d)
			}
			continue
		}
		if err == nil || !strings.Contains(err.Error(), tc.err) || fieldOf(t, err) != "metadata" {
			t.Errorf("parseMetadata(%q) err = %v, want containing %q", tc.in, err, tc.err)
		}
	}
	small := l
	small.MaxMetadataBytes, small.MaxMetadataKeys = 25, 2
	if _, err := parseMetadata("metadata", `{"aaaaaaaaaa":"bbbbbbbbbbbbbbbb"}`, small); err == nil ||
		!strings.Contains(err.Error(), "25 bytes") {
		t.Errorf("byte limit: %v", err)
	}
	if _, err := parseMetadata("metadata", `{"a":"","b":"","c":""}`, small); err == nil ||
		!strings.Contains(err.Error(), "2 keys") {
		t.Errorf("key limit: %v", err)
	}
}

func TestParsePolls_Pairing(t *testing.T) {
	l := DefaultConfig().Limits
	p, err := parsePoll(mustQuery(t, "env=prod&hostname=h&appid=a&appid=&appid=b&latest_timestamp=5&latest_timestamp=&latest_timestamp=0"), l, true)
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff([]string{"a", "b"}, p.Req.AppIDs); d != "" {
		t.Fatal(d)
	}
	if d := cmp.Diff([]int64{5, 0}, p.Req.Latest); d != "" {
		t.Fatal(d)
	}
	for _, raw := range []string{
		"env=prod&hostname=h&appid=a",                                       // none
		"env=prod&hostname=h&appid=a&latest_timestamp=",                     // only empty
		"env=prod&hostname=h&appid=a&latest_timestamp=1&latest_timestamp=2", // too many
		"env=prod&hostname=h&appid=a&appid=b&latest_timestamp=1",            // too few
		"env=prod&hostname=h&appid=a&appid=b&latest_timestamp=1,2",          // comma is one value
	} {
		_, err := parsePoll(mustQuery(t, raw), l, true)
		if err == nil || fieldOf(t, err) != "latest_timestamp" {
			t.Errorf("%s: err = %v, want latest_timestamp error", raw, err)
		}
	}
}

func TestHoldFor(t *testing.T) {
	hold := 30 * time.Second
	for _, tc := range []struct {
		h    string
		want time.Duration
	}{
		{"", hold}, {"abc", hold}, {"-5", hold}, {"0", hold},
		{"40000", hold}, {"30010", 29990 * time.Millisecond}, {"30020", hold}, {"3000", 2980 * time.Millisecond}, {"20", 0}, {"10", -10 * time.Millisecond},
		{"99999999999999999", hold},
	} {
		if got := holdFor(hold, tc.h); got != tc.want {
			t.Errorf("holdFor(%q) = %v, want %v", tc.h, got, tc.want)
		}
	}
}

func TestSanitizeLabel(t *testing.T) {
	for in, want := range map[string]string{"weight": "weight", "a.b-c": "a_b_c", "ok_9Z": "ok_9Z", "é": "__"} {
		if got := sanitizeLabel(in); got != want {
			t.Errorf("sanitizeLabel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEnvelopeBytes(t *testing.T) {
	for _, tc := range []struct {
		got, want string
	}{
		{string(envelope(0, "", nil)), `{"code":0,"message":"0","ttl":1}`},
		{string(envelope(-304, "", nil)), `{"code":-304,"message":"-304","ttl":1}`},
		{string(envelope(0, "", []byte(`null`))), `{"code":0,"message":"0","ttl":1,"data":null}`},
		{string(envelope(-400, `appid: "x"`, nil)), `{"code":-400,"message":"appid: \"x\"","ttl":1}`},
	} {
		if tc.got != tc.want {
			t.Errorf("got %s\nwant %s", tc.got, tc.want)
		}
	}
}

// parseForm (the register path's form parser) gives what url.ParseQuery
// gives on the forms kratos sends and on malformed ones, including the
// parameter-count bound; a repeated name keeps every value in order.
func TestParseForm_MatchesNetURL(t *testing.T) {
	many := strings.Repeat("a=1&", maxFormParams-1) + "a=1"
	for _, raw := range []string{
		"", "&", "&&a=1&&", "a", "=x", "a=", "a=1&a=2&b=3&a=4", "a+b=c+d&%41=%42", "k=%e9%zz", "k=%", "a=1;b=2",
		"zone=sh001&env=prod&appid=demo.app&hostname=h1&addrs=grpc%3A%2F%2F10.0.0.1%3A9000&addrs=http%3A%2F%2F10.0.0.1%3A8000&metadata=%7B%22weight%22%3A%2210%22%7D",
		many, many + "&b=2",
	} {
		wantSameAsNetURL(t, raw)
	}
	v, err := parseForm("a=1&b=2&a=3")
	if err != nil {
		t.Fatal(err)
	}
	v["b"] = append(v["b"], "x") // appending to one name never writes into another's values
	if d := cmp.Diff(url.Values{"a": {"1", "3"}, "b": {"2", "x"}}, v); d != "" {
		t.Fatal(d)
	}
}

// wantSameAsNetURL fails unless parseForm gives what url.ParseQuery gives
// for raw, error or not.
func wantSameAsNetURL(t *testing.T, raw string) {
	t.Helper()
	got, gerr := parseForm(raw)
	want, werr := url.ParseQuery(raw)
	if (gerr != nil) != (werr != nil) {
		t.Fatalf("%.40q: parseForm error %v, url.ParseQuery error %v", raw, gerr, werr)
	}
	if gerr == nil {
		if d := cmp.Diff(want, got); d != "" {
			t.Fatalf("%.40q: parseForm differs from url.ParseQuery (-url +parseForm):\n%s", raw, d)
		}
	}
}
