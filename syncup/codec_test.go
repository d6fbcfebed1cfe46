package syncup

import (
	"bufio"
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/google/go-cmp/cmp"

	"github.com/discovery-go/discovery/registry"
)

func codecOps() []Op {
	ins := registry.Instance{
		Region: "sh", Zone: "sh001", Env: "prod", AppID: "main.app", Hostname: "pod-1",
		Addrs: []string{"grpc://10.0.0.1:9000", "http://10.0.0.1:8000"}, Version: "v1.2.3",
		Metadata: map[string]string{"weight": "10", "color": "red", "<&>": "\"q\"\\\n\t\u00e9\u4e2d", "bad": "\xff"},
		Status:   1, RegTimestamp: 1, UpTimestamp: -2, RenewTimestamp: 1 << 62, DirtyTimestamp: -1 << 63, LatestTimestamp: 1<<63 - 1,
	}
	bare := registry.Instance{Env: "e", AppID: "a", Zone: "z", Hostname: "h", Addrs: []string{"x"}, Metadata: map[string]string{}}
	k := ins.Key()
	return []Op{
		{Kind: OpRegister, Replication: true, FromZone: true, Instance: &ins},
		{Kind: OpImport, FromZone: true, Instance: &bare},
		{Kind: OpRenew, Replication: true, Key: &k, DirtyTimestamp: 42},
		{Kind: OpCancel, FromZone: true, Key: &registry.Key{Env: "e\u2028", AppID: "a", Zone: "z", Hostname: "h"}, DirtyTimestamp: -7},
		{Kind: OpSet, Replication: true, Set: &SetOp{Env: "e", AppID: "a", Zone: "z", Hostnames: []string{"h1", "h2"},
			Statuses: []uint32{1, 4294967295}, Metadata: []map[string]string{{"a": "b"}, nil, {}}, SetTimestamp: 9}},
		{Kind: OpSet, Set: &SetOp{Env: "e", AppID: "a", Zone: "z", SetTimestamp: 1}},
		{Kind: "weird\"kind"},
	}
}

// The hand encoders write what encoding/json writes (instances aside:
// AppendJSON writes nil addrs and metadata as [] and {}).
func TestCodec_EncodersMatchEncodingJSON(t *testing.T) {
	for _, s := range []string{"", "plain", "<a&b>", "quote\"back\\", "ctl\x01\n", "utf8 é 中", "bad \xff\xfe", "\u2028\u2029"} {
		want, _ := json.Marshal(s)
		if got := registry.AppendJSONString(nil, s); !bytes.Equal(got, want) {
			t.Errorf("AppendJSONString(%q) = %s, want %s", s, got, want)
		}
	}
	req := &ReplicateRequest{From: "node-1", Ops: codecOps()}
	for _, r := range []*ReplicateRequest{req, {Ops: req.Ops[2:]}, {}, {Ops: []Op{}}} {
		want, err := json.Marshal(r)
		if err != nil {
			t.Fatal(err)
		}
		if got := appendReplicateRequest(nil, r); !bytes.Equal(got, want) {
			t.Errorf("request:\n got %s\nwant %s", got, want)
		}
	}
	ins := codecOps()[0].Instance
	resp := &ReplicateResponse{Results: []OpResult{{}, {Code: -409, Message: "newer <copy>", Instance: ins}, {Code: 0, Applied: true}, {Code: -500, Message: "x"}}}
	for _, r := range []*ReplicateResponse{resp, {}, {Results: []OpResult{}}} {
		want, _ := json.Marshal(r)
		if got := appendReplicateResponse(nil, r); !bytes.Equal(got, want) {
			t.Errorf("response:\n got %s\nwant %s", got, want)
		}
	}
	tomb := registry.Tombstone{Key: ins.Key(), At: 123}
	want, _ := json.Marshal(tomb)
	if got := appendTombstone(nil, &tomb); !bytes.Equal(got, want) {
		t.Errorf("tombstone: got %s want %s", got, want)
	}
}

// What the encoders write, both decoders read back as the original.
func TestCodec_RoundTrip(t *testing.T) {
	// Ops as nodes send them take the fast path.
	plain := codecOps()[:5]
	plain[4].Set.Metadata[1] = map[string]string{"x": "y"}
	body := appendReplicateRequest(nil, &ReplicateRequest{From: "n\u00e9", Ops: plain})
	var fast, slow ReplicateRequest
	if !fastReplicateRequest(body, &fast) {
		t.Fatalf("fast path gave up on our own encoding:\n%s", body)
	}
	if err := json.Unmarshal(body, &slow); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(slow, fast, cmp.AllowUnexported(ReplicateRequest{})); d != "" {
		t.Fatalf("fast and encoding/json differ (-slow +fast):\n%s", d)
	}

	// Every op (some with nulls only encoding/json reads) round-trips.
	body = appendReplicateRequest(nil, &ReplicateRequest{From: "n\u00e9", Ops: codecOps()})
	fast, slow = ReplicateRequest{}, ReplicateRequest{}
	if !fastReplicateRequest(body, &fast) {
		fast = ReplicateRequest{}
		if err := json.Unmarshal(body, &fast); err != nil {
			t.Fatal(err)
		}
	}
	if err := json.Unmarshal(body, &slow); err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(slow, fast, cmp.AllowUnexported(ReplicateRequest{})); d != "" {
		t.Fatalf("fast and encoding/json differ (-slow +fast):\n%s", d)
	}
	// "bad \xff" became U+FFFD on the way, as with encoding/json.
	want := codecOps()
	want[0].Instance.Metadata["bad"] = "\ufffd"
	want[4].Set.Metadata[2] = map[string]string{}
	if d := cmp.Diff(want, fast.Ops); d != "" {
		t.Fatalf("round trip (-want +got):\n%s", d)
	}

	resp := &ReplicateResponse{Results: []OpResult{{Code: -409, Message: "m", Instance: want[0].Instance}, {Applied: true}}}
	got, err := decodeReplicateResponse(appendReplicateResponse(nil, resp))
	if err != nil {
		t.Fatal(err)
	}
	if d := cmp.Diff(resp, got); d != "" {
		t.Fatalf("response round trip (-want +got):\n%s", d)
	}
}

// The fast path either agrees with encoding/json or gives up; it never
// accepts what encoding/json rejects.
func FuzzFastDecode(f *testing.F) {
	body := appendReplicateRequest(nil, &ReplicateRequest{From: "n", Ops: codecOps()})
	f.Add(string(body))
	f.Add(strings.ReplaceAll(string(body), ",", " ,\n\t"))
	f.Add(string(appendReplicateResponse(nil, &ReplicateResponse{Results: []OpResult{{Code: -409, Instance: codecOps()[0].Instance}, {Applied: true}}})))
	for _, s := range []string{
		`{"ops":[{"op":"renew","replication":true,"key":{"env":"e","appid":"a","zone":"z","hostname":"h"},"dirty_timestamp":-0}]}`,
		`{"ops":[{"op":"renew","dirty_timestamp":1e3}]}`,
		`{"ops":[{"op":"renew","dirty_timestamp":01}]}`,
		`{"ops":[{"op":"renew","dirty_timestamp":9223372036854775808}]}`,
		`{"ops":[{"op":"renew","dirty_timestamp":-9223372036854775808}]}`,
		`{"ops":[{"op":"register","instance":{"status":4294967296}}]}`,
		`{"ops":[{"op":"register","instance":{"status":-1}}]}`,
		`{"ops":[{"op":"register","instance":{"addrs":null,"metadata":null}}]}`,
		`{"ops":[{"op":"register","instance":{"addrs":[],"metadata":{}}}]}`,
		`{"ops":[{"op":"register","instance":{"metadata":{"a":"1","a":"2"}}}]}`,
		`{"ops":[{"op":"register","instance":{"env":"a"},"instance":{"zone":"b"}}]}`,
		`{"ops":[{"Op":"register","REPLICATION":true}]}`,
		`{"ops":[{"op":"r\u0065new","key":{"env":"\ud83d\ude00","appid":"\u00e9"}}]}`,
		`{"ops":[{"op":"set","set":{"hostnames":["a"],"statuses":[],"metadata":[null,{}]}}]}`,
		`{"from":"x","ops":[],"extra":1}`,
		`{"ops":[]} x`,
		`{"ops":[],}`,
		`{"ops":[{"op":"renew",}]}`,
		`{"results":[{"code":-404},{"code":0,"applied":true,"message":"\ufffd"}]}`,
		`{"results":[{"code":1.5}]}`,
		`{"key":{"env":"e","appid":"a","zone":"z","hostname":"h"},"at":5}`,
		`{"region":"r","addrs":["a","b"],"status":1}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b := []byte(s)
		var fr, sr ReplicateRequest
		if fastReplicateRequest(b, &fr) {
			if err := json.Unmarshal(b, &sr); err != nil {
				t.Fatalf("fast accepted what encoding/json rejects (%v): %q", err, s)
			}
			if d := cmp.Diff(sr, fr, cmp.AllowUnexported(ReplicateRequest{})); d != "" {
				t.Fatalf("request %q (-encoding/json +fast):\n%s", s, d)
			}
		}
		var fp ReplicateResponse
		if fastReplicateResponse(b, &fp) {
			var sp ReplicateResponse
			if err := json.Unmarshal(b, &sp); err != nil {
				t.Fatalf("fast accepted what encoding/json rejects (%v): %q", err, s)
			}
			if d := cmp.Diff(sp, fp); d != "" {
				t.Fatalf("response %q (-encoding/json +fast):\n%s", s, d)
			}
		}
		var fi, si registry.Instance
		errF := decodeInstance(b, &fi)
		errS := json.Unmarshal(b, &si)
		if (errF == nil) != (errS == nil) || (errF == nil && !cmp.Equal(si, fi)) {
			t.Fatalf("instance %q: fast %v %+v, encoding/json %v %+v", s, errF, fi, errS, si)
		}
		var ft, st registry.Tombstone
		errF = decodeTombstone(b, &ft)
		errS = json.Unmarshal(b, &st)
		if (errF == nil) != (errS == nil) || (errF == nil && ft != st) {
			t.Fatalf("tombstone %q: fast %v %+v, encoding/json %v %+v", s, errF, ft, errS, st)
		}
	})
}

// The stream splitter finds value boundaries whatever the read sizes.
func TestDecodeSnapshot_ByteAtATime(t *testing.T) {
	ins := *codecOps()[0].Instance
	ins.Metadata["bad"] = "\ufffd"
	var buf bytes.Buffer
	in := []SnapshotItem{{Instance: &ins}, {Instance: codecOps()[1].Instance}, {Tombstone: &registry.Tombstone{Key: ins.Key(), At: 5}}}
	w := bufio.NewWriter(&buf)
	if err := encodeSnapshot(w, func(sink func(SnapshotItem) error) error {
		for _, it := range in {
			if err := sink(it); err != nil {
				return err
			}
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// Unknown keys with awkward values, spaces everywhere.
	doc := `{ "x" : {"a":["]","}\"",{"b":[]}]} , ` + strings.TrimPrefix(buf.String(), "{")
	doc = strings.Replace(doc, `"tombstones":[`, "\"y\": -1.5e3 ,\n \"tombstones\" : [ ", 1)
	var got []SnapshotItem
	if err := DecodeSnapshot(iotest.OneByteReader(strings.NewReader(doc)), func(it SnapshotItem) error {
		got = append(got, it)
		return nil
	}); err != nil {
		t.Fatalf("%v\n%s", err, doc)
	}
	if d := cmp.Diff(in, got); d != "" {
		t.Fatalf("(-want +got):\n%s", d)
	}
	for _, bad := range []string{`{"instances":[{"a":1},]}`, `{"instances":[{}]]}`, `{"instances":[{}] "x":1}`, `{"y":tru}`, `{"instances":["x"]}`, `{5:1}`} {
		if err := DecodeSnapshot(iotest.OneByteReader(strings.NewReader(bad)), func(SnapshotItem) error { return nil }); err == nil {
			t.Errorf("%s: want an error", bad)
		}
	}
}

// Decoding a replicate batch as peers send it (32 registers).
//
//	go test -run '^$' -bench FastReplicateRequest -benchmem ./syncup/
func BenchmarkFastReplicateRequest(b *testing.B) {
	ops := make([]Op, 32)
	for i := range ops {
		in := testInstance("bench.decode", "z1")
		ops[i] = Op{Kind: OpRegister, Replication: true, FromZone: true, Instance: &in}
	}
	body := appendReplicateRequest(nil, &ReplicateRequest{From: "n1", Ops: ops})
	for _, bc := range []struct {
		name string
		dec  func([]byte, *ReplicateRequest) bool
	}{{"interned", decodeReplicateRequest}, {"plain", fastReplicateRequest}} {
		b.Run(bc.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			for b.Loop() {
				var req ReplicateRequest
				if !bc.dec(body, &req) || len(req.Ops) != 32 {
					b.Fatal("decode")
				}
			}
		})
	}
}
