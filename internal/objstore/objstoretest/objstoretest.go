// Package objstoretest is the conformance suite of objstore.Store: the
// contract checkpoint storage relies on, run against every implementation
// (the in-memory store in unit tests, the S3 store against a real server).
package objstoretest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/objstore"
)

// Suite describes the store under test.
type Suite struct {
	// New returns the store a subtest uses; the suite closes it.
	New func(t *testing.T) objstore.Store
	// Prefix returns the key prefix a subtest keeps its objects under (a
	// store shared with other tests); nil: none.
	Prefix func(t *testing.T) string
	// Cleanup deletes what a subtest left under its prefix when it
	// passed (a service that outlives the test); a failed one's objects
	// stay to look at.
	Cleanup bool
	// AtomicCreate says the store decides simultaneous create-only puts
	// of one key atomically: exactly one wins. Without it the race is
	// run and its outcome logged, not asserted (versitygw's posix backend
	// lets writers within one millisecond both win).
	AtomicCreate bool
	// ListKeys is how many objects the pagination test lists (default
	// 1100: more than S3's 1000 a page).
	ListKeys int
	// Timeout bounds each subtest (default 2 minutes).
	Timeout time.Duration
}

// Run runs the suite as subtests of t.
func Run(t *testing.T, s Suite) {
	if s.ListKeys == 0 {
		s.ListKeys = 1100
	}
	if s.Timeout == 0 {
		s.Timeout = 2 * time.Minute
	}
	tests := []struct {
		name string
		fn   func(*testing.T, *env)
	}{
		{"PutGetStat", testPutGetStat},
		{"CreateOnly", testCreateOnly},
		{"IfMatch", testIfMatch},
		{"NotFound", testNotFound},
		{"Delete", testDelete},
		{"List", testList},
		{"ListPages", testListPages},
		{"Range", testRange},
		{"KeyConflict", testKeyConflict},
		{"ConcurrentCreate", testConcurrentCreate},
		{"InvalidCalls", testInvalidCalls},
		{"CanceledContext", testCanceledContext},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(context.Background(), s.Timeout)
			defer cancel()
			st := s.New(t)
			e := &env{t: t, ctx: ctx, st: st, suite: s}
			if s.Prefix != nil {
				e.prefix = s.Prefix(t)
			}
			defer func() {
				if s.Cleanup && !t.Failed() {
					e.cleanup()
				}
				if err := st.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			}()
			tc.fn(t, e)
		})
	}
}

type env struct {
	t      *testing.T
	ctx    context.Context
	st     objstore.Store
	suite  Suite
	prefix string
}

func (e *env) key(name string) string { return e.prefix + name }

func (e *env) put(key, body string, opts objstore.PutOptions) objstore.Info {
	e.t.Helper()
	info, err := e.st.Put(e.ctx, key, strings.NewReader(body), opts)
	if err != nil {
		e.t.Fatalf("put %s: %v", key, err)
	}
	return info
}

func (e *env) get(key string) (string, objstore.Info) {
	e.t.Helper()
	rc, info, err := e.st.Get(e.ctx, key, objstore.GetOptions{})
	if err != nil {
		e.t.Fatalf("get %s: %v", key, err)
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		e.t.Fatalf("reading %s: %v", key, err)
	}
	return string(b), info
}

// wantBody fails unless key holds body with etag.
func (e *env) wantBody(key, body, etag, after string) {
	e.t.Helper()
	got, info := e.get(key)
	if got != body || info.ETag != etag {
		e.t.Fatalf("after %s, %s holds %q (ETag %s), want %q (ETag %s)", after, key, got, info.ETag, body, etag)
	}
}

// cleanup deletes what the subtest left under its prefix.
func (e *env) cleanup() {
	if e.prefix == "" {
		return
	}
	infos, err := e.st.List(e.ctx, e.prefix)
	if err != nil {
		e.t.Logf("cleanup: %v", err)
		return
	}
	keys := make([]string, len(infos))
	for i, in := range infos {
		keys[i] = in.Key
	}
	if err := parallel(e.ctx, keys, func(ctx context.Context, k string) error { return e.st.Delete(ctx, k) }); err != nil {
		e.t.Logf("cleanup: %v", err)
	}
}

// parallel runs fn on each key with a few workers and returns the first
// error.
func parallel(ctx context.Context, keys []string, fn func(context.Context, string) error) error {
	const workers = 8
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	work := make(chan string)
	errs := make(chan error, workers)
	var wg sync.WaitGroup
	for range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for k := range work {
				if err := fn(ctx, k); err != nil {
					errs <- err
					cancel()
					return
				}
			}
		}()
	}
feed:
	for _, k := range keys {
		select {
		case work <- k:
		case <-ctx.Done():
			break feed
		}
	}
	close(work)
	wg.Wait()
	close(errs)
	return <-errs
}

// wantErr fails unless err is target and names key.
func wantErr(t *testing.T, what string, err, target error, key string) {
	t.Helper()
	if !errors.Is(err, target) {
		t.Fatalf("%s: %v; want %v", what, err, target)
	}
	if !strings.Contains(err.Error(), key) {
		t.Fatalf("%s: %q does not name the key %s", what, err, key)
	}
}

// A put is read back whole, and Put, Get, Stat and List agree on its
// size and ETag; an unconditional put replaces; empty objects work.
func testPutGetStat(t *testing.T, e *env) {
	key := e.key("a/obj")
	body := strings.Repeat("onceflow ", 1000)
	pi := e.put(key, body, objstore.PutOptions{})
	if pi.Key != key || pi.Size != int64(len(body)) || pi.ETag == "" || !strings.HasPrefix(pi.ETag, `"`) {
		t.Fatalf("put %s returned %+v; want its key, size %d and a quoted ETag", key, pi, len(body))
	}
	got, gi := e.get(key)
	if got != body {
		t.Fatalf("get %s: %d bytes, not the %d put", key, len(got), len(body))
	}
	si, err := e.st.Stat(e.ctx, key)
	if err != nil {
		t.Fatalf("stat %s: %v", key, err)
	}
	li, err := e.st.List(e.ctx, key)
	if err != nil || len(li) != 1 {
		t.Fatalf("list %s: %v, %v; want the one object", key, li, err)
	}
	for what, in := range map[string]objstore.Info{"get": gi, "stat": si, "list": li[0]} {
		if in.Key != key || in.Size != pi.Size || in.ETag != pi.ETag {
			t.Fatalf("%s %s says %+v; put said %+v", what, key, in, pi)
		}
		if in.LastModified.IsZero() {
			t.Fatalf("%s %s has no LastModified", what, key)
		}
	}
	// An unconditional put replaces, and the ETag follows the content.
	pi2 := e.put(key, "replaced", objstore.PutOptions{})
	if pi2.ETag == pi.ETag {
		t.Fatalf("replacing %s kept the ETag %s", key, pi.ETag)
	}
	e.wantBody(key, "replaced", pi2.ETag, "an unconditional replace")
	// A body is read from its current offset.
	r := strings.NewReader("skip:kept")
	if _, err := r.Seek(5, io.SeekStart); err != nil {
		t.Fatal(err)
	}
	if _, err := e.st.Put(e.ctx, key, r, objstore.PutOptions{}); err != nil {
		t.Fatalf("put %s from offset 5: %v", key, err)
	}
	if got, _ := e.get(key); got != "kept" {
		t.Fatalf("put from offset 5 stored %q, want %q", got, "kept")
	}
	empty := e.key("a/empty")
	ei := e.put(empty, "", objstore.PutOptions{IfNoneMatch: true})
	if got, gi := e.get(empty); got != "" || gi.Size != 0 || gi.ETag != ei.ETag || ei.Size != 0 {
		t.Fatalf("empty object %s: %q %+v (put %+v)", empty, got, gi, ei)
	}
}

// A create-only put of a key that exists is refused with ErrExists (a
// precondition failure), and the first body stays; after a delete the key
// can be created again.
func testCreateOnly(t *testing.T, e *env) {
	key := e.key("_metadata")
	first := e.put(key, "epoch 1", objstore.PutOptions{IfNoneMatch: true})
	_, err := e.st.Put(e.ctx, key, strings.NewReader("epoch 2 (a zombie)"), objstore.PutOptions{IfNoneMatch: true})
	wantErr(t, "a second create-only put", err, objstore.ErrExists, key)
	if !errors.Is(err, objstore.ErrPreconditionFailed) {
		t.Fatalf("ErrExists %v is not an ErrPreconditionFailed", err)
	}
	e.wantBody(key, "epoch 1", first.ETag, "the refused create")
	// The same bytes again are refused too: the key exists.
	_, err = e.st.Put(e.ctx, key, strings.NewReader("epoch 1"), objstore.PutOptions{IfNoneMatch: true})
	wantErr(t, "a create-only put of the same bytes", err, objstore.ErrExists, key)
	if err := e.st.Delete(e.ctx, key); err != nil {
		t.Fatalf("delete %s: %v", key, err)
	}
	again := e.put(key, "epoch 3", objstore.PutOptions{IfNoneMatch: true})
	e.wantBody(key, "epoch 3", again.ETag, "a create-only put after the delete")
}

// A put with If-Match replaces the version it names and no other: a stale
// ETag and a deleted key are refused with ErrPreconditionFailed (not
// ErrExists), and the object stays as it was.
func testIfMatch(t *testing.T, e *env) {
	key := e.key("manifest")
	v1 := e.put(key, "version 1", objstore.PutOptions{})
	v2 := e.put(key, "version 2", objstore.PutOptions{IfMatch: v1.ETag})
	if v2.ETag == v1.ETag {
		t.Fatalf("the replacement's ETag %s equals the first's", v2.ETag)
	}
	e.wantBody(key, "version 2", v2.ETag, "a replace naming the current ETag")
	_, err := e.st.Put(e.ctx, key, strings.NewReader("version 3 (stale)"), objstore.PutOptions{IfMatch: v1.ETag})
	wantErr(t, "a put naming the stale ETag "+v1.ETag, err, objstore.ErrPreconditionFailed, key)
	if errors.Is(err, objstore.ErrExists) {
		t.Fatalf("a stale If-Match says ErrExists: %v", err)
	}
	e.wantBody(key, "version 2", v2.ETag, "the refused stale replace")

	gone := e.key("gone")
	g := e.put(gone, "soon deleted", objstore.PutOptions{})
	if err := e.st.Delete(e.ctx, gone); err != nil {
		t.Fatalf("delete %s: %v", gone, err)
	}
	_, err = e.st.Put(e.ctx, gone, strings.NewReader("resurrected"), objstore.PutOptions{IfMatch: g.ETag})
	wantErr(t, "an If-Match put of a deleted key", err, objstore.ErrPreconditionFailed, gone)
	if _, err := e.st.Stat(e.ctx, gone); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("after the refused If-Match put, stat %s: %v; want ErrNotFound", gone, err)
	}
}

// Get and Stat of a missing key fail with ErrNotFound naming the key.
func testNotFound(t *testing.T, e *env) {
	key := e.key("never/written")
	_, _, err := e.st.Get(e.ctx, key, objstore.GetOptions{})
	wantErr(t, "get of a missing key", err, objstore.ErrNotFound, key)
	_, err = e.st.Stat(e.ctx, key)
	wantErr(t, "stat of a missing key", err, objstore.ErrNotFound, key)
}

// Delete removes; deleting a missing key, or twice, is fine.
func testDelete(t *testing.T, e *env) {
	key := e.key("d/obj")
	if err := e.st.Delete(e.ctx, e.key("d/never-written")); err != nil {
		t.Fatalf("delete of a key never written: %v; want nil", err)
	}
	e.put(key, "x", objstore.PutOptions{})
	for i := range 2 {
		if err := e.st.Delete(e.ctx, key); err != nil {
			t.Fatalf("delete %d of %s: %v", i+1, key, err)
		}
	}
	if _, err := e.st.Stat(e.ctx, key); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("stat %s after its delete: %v; want ErrNotFound", key, err)
	}
	if infos, err := e.st.List(e.ctx, e.key("d/")); err != nil || len(infos) != 0 {
		t.Fatalf("list %s after the delete: %v, %v; want nothing", e.key("d/"), infos, err)
	}
}

// A listing is by plain string prefix, not directory, sorted in byte
// order across "directories" ('-' and '.' sort before '/'), with each
// object's size and ETag.
func testList(t *testing.T, e *env) {
	names := []string{"p/a-b", "p/a.b", "p/a/b", "p/a/c/d", "p/a0", "p/ab", "p/b", "q/a"}
	want := map[string]objstore.Info{}
	for i, n := range names {
		k := e.key(n)
		want[k] = e.put(k, strings.Repeat("x", i), objstore.PutOptions{})
	}
	check := func(prefix string, wantKeys ...string) {
		t.Helper()
		infos, err := e.st.List(e.ctx, e.key(prefix))
		if err != nil {
			t.Fatalf("list %q: %v", e.key(prefix), err)
		}
		var got []string
		for _, in := range infos {
			got = append(got, strings.TrimPrefix(in.Key, e.prefix))
			if w := want[in.Key]; in.Size != w.Size || in.ETag != w.ETag || in.LastModified.IsZero() {
				t.Fatalf("list %q: %+v; put said %+v", e.key(prefix), in, w)
			}
		}
		if !slices.Equal(got, wantKeys) {
			t.Fatalf("list %q: %q; want %q", e.key(prefix), got, wantKeys)
		}
	}
	check("p/", "p/a-b", "p/a.b", "p/a/b", "p/a/c/d", "p/a0", "p/ab", "p/b")
	check("p/a", "p/a-b", "p/a.b", "p/a/b", "p/a/c/d", "p/a0", "p/ab")
	check("p/a/", "p/a/b", "p/a/c/d")
	check("p/a/c", "p/a/c/d")
	check("p/a/b", "p/a/b")
	check("p/c")
	check("", names...)
	if infos, err := e.st.List(e.ctx, e.key("none/")); err != nil || infos == nil || len(infos) != 0 {
		t.Fatalf("list of an empty prefix: %#v, %v; want an empty slice", infos, err)
	}
}

// A listing of more objects than one page holds returns every one, once,
// in order.
func testListPages(t *testing.T, e *env) {
	n := e.suite.ListKeys
	keys := make([]string, n)
	for i := range keys {
		keys[i] = e.key(fmt.Sprintf("many/%05d", i))
	}
	start := time.Now()
	if err := parallel(e.ctx, keys, func(ctx context.Context, k string) error {
		_, err := e.st.Put(ctx, k, strings.NewReader(k), objstore.PutOptions{IfNoneMatch: true})
		return err
	}); err != nil {
		t.Fatalf("putting %d objects: %v", n, err)
	}
	putTook := time.Since(start)
	start = time.Now()
	infos, err := e.st.List(e.ctx, e.key("many/"))
	if err != nil {
		t.Fatalf("list %s: %v", e.key("many/"), err)
	}
	t.Logf("%d puts took %s (8 at a time), the listing %s", n, putTook.Round(time.Millisecond), time.Since(start).Round(time.Millisecond))
	if len(infos) != n {
		t.Fatalf("list %s: %d objects, want %d", e.key("many/"), len(infos), n)
	}
	for i, in := range infos {
		if in.Key != keys[i] || in.Size != int64(len(keys[i])) {
			t.Fatalf("list %s: object %d is %+v, want %s of %d bytes", e.key("many/"), i, in, keys[i], len(keys[i]))
		}
	}
}

// A key that is another object's directory, or has an object as its
// directory, is stored (AWS S3) or refused with ErrKeyConflict naming it
// (file-backed servers, the Memory store), and a refusal changes nothing.
// Once the other object is deleted, the key can be written.
func testKeyConflict(t *testing.T, e *env) {
	for _, c := range []struct{ first, second string }{
		{"k1/a", "k1/a/b/c"}, // the new key's directory is an object
		{"k2/a/b/c", "k2/a"}, // the new key is an object's directory
	} {
		first, second := e.key(c.first), e.key(c.second)
		fi := e.put(first, "first", objstore.PutOptions{})
		for _, opts := range []objstore.PutOptions{{}, {IfNoneMatch: true}} {
			_, err := e.st.Put(e.ctx, second, strings.NewReader("second"), opts)
			if err == nil {
				t.Logf("put %s%s beside %s: stored (this store allows it)", second, opts.Condition(), first)
				if err := e.st.Delete(e.ctx, second); err != nil {
					t.Fatalf("delete %s: %v", second, err)
				}
				continue
			}
			wantErr(t, fmt.Sprintf("put %s%s beside %s", second, opts.Condition(), first), err, objstore.ErrKeyConflict, second)
			if errors.Is(err, objstore.ErrPreconditionFailed) {
				t.Fatalf("a key conflict is reported as a precondition failure: %v", err)
			}
			if _, err := e.st.Stat(e.ctx, second); !errors.Is(err, objstore.ErrNotFound) {
				t.Fatalf("after the refused put, stat %s: %v; want ErrNotFound", second, err)
			}
		}
		e.wantBody(first, "first", fi.ETag, "the refused conflicting put")
		if err := e.st.Delete(e.ctx, first); err != nil {
			t.Fatalf("delete %s: %v", first, err)
		}
		si := e.put(second, "second", objstore.PutOptions{IfNoneMatch: true})
		e.wantBody(second, "second", si.ETag, "deleting the conflicting object")
	}
}

// A ranged read returns the range and the whole object's size; a range
// past the end is cut; one starting past the end fails.
func testRange(t *testing.T, e *env) {
	key := e.key("r")
	body := "0123456789abcdef"
	pi := e.put(key, body, objstore.PutOptions{})
	read := func(off, n int64) (string, objstore.Info, error) {
		rc, info, err := e.st.Get(e.ctx, key, objstore.GetOptions{Offset: off, Length: n})
		if err != nil {
			return "", info, err
		}
		defer rc.Close()
		b, err := io.ReadAll(rc)
		return string(b), info, err
	}
	for _, c := range []struct {
		off, n int64
		want   string
	}{{0, 4, "0123"}, {4, 0, "456789abcdef"}, {10, 3, "abc"}, {14, 100, "ef"}, {15, 1, "f"}} {
		got, info, err := read(c.off, c.n)
		if err != nil || got != c.want || info.Size != int64(len(body)) || info.ETag != pi.ETag {
			t.Fatalf("get %s offset %d length %d: %q %+v %v; want %q, size %d, ETag %s", key, c.off, c.n, got, info, err, c.want, len(body), pi.ETag)
		}
	}
	if got, _, err := read(16, 1); err == nil {
		t.Fatalf("get %s from byte 16 of 16: %q, no error", key, got)
	} else if errors.Is(err, objstore.ErrNotFound) || !strings.Contains(err.Error(), key) {
		t.Fatalf("get %s from byte 16 of 16: %v; want an error naming the key, not ErrNotFound", key, err)
	}
}

// Simultaneous create-only puts of one key: on an atomic store exactly one
// wins, the others get ErrExists and the winner's body is kept.
func testConcurrentCreate(t *testing.T, e *env) {
	const writers = 8
	key := e.key("race/_metadata")
	var (
		wg    sync.WaitGroup
		ready = make(chan struct{})
		errs  [writers]error
		infos [writers]objstore.Info
	)
	for i := range writers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-ready
			infos[i], errs[i] = e.st.Put(e.ctx, key, strings.NewReader(fmt.Sprintf("writer %d", i)), objstore.PutOptions{IfNoneMatch: true})
		}()
	}
	close(ready)
	wg.Wait()
	var winners []int
	var outcomes []string
	for i, err := range errs {
		switch {
		case err == nil:
			winners = append(winners, i)
			outcomes = append(outcomes, "won")
		case errors.Is(err, objstore.ErrExists):
			outcomes = append(outcomes, "ErrExists")
		default:
			outcomes = append(outcomes, err.Error())
		}
	}
	body, info := e.get(key)
	t.Logf("%d simultaneous create-only puts of %s: %q; the key holds %q", writers, key, outcomes, body)
	if !e.suite.AtomicCreate {
		return
	}
	if len(winners) != 1 {
		t.Fatalf("%d simultaneous create-only puts of %s: %d won (%q); want exactly one", writers, key, len(winners), outcomes)
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, objstore.ErrExists) {
			t.Fatalf("writer %d: %v; want ErrExists", i, err)
		}
	}
	w := winners[0]
	if want := fmt.Sprintf("writer %d", w); body != want || info.ETag != infos[w].ETag {
		t.Fatalf("%s holds %q (ETag %s); the winner wrote %q (ETag %s)", key, body, info.ETag, want, infos[w].ETag)
	}
}

// Invalid keys and options are refused before any request, naming them.
func testInvalidCalls(t *testing.T, e *env) {
	for _, key := range []string{"", "/abs", "dir/", "a//b", "a/./b", "a/../b", "nul\x00"} {
		if _, err := e.st.Put(e.ctx, key, strings.NewReader("x"), objstore.PutOptions{}); err == nil {
			t.Fatalf("put of the invalid key %q succeeded", key)
		}
		if err := e.st.Delete(e.ctx, key); err == nil {
			t.Fatalf("delete of the invalid key %q succeeded", key)
		}
	}
	key := e.key("both")
	_, err := e.st.Put(e.ctx, key, strings.NewReader("x"), objstore.PutOptions{IfNoneMatch: true, IfMatch: `"abc"`})
	if err == nil || !strings.Contains(err.Error(), key) {
		t.Fatalf("put with IfNoneMatch and IfMatch: %v; want a refusal naming %s", err, key)
	}
	if _, _, err := e.st.Get(e.ctx, key, objstore.GetOptions{Offset: -1}); err == nil {
		t.Fatal("get with a negative offset succeeded")
	}
	if _, err := e.st.Stat(e.ctx, key); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("after the refused put, stat %s: %v; want ErrNotFound", key, err)
	}
}

// A call with a cancelled context fails with the context's error.
func testCanceledContext(t *testing.T, e *env) {
	ctx, cancel := context.WithCancel(e.ctx)
	cancel()
	key := e.key("c")
	_, err := e.st.Put(ctx, key, bytes.NewReader([]byte("x")), objstore.PutOptions{})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("put with a cancelled context: %v; want context.Canceled", err)
	}
	if _, err := e.st.List(ctx, e.prefix); !errors.Is(err, context.Canceled) {
		t.Fatalf("list with a cancelled context: %v; want context.Canceled", err)
	}
	if _, err := e.st.Stat(e.ctx, key); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("stat %s after the cancelled put: %v; want ErrNotFound", key, err)
	}
}
