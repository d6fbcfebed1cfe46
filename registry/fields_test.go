package registry

import (
	"encoding/json"
	"fmt"
	"reflect"
	"testing"
)

// Every field of the wire Instance survives every way the registry hands
// an instance out: Get, Snapshot, AppState, FetchAll and the encoded
// answer of fetch/poll (the hand-written encoder of payload.go). A field
// added to wire.Instance that a record or its encoder forgets fails here.
func TestInstance_EveryFieldThroughTheRegistry(t *testing.T) {
	typ := reflect.TypeOf(Instance{})
	base := t0.UnixNano()
	for i := 0; i < typ.NumField(); i++ {
		f := typ.Field(i)
		t.Run(f.Name, func(t *testing.T) {
			r := newTestReg(t)
			in := inst(appA, z1, "h1")
			in.RegTimestamp, in.UpTimestamp, in.RenewTimestamp, in.DirtyTimestamp, in.LatestTimestamp = base-5, base-4, base-3, base-2, base-1
			v := reflect.ValueOf(&in).Elem().Field(i)
			switch v.Kind() {
			case reflect.String: // key fields too: the instance is then found under the new key
				v.SetString(fmt.Sprintf("%s-%d-é", f.Name, i))
			case reflect.Uint32:
				v.SetUint(uint64(StatusWaiting))
			case reflect.Int64:
				v.SetInt(base - 100 - int64(i))
			case reflect.Slice:
				v.Set(reflect.ValueOf([]string{"http://field:1", "grpc://second:2"}))
			case reflect.Map:
				v.Set(reflect.ValueOf(map[string]string{"field": fmt.Sprint(i), "b": "<&>"}))
			default:
				t.Fatalf("field %s of kind %s: teach this test and the registry's records about it", f.Name, v.Kind())
			}
			if !r.Import(in) {
				t.Fatal("Import refused the sample")
			}
			want := v.Interface()
			check := func(where string, got Instance) {
				t.Helper()
				if g := reflect.ValueOf(got).Field(i).Interface(); !reflect.DeepEqual(g, want) {
					t.Errorf("%s: %s = %#v, want %#v", where, f.Name, g, want)
				}
			}
			got, ok := r.Get(in.Key())
			if !ok {
				t.Fatal("Get: not found")
			}
			check("Get", got)
			for _, s := range []Snapshot{r.Snapshot(), r.AppState([]AppKey{{Env: in.Env, AppID: in.AppID}})} {
				if len(s.Instances) != 1 {
					t.Fatalf("snapshot holds %d instances", len(s.Instances))
				}
				check("Snapshot/AppState", s.Instances[0])
			}
			all := r.FetchAll()
			if l := all[in.AppID]; len(l) != 1 {
				t.Fatalf("FetchAll: %v", all)
			} else {
				check("FetchAll", *l[0])
			}
			res := r.FetchEncoded(in.Env, "", StatusUp|StatusWaiting, []string{in.AppID})
			if len(res) != 1 {
				t.Fatalf("FetchEncoded: %d answers", len(res))
			}
			var info InstanceInfo
			if err := json.Unmarshal(res[0].JSON, &info); err != nil {
				t.Fatalf("FetchEncoded wrote invalid JSON: %v\n%s", err, res[0].JSON)
			}
			if l := info.Instances[in.Zone]; len(l) != 1 {
				t.Fatalf("FetchEncoded: %s", res[0].JSON)
			} else {
				check("FetchEncoded", *l[0])
			}
		})
	}
}
