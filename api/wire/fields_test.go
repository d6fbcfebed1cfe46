package wire

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// fieldSample returns an Instance whose field i (in reflect order) holds a
// value distinct from every other sample and from the zero value; every
// other field holds a fixed non-zero value (i < 0: the reference with no
// field changed). Encoders and decoders that drop, swap or mistype a field
// fail the tests built on it.
func fieldSample(t testing.TB, i int) Instance {
	in := Instance{
		Region: "r", Zone: "z", Env: "e", AppID: "a", Hostname: "h",
		Addrs: []string{"grpc://1.2.3.4:5"}, Version: "v", Metadata: map[string]string{"k": "v"},
		Status: 1, RegTimestamp: 11, UpTimestamp: 12, RenewTimestamp: 13, DirtyTimestamp: 14, LatestTimestamp: 15,
	}
	if i < 0 {
		return in
	}
	f := reflect.ValueOf(&in).Elem().Field(i)
	switch f.Kind() {
	case reflect.String:
		f.SetString(fmt.Sprintf("field-%d-é<&>", i))
	case reflect.Uint32:
		f.SetUint(uint64(2))
	case reflect.Int64:
		f.SetInt(int64(1e18) + int64(i))
	case reflect.Slice:
		f.Set(reflect.ValueOf([]string{fmt.Sprintf("http://field-%d:1", i), "grpc://second:2"}))
	case reflect.Map:
		f.Set(reflect.ValueOf(map[string]string{fmt.Sprintf("field-%d", i): "x", "b": "\u2028"}))
	default:
		t.Fatalf("field %s has kind %s: teach fieldSample (and every encoder) about it", reflect.TypeOf(in).Field(i).Name, f.Kind())
	}
	return in
}

// Every field of Instance is written by AppendJSON under its json tag, and
// read back by every decoder: encoding/json, DecodeInstance, the snapshot
// stream reader, replicate requests and answers. Adding a field to
// Instance without teaching an encoder or decoder fails here.
func TestInstance_EveryFieldEveryCodec(t *testing.T) {
	typ := reflect.TypeOf(Instance{})
	if typ.NumField() != 14 {
		t.Errorf("Instance has %d fields; spec 3.1 has 14 keys: check every encoder and decoder", typ.NumField())
	}
	refIn := fieldSample(t, -1)
	ref := refIn.AppendJSON(nil)
	for i := 0; i < typ.NumField(); i++ {
		sf := typ.Field(i)
		tag := sf.Tag.Get("json")
		t.Run(sf.Name, func(t *testing.T) {
			in := fieldSample(t, i)
			enc := in.AppendJSON(nil)

			// Written: under its key, with the sample's value.
			var m map[string]json.RawMessage
			if err := json.Unmarshal(enc, &m); err != nil {
				t.Fatalf("AppendJSON wrote invalid JSON: %v\n%s", err, enc)
			}
			want, _ := json.Marshal(reflect.ValueOf(in).Field(i).Interface())
			if !bytes.Equal(m[tag], want) {
				t.Fatalf("AppendJSON wrote %s=%s, want %s", tag, m[tag], want)
			}
			std, _ := json.Marshal(in)
			if !bytes.Equal(enc, std) {
				t.Fatalf("AppendJSON and encoding/json differ:\n%s\n%s", enc, std)
			}
			if bytes.Equal(enc, ref) {
				t.Fatal("changing the field did not change the encoding")
			}

			// Read: every decoder returns the sample.
			check := func(name string, got Instance, err error) {
				t.Helper()
				if err != nil {
					t.Fatalf("%s: %v", name, err)
				}
				if d := diff(in, got); d != "" {
					t.Fatalf("%s: %s", name, d)
				}
			}
			var viaJSON, viaFast Instance
			check("encoding/json", viaJSON, json.Unmarshal(enc, &viaJSON))
			check("DecodeInstance", viaFast, DecodeInstance(enc, &viaFast))

			var buf bytes.Buffer
			w := bufio.NewWriter(&buf)
			if err := EncodeSnapshot(w, func(sink func(SnapshotItem) error) error { return sink(SnapshotItem{Instance: &in}) }); err != nil {
				t.Fatal(err)
			}
			items, err := collect(DecodeSnapshot, &buf)
			if err == nil && len(items) != 1 {
				err = fmt.Errorf("%d items", len(items))
			}
			check("snapshot stream", *items[0].Instance, err)

			var req ReplicateRequest
			err = DecodeReplicateRequest(AppendReplicateRequest(nil, &ReplicateRequest{Ops: []Op{{Kind: OpRegister, Replication: true, Instance: &in}}}), &req)
			if err == nil && (len(req.Ops) != 1 || req.Ops[0].Instance == nil) {
				err = fmt.Errorf("ops %+v", req.Ops)
			}
			check("replicate request", *req.Ops[0].Instance, err)

			resp, err := DecodeReplicateResponse(AppendReplicateResponse(nil, &ReplicateResponse{Results: []OpResult{{Code: CodeConflict, Instance: &in}}}))
			if err == nil && (len(resp.Results) != 1 || resp.Results[0].Instance == nil) {
				err = fmt.Errorf("results %+v", resp.Results)
			}
			check("replicate answer", *resp.Results[0].Instance, err)

			cl := in.Clone()
			check("Clone", cl, nil)
		})
	}
}
