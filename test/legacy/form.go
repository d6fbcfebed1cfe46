package legacy

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"
)

// binder mimics the kratos form binder the original uses: fields are read in
// struct order, the first value that does not parse aborts with the strconv
// error text, then the "validate" tags are checked and every failure is
// reported in go-playground's wording. Single values take the first element;
// lists drop empty elements and are never split on commas (2.3.2).
type binder struct {
	vals  url.Values
	arg   string // the original's argument struct name, for messages
	err   error
	fails []string
}

func newBinder(vals url.Values, arg string) *binder { return &binder{vals: vals, arg: arg} }

func (b *binder) first(key string) string {
	if v := b.vals[key]; len(v) > 0 {
		return v[0]
	}
	return ""
}

func (b *binder) str(key string) string { return b.first(key) }

func (b *binder) strs(key string) []string {
	var out []string
	for _, v := range b.vals[key] {
		if v != "" {
			out = append(out, v)
		}
	}
	return out
}

func (b *binder) i64(key string) int64 {
	s := b.first(key)
	if s == "" || b.err != nil {
		return 0
	}
	v, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		b.err = err
	}
	return v
}

func (b *binder) u32(key string) uint32 {
	s := b.first(key)
	if s == "" || b.err != nil {
		return 0
	}
	v, err := strconv.ParseUint(s, 10, 32)
	if err != nil {
		b.err = err
	}
	return uint32(v)
}

func (b *binder) i64s(key string) []int64 {
	var out []int64
	for _, s := range b.strs(key) {
		if b.err != nil {
			return nil
		}
		v, err := strconv.ParseInt(s, 10, 64)
		if err != nil {
			b.err = err
			return nil
		}
		out = append(out, v)
	}
	return out
}

// boolean: anything ParseBool rejects (e.g. "yes") is false without error,
// as in kratos.
func (b *binder) boolean(key string) bool {
	v, err := strconv.ParseBool(b.first(key))
	return err == nil && v
}

func (b *binder) fail(field, tag string) {
	b.fails = append(b.fails, fmt.Sprintf("Key: '%s.%s' Error:Field validation for '%s' failed on the '%s' tag", b.arg, field, field, tag))
}

func (b *binder) requireStr(field, v string) {
	if v == "" {
		b.fail(field, "required")
	}
}

func (b *binder) requireNum(field string, v uint32) {
	if v == 0 {
		b.fail(field, "required")
	}
}

func (b *binder) requireList(field string, n int) {
	if n == 0 {
		b.fail(field, "gt")
	}
}

// problem is the -400 message, or "" when binding succeeded. A parse error
// wins over validation failures because kratos stops at it.
func (b *binder) problem() string {
	if b.err != nil {
		return b.err.Error()
	}
	return strings.Join(b.fails, "\n")
}
