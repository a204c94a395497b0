package s3store_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/crc32"
	"io"
	"os"
	"runtime"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/objstore"
	"github.com/onceflow/onceflow/internal/testkit/s3test"
)

func TestMain(m *testing.M) { os.Exit(s3test.Main(m)) }

func ctxT(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	t.Cleanup(cancel)
	return ctx
}

// fakeClock is a settable clock shared by a Memory store and a Storage.
type fakeClock struct {
	mu  sync.Mutex
	now time.Time
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) Advance(d time.Duration) {
	c.mu.Lock()
	c.now = c.now.Add(d)
	c.mu.Unlock()
}

func newClock() *fakeClock { return &fakeClock{now: time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)} }

func open(t *testing.T, st objstore.Store, epoch int64, retained int, clk *fakeClock) *s3store.Storage {
	t.Helper()
	return openPrefix(t, st, "ckpt", epoch, retained, clk)
}

func openPrefix(t *testing.T, st objstore.Store, prefix string, epoch int64, retained int, clk *fakeClock) *s3store.Storage {
	t.Helper()
	o := s3store.Options{Prefix: prefix, Job: "wc", Epoch: epoch, Retained: retained, Logf: t.Logf}
	if clk != nil {
		o.Now = clk.Now
	}
	s, err := s3store.New(ctxT(t), st, o)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// chk describes a checkpoint to write: private files, new shared files,
// and shared files reused through HasShared.
type chk struct {
	id        int64
	savepoint bool
	private   map[string]string
	shared    map[string]string
	reuse     []string
}

// write writes c's files through s and returns its metadata, not yet
// completed.
func write(t *testing.T, s checkpoint.Storage, c chk) *checkpoint.Metadata {
	t.Helper()
	w, err := s.Writer(c.id, "op/1", 0)
	if err != nil {
		t.Fatalf("Writer(%d): %v", c.id, err)
	}
	var refs []checkpoint.FileRef
	put := func(name, data string, shared bool) {
		fw, err := w.Create(name, shared)
		if err != nil {
			t.Fatalf("Create(%s): %v", name, err)
		}
		if _, err := io.WriteString(fw, data); err != nil {
			t.Fatal(err)
		}
		r, err := fw.Close()
		if err != nil {
			t.Fatalf("Close(%s): %v", name, err)
		}
		refs = append(refs, r)
	}
	for _, n := range sortedKeys(c.private) {
		put(n, c.private[n], false)
	}
	for _, n := range sortedKeys(c.shared) {
		put(n, c.shared[n], true)
	}
	for _, n := range c.reuse {
		r, ok := w.HasShared(n)
		if !ok {
			t.Fatalf("checkpoint %d: HasShared(%s) = false, want a retained file", c.id, n)
		}
		refs = append(refs, r)
	}
	return &checkpoint.Metadata{CheckpointID: c.id, Savepoint: c.savepoint, Timestamp: time.Unix(c.id, 0).UTC(),
		Operators: []checkpoint.OperatorSnapshot{{UID: "op/1", Parallelism: 1, MaxParallelism: 128,
			Subtasks: []checkpoint.SubtaskSnapshot{{Subtask: 0, Keyed: &checkpoint.Handle{Backend: "pebble", Files: refs},
				Operator: &checkpoint.Handle{Backend: checkpoint.BackendOperator, Inline: []byte("offsets")}}}}}}
}

func sortedKeys(m map[string]string) []string {
	var ks []string
	for k := range m {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	return ks
}

func complete(t *testing.T, s checkpoint.Storage, c chk) *checkpoint.Metadata {
	t.Helper()
	md := write(t, s, c)
	if err := s.Complete(ctxT(t), md); err != nil {
		t.Fatalf("Complete(%d): %v", c.id, err)
	}
	return md
}

// restore reads every file of md back and returns name -> content.
func restore(t *testing.T, s checkpoint.Storage, md *checkpoint.Metadata) map[string]string {
	t.Helper()
	out := map[string]string{}
	for _, r := range md.Operators[0].Subtasks[0].Keyed.Files {
		rc, err := s.Open(r)
		if err != nil {
			t.Fatalf("Open(%s): %v", r.Path, err)
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatalf("read %s: %v", r.Path, err)
		}
		out[r.Path[strings.LastIndexByte(r.Path, '/')+1:]] = string(b)
	}
	return out
}

func latestID(t *testing.T, s checkpoint.Storage) int64 {
	t.Helper()
	md, _, err := s.Latest(ctxT(t))
	if err != nil {
		t.Fatalf("Latest: %v", err)
	}
	if md == nil {
		return 0
	}
	return md.CheckpointID
}

func keys(t *testing.T, st objstore.Store, prefix string) []string {
	t.Helper()
	infos, err := st.List(ctxT(t), prefix)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range infos {
		out = append(out, in.Key)
	}
	return out
}

func TestCompleteLatestRestoreAndReopen(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 2, nil)
	if md, infos, err := s.Latest(ctxT(t)); md != nil || len(infos) != 0 || err != nil {
		t.Fatalf("Latest of an empty store = %v, %v, %v", md, infos, err)
	}
	complete(t, s, chk{id: 1, private: map[string]string{"MANIFEST": "m1"}, shared: map[string]string{"r-1.sst": "sst one"}})
	complete(t, s, chk{id: 2, private: map[string]string{"MANIFEST": "m2"}, shared: map[string]string{"r-2.sst": "sst two"}, reuse: []string{"r-1.sst"}})

	for _, st := range []*s3store.Storage{s, open(t, mem, 1, 2, nil)} {
		md, _, err := st.Latest(ctxT(t))
		if err != nil || md == nil || md.CheckpointID != 2 {
			t.Fatalf("Latest = %v, %v; want checkpoint 2", md, err)
		}
		got := restore(t, st, md)
		want := map[string]string{"MANIFEST": "m2", "r-1.sst": "sst one", "r-2.sst": "sst two"}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Fatalf("restored %v, want %v", got, want)
		}
		w, _ := st.Writer(3, "op/1", 0)
		if _, ok := w.HasShared("r-1.sst"); !ok {
			t.Fatal("HasShared(r-1.sst) after reopening = false")
		}
		_ = st.Abort(3)
	}
	// Load by the path Latest gives and by name.
	for _, p := range []string{"chk-2", "ckpt/wc/manifest/chk-2"} {
		md, err := s.Load(ctxT(t), p)
		if err != nil || md.CheckpointID != 2 {
			t.Fatalf("Load(%s) = %v, %v", p, md, err)
		}
	}
	if _, err := s.Load(ctxT(t), "chk-9"); err == nil || !strings.Contains(err.Error(), "chk-9") || !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("Load(chk-9) = %v; want not found naming it", err)
	}
	// Ids are refused at or below the newest.
	if _, err := s.Writer(2, "op/1", 0); err == nil {
		t.Fatal("Writer(2) after checkpoint 2 completed succeeded")
	}
}

func TestRetentionDeletesOnlyUnreferencedObjects(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 2, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A", "b": "B"}})
	complete(t, s, chk{id: 2, private: map[string]string{"p": "2"}, shared: map[string]string{"c": "C"}, reuse: []string{"a"}})
	// Reopen: the references come from the manifests alone.
	s = open(t, mem, 1, 2, nil)
	complete(t, s, chk{id: 3, private: map[string]string{"p": "3"}, reuse: []string{"c"}})
	// chk-1 is subsumed: b goes, a stays (chk-2 names it).
	shared := strings.Join(keys(t, mem, "ckpt/wc/shared/"), " ")
	if strings.Contains(shared, "/b") || !strings.Contains(shared, "/a") || !strings.Contains(shared, "/c") {
		t.Fatalf("after checkpoint 3, shared objects are %s; want a and c, not b", shared)
	}
	if got := keys(t, mem, "ckpt/wc/data/chk-1/"); len(got) != 0 {
		t.Fatalf("subsumed checkpoint 1 left %v", got)
	}
	if got := keys(t, mem, "ckpt/wc/manifest/chk-1"); len(got) != 0 {
		t.Fatalf("subsumed checkpoint 1's manifest stays: %v", got)
	}
	complete(t, s, chk{id: 4, private: map[string]string{"p": "4"}, reuse: []string{"c"}})
	shared = strings.Join(keys(t, mem, "ckpt/wc/shared/"), " ")
	if strings.Contains(shared, "/a") || !strings.Contains(shared, "/c") {
		t.Fatalf("after checkpoint 4, shared objects are %s; want c only", shared)
	}
	infos, err := s.List(ctxT(t))
	if err != nil || len(infos) != 2 || infos[0].ID != 3 || infos[1].ID != 4 {
		t.Fatalf("List = %+v, %v; want checkpoints 3 and 4", infos, err)
	}
	for _, id := range []int64{3, 4} {
		md, err := s.Load(ctxT(t), fmt.Sprintf("chk-%d", id))
		if err != nil {
			t.Fatalf("Load(chk-%d): %v", id, err)
		}
		if got := restore(t, s, md); got["c"] != "C" || got["p"] != fmt.Sprint(id) {
			t.Fatalf("checkpoint %d restores %v", id, got)
		}
	}
}

func TestAbortDeletesWhatWasWritten(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 1, nil)
	complete(t, s, chk{id: 1, shared: map[string]string{"a": "A"}})
	w, err := s.Writer(2, "op/1", 0)
	if err != nil {
		t.Fatal(err)
	}
	fw, _ := w.Create("p", false)
	io.WriteString(fw, "private")
	if _, err := fw.Close(); err != nil {
		t.Fatal(err)
	}
	sw, _ := w.Create("s", true)
	io.WriteString(sw, "shared")
	if _, err := sw.Close(); err != nil {
		t.Fatal(err)
	}
	late, _ := w.Create("late", false) // still uploading at the abort
	io.WriteString(late, "late")
	if err := s.Abort(2); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	if _, err := late.Close(); err == nil || !strings.Contains(err.Error(), "aborted") {
		t.Fatalf("Close after Abort = %v; want a refusal saying aborted", err)
	}
	if got := keys(t, mem, "ckpt/wc/data/chk-2"); len(got) != 0 {
		t.Fatalf("aborted checkpoint left %v", got)
	}
	if got := keys(t, mem, "ckpt/wc/shared/"); len(got) != 1 {
		t.Fatalf("shared objects after the abort: %v; want only checkpoint 1's", got)
	}
	if _, err := s.Writer(2, "op/1", 0); err == nil {
		t.Fatal("Writer of an aborted checkpoint succeeded")
	}
	if err := s.Complete(ctxT(t), &checkpoint.Metadata{CheckpointID: 2}); err == nil || !strings.Contains(err.Error(), "aborted") {
		t.Fatalf("Complete of an aborted checkpoint = %v", err)
	}
	if err := s.Abort(1); err == nil {
		t.Fatal("Abort of a completed checkpoint succeeded")
	}
}

// A failure at any step of Complete leaves the previous checkpoint whole:
// Complete fails and checkpoint 1 is the latest, or Complete succeeds and
// checkpoint 2 is; each restores in full.
func TestFailureAtEachStepOfComplete(t *testing.T) {
	for _, op := range []objstore.Op{objstore.OpList, objstore.OpGet, objstore.OpStat, objstore.OpPut, objstore.OpDelete} {
		for _, applied := range []bool{false, true} {
			for nth := 1; ; nth++ {
				mem := objstore.NewMemory(objstore.MemoryOptions{})
				f := objstore.NewFaulty(mem)
				s := open(t, f, 1, 1, nil)
				complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
				md := write(t, s, chk{id: 2, private: map[string]string{"p": "2"}, shared: map[string]string{"b": "B"}, reuse: []string{"a"}})
				before := f.Calls(op)
				f.Inject(objstore.Fault{Op: op, Nth: nth, Applied: applied})
				err := s.Complete(ctxT(t), md)
				fired := f.Calls(op)-before >= nth
				f.Clear()
				if !fired {
					break
				}
				if err != nil {
					// What the engine does with a checkpoint that failed.
					if aerr := s.Abort(2); aerr != nil {
						t.Logf("%s #%d (applied %t): Abort: %v", op, nth, applied, aerr)
					}
				}
				r := open(t, mem, 1, 1, nil)
				want := int64(2)
				if err != nil {
					want = 1
				}
				got, _, lerr := r.Latest(ctxT(t))
				if lerr != nil || got == nil || got.CheckpointID != want {
					t.Fatalf("%s #%d (applied %t): Complete = %v; then Latest = %v, %v; want checkpoint %d", op, nth, applied, err, got, lerr, want)
				}
				files := restore(t, r, got)
				if files["a"] != "A" || files["p"] != fmt.Sprint(want) {
					t.Fatalf("%s #%d: checkpoint %d restores %v", op, nth, want, files)
				}
				if err != nil {
					t.Logf("%s #%d (applied %t): %v", op, nth, applied, err)
				}
			}
		}
	}
}

// hookStore runs before before every put of a manifest.
type hookStore struct {
	objstore.Store
	before func(key string)
}

func (h *hookStore) Put(ctx context.Context, key string, body io.ReadSeeker, opts objstore.PutOptions) (objstore.Info, error) {
	if strings.Contains(key, "/manifest/") && h.before != nil {
		h.before(key)
	}
	return h.Store.Put(ctx, key, body, opts)
}

func TestLowerEpochIsFenced(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	hook := &hookStore{Store: mem}
	old := open(t, hook, 1, 2, nil)
	complete(t, old, chk{id: 1, shared: map[string]string{"a": "A"}})
	md := write(t, old, chk{id: 2, private: map[string]string{"p": "old"}, reuse: []string{"a"}})
	// Another writer of epoch 1, already writing an id the new owner will
	// not use.
	zombie := open(t, mem, 1, 2, nil)
	zmd := write(t, zombie, chk{id: 5, private: map[string]string{"p": "zombie"}})

	// The new owner publishes checkpoint 2 between the old one's checks
	// and its put: the create-only put is refused, and the re-read finds
	// epoch 2.
	newer := open(t, mem, 2, 2, nil)
	hook.before = func(string) {
		hook.before = nil
		complete(t, newer, chk{id: 2, private: map[string]string{"p": "new"}, reuse: []string{"a"}})
	}
	err := old.Complete(ctxT(t), md)
	var fe *s3store.FencedError
	if !errors.Is(err, s3store.ErrFenced) || !errors.Is(err, objstore.ErrExists) || !errors.As(err, &fe) || fe.Epoch != 1 || fe.Newer != 2 ||
		!strings.Contains(err.Error(), "ckpt/wc/manifest/chk-2") || !strings.Contains(err.Error(), "epoch 2") || !strings.Contains(err.Error(), "epoch 1") {
		t.Fatalf("old owner's Complete = %v; want ErrFenced naming the manifest and both epochs", err)
	}
	if _, err := old.Writer(3, "op/1", 0); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("Writer after the fence = %v; want ErrFenced", err)
	}
	if got := restore(t, newer, mustLatest(t, newer)); got["p"] != "new" {
		t.Fatalf("checkpoint 2 restores %v; want the new owner's", got)
	}

	// A writer of a lower epoch whose id is still free is fenced too, by
	// the manifests it lists first; it publishes nothing. A Storage opened
	// after the new owner published refuses even its writers.
	if _, err := open(t, mem, 1, 2, nil).Writer(6, "op/1", 0); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("Writer of a Storage opened at a lower epoch = %v; want ErrFenced", err)
	}
	if err := zombie.Complete(ctxT(t), zmd); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("zombie's Complete of a free id = %v; want ErrFenced", err)
	}
	if got := keys(t, mem, "ckpt/wc/manifest/chk-5"); len(got) != 0 {
		t.Fatalf("the zombie published %v", got)
	}
	if err := zombie.MarkCommitted(ctxT(t), 2); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("zombie's MarkCommitted = %v; want ErrFenced", err)
	}
	if err := zombie.DiscardAll(); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("zombie's DiscardAll = %v; want ErrFenced", err)
	}
	if _, err := zombie.Sweep(ctxT(t)); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("zombie's Sweep = %v; want ErrFenced", err)
	}
	c1, err := newer.Load(ctxT(t), "chk-1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := zombie.Adopt(ctxT(t), c1, 10); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("zombie's Adopt = %v; want ErrFenced", err)
	}
	if got := keys(t, mem, "ckpt/wc/manifest/"); len(got) != 2 {
		t.Fatalf("manifests after the zombie's attempts: %v; want chk-1 and chk-2", got)
	}
	if id := latestID(t, newer); id != 2 {
		t.Fatalf("Latest = %d, want 2", id)
	}
}

func mustLatest(t *testing.T, s checkpoint.Storage) *checkpoint.Metadata {
	t.Helper()
	md, _, err := s.Latest(ctxT(t))
	if err != nil || md == nil {
		t.Fatalf("Latest = %v, %v", md, err)
	}
	return md
}

// A put of the manifest whose response was lost is settled by reading it
// back: the same bytes are success.
func TestLostManifestResponseIsSuccess(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	f := objstore.NewFaulty(mem)
	s := open(t, f, 1, 1, nil)
	md := write(t, s, chk{id: 1, private: map[string]string{"p": "1"}})
	f.Inject(objstore.Fault{Op: objstore.OpPut, Key: "ckpt/wc/manifest/chk-1", Nth: 1, Applied: true})
	if err := s.Complete(ctxT(t), md); err != nil {
		t.Fatalf("Complete with the manifest's response lost = %v", err)
	}
	if id := latestID(t, open(t, mem, 1, 1, nil)); id != 1 {
		t.Fatalf("Latest = %d", id)
	}
}

func TestSavepointIsSelfContained(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 1, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	sp := complete(t, s, chk{id: 2, savepoint: true, private: map[string]string{"p": "sp"}, reuse: []string{"a"}})
	if !strings.HasSuffix(sp.Path, "manifest/savepoint-2") {
		t.Fatalf("savepoint path %s", sp.Path)
	}
	for _, r := range sp.Operators[0].Subtasks[0].Keyed.Files {
		if !strings.HasPrefix(r.Path, "data/savepoint-2/") || r.Shared {
			t.Fatalf("savepoint names %+v, not its own copy", r)
		}
	}
	if got := keys(t, mem, "ckpt/wc/data/chk-2/"); len(got) != 0 {
		t.Fatalf("the savepoint's originals stay: %v", got)
	}
	if id := latestID(t, s); id != 2 {
		t.Fatalf("Latest = %d; want the savepoint", id)
	}
	complete(t, s, chk{id: 3, private: map[string]string{"p": "3"}, shared: map[string]string{"b": "B"}})
	complete(t, s, chk{id: 4, private: map[string]string{"p": "4"}, shared: map[string]string{"c": "C"}})
	if got := keys(t, mem, "ckpt/wc/shared/"); len(got) != 1 {
		t.Fatalf("shared objects %v; want checkpoint 4's only", got)
	}
	md, err := s.Load(ctxT(t), "savepoint-2")
	if err != nil {
		t.Fatalf("Load(savepoint-2) after its checkpoint's objects went: %v", err)
	}
	if got := restore(t, s, md); got["a"] != "A" || got["p"] != "sp" {
		t.Fatalf("savepoint restores %v", got)
	}
}

func TestDamagedManifestsAndFiles(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 3, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}})
	md2 := complete(t, s, chk{id: 2, private: map[string]string{"p": "2"}})
	// chk-2's file corrupted; chk-3's manifest garbage.
	ref := md2.Operators[0].Subtasks[0].Keyed.Files[0]
	if _, err := mem.Put(ctxT(t), "ckpt/wc/"+ref.Path, strings.NewReader("X"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := mem.Put(ctxT(t), "ckpt/wc/manifest/chk-3", strings.NewReader("garbage"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	r := open(t, mem, 1, 3, nil)
	infos, err := r.List(ctxT(t))
	if err != nil || len(infos) != 3 || !infos[2].Damaged || infos[2].Complete || infos[1].Damaged {
		t.Fatalf("List = %+v, %v; want 1, 2 intact (List reads no state files) and 3 damaged", infos, err)
	}
	md, skipped, err := r.Latest(ctxT(t))
	if err != nil || md == nil || md.CheckpointID != 1 {
		t.Fatalf("Latest = %v, %v; want checkpoint 1", md, err)
	}
	if len(skipped) != 3 || !skipped[0].Damaged || !skipped[1].Damaged || skipped[1].Err == nil ||
		!strings.Contains(skipped[1].Err.Error(), ref.Path) || !strings.Contains(skipped[0].Err.Error(), "manifest/chk-3") {
		t.Fatalf("Latest reported %+v; want 3 and 2 damaged, naming the manifest and the file", skipped)
	}
	if _, err := r.Load(ctxT(t), "chk-2"); err == nil || !strings.Contains(err.Error(), "expected") {
		t.Fatalf("Load of a checkpoint with a bad file = %v", err)
	}
}

func TestMarkCommitted(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 1, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}})
	complete(t, s, chk{id: 2, savepoint: true, private: map[string]string{"p": "2"}})
	if err := s.MarkCommitted(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	if err := s.MarkCommitted(ctxT(t), 7); err == nil || !strings.Contains(err.Error(), "7") {
		t.Fatalf("MarkCommitted(7) = %v", err)
	}
	r := open(t, mem, 1, 1, nil)
	md, err := r.Load(ctxT(t), "savepoint-2")
	if err != nil || !md.Committed {
		t.Fatalf("Load = %+v, %v; want committed", md, err)
	}
	if l := mustLatest(t, r); !l.Committed {
		t.Fatal("Latest not committed")
	}
	infos, _ := r.List(ctxT(t))
	if len(infos) != 2 || infos[0].Committed || !infos[1].Committed {
		t.Fatalf("List = %+v", infos)
	}
	// The marker goes with its checkpoint when it is subsumed.
	if err := r.MarkCommitted(ctxT(t), 1); err != nil {
		t.Fatal(err)
	}
	complete(t, r, chk{id: 3, private: map[string]string{"p": "3"}})
	if got := keys(t, mem, "ckpt/wc/manifest/chk-1"); len(got) != 0 {
		t.Fatalf("subsumed checkpoint's manifest or marker stays: %v", got)
	}
}

// Objects no manifest names (a crashed writer's) are deleted only once
// they are older than the grace period.
func TestOrphansGoAfterTheGracePeriod(t *testing.T) {
	clk := newClock()
	mem := objstore.NewMemory(objstore.MemoryOptions{Now: clk.Now})
	crashed := open(t, mem, 1, 1, clk)
	write(t, crashed, chk{id: 5, private: map[string]string{"p": "lost"}, shared: map[string]string{"x": "X"}})
	s := open(t, mem, 2, 1, clk)
	complete(t, s, chk{id: 6, private: map[string]string{"p": "6"}})
	if got := keys(t, mem, "ckpt/wc/data/chk-5/"); len(got) != 1 {
		t.Fatalf("a young orphan was deleted: %v", got)
	}
	clk.Advance(s3store.DefaultOrphanGrace + time.Second)
	complete(t, s, chk{id: 7, private: map[string]string{"p": "7"}})
	if got := append(keys(t, mem, "ckpt/wc/data/chk-5/"), keys(t, mem, "ckpt/wc/shared/")...); len(got) != 0 {
		t.Fatalf("orphans older than the grace period stay: %v", got)
	}
	if got := restore(t, s, mustLatest(t, s)); got["p"] != "7" {
		t.Fatalf("restores %v", got)
	}
}

func TestAdoptFromElsewhereIsNotSupported(t *testing.T) {
	s := open(t, objstore.NewMemory(objstore.MemoryOptions{}), 1, 1, nil)
	if _, err := s.Adopt(ctxT(t), &checkpoint.Metadata{Path: "/var/ckpt/wc/chk-3"}, 5); !errors.Is(err, s3store.ErrNotSupported) || !strings.Contains(err.Error(), "/var/ckpt/wc/chk-3") {
		t.Fatalf("Adopt of another location's checkpoint = %v; want ErrNotSupported naming it", err)
	}
}

func TestOptionsAreChecked(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	for _, o := range []s3store.Options{{Job: "wc"}, {Job: "a//b", Epoch: 1}, {Job: "a/../b", Epoch: 1}, {Job: "wc/", Epoch: 1}, {Job: "wc", Epoch: 1, Prefix: "p/"}} {
		if _, err := s3store.New(ctxT(t), mem, o); err == nil {
			t.Fatalf("New(%+v) succeeded", o)
		}
	}
}

// A Complete whose manifest put was applied but whose response was lost,
// and whose read-back failed too, returns an error although the checkpoint
// exists; the Abort that follows must not delete its objects.
func TestAbortAfterAnUnsettledCompleteKeepsAPublishedCheckpoint(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	f := objstore.NewFaulty(mem)
	s := open(t, f, 1, 1, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	md := write(t, s, chk{id: 2, private: map[string]string{"p": "2"}, shared: map[string]string{"b": "B"}, reuse: []string{"a"}})
	f.Inject(objstore.Fault{Op: objstore.OpPut, Key: "ckpt/wc/manifest/chk-2", Nth: 1, Applied: true})
	f.Inject(objstore.Fault{Op: objstore.OpGet, Key: "ckpt/wc/manifest/chk-2", Nth: 1})
	if err := s.Complete(ctxT(t), md); err == nil {
		t.Fatal("Complete with the response lost and the read-back failed succeeded")
	}
	if err := s.Abort(2); err == nil || !strings.Contains(err.Error(), "manifest/chk-2 exists") {
		t.Fatalf("Abort after an applied Complete = %v; want a refusal naming the manifest", err)
	}
	r := open(t, mem, 1, 1, nil)
	got := restore(t, r, mustLatest(t, r))
	if got["p"] != "2" || got["a"] != "A" || got["b"] != "B" {
		t.Fatalf("checkpoint 2 restores %v", got)
	}
}

// Sweep deletes the objects of checkpoints and savepoints without a
// manifest, never those of a complete or damaged one, of one in flight
// here, or of a writer of a higher epoch.
func TestSweepRemovesIncompleteCheckpointsOnly(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	crashed := open(t, mem, 1, 3, nil)
	complete(t, crashed, chk{id: 1, private: map[string]string{"p": "1"}})
	complete(t, crashed, chk{id: 2, private: map[string]string{"p": "2"}})
	write(t, crashed, chk{id: 3, private: map[string]string{"p": "3", "q": "3"}})
	write(t, crashed, chk{id: 4, savepoint: true, private: map[string]string{"p": "4"}})
	// Checkpoint 2's manifest damaged: its objects are not the sweep's.
	if _, err := mem.Put(ctxT(t), "ckpt/wc/manifest/chk-2", strings.NewReader("garbage"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	s := open(t, mem, 1, 3, nil)
	write(t, s, chk{id: 6, private: map[string]string{"p": "6"}}) // in flight here
	removed, err := s.Sweep(ctxT(t))
	if err != nil {
		t.Fatalf("Sweep: %v", err)
	}
	if len(removed) != 2 || removed[0].ID != 3 || removed[1].ID != 4 || removed[0].Err == nil || !strings.Contains(removed[0].Err.Error(), "no manifest") {
		t.Fatalf("Sweep removed %+v; want 3 and 4, saying why", removed)
	}
	for prefix, want := range map[string]int{"ckpt/wc/data/chk-1/": 1, "ckpt/wc/data/chk-2/": 1, "ckpt/wc/data/chk-3/": 0, "ckpt/wc/data/chk-4/": 0, "ckpt/wc/data/chk-6/": 1} {
		if got := keys(t, mem, prefix); len(got) != want {
			t.Fatalf("after Sweep %s holds %v; want %d objects", prefix, got, want)
		}
	}
	if _, err := s.Writer(4, "op/1", 0); err == nil {
		t.Fatal("Writer(4) after Sweep removed 4 succeeded: ids must stay above the removed ones")
	}
	// A newer epoch's writer in flight: its objects stay, and Sweep says
	// it is fenced.
	newer := open(t, mem, 2, 3, nil)
	write(t, newer, chk{id: 9, private: map[string]string{"p": "9"}})
	if _, err := open(t, mem, 1, 3, nil).Sweep(ctxT(t)); !errors.Is(err, s3store.ErrFenced) {
		t.Fatalf("Sweep by epoch 1 with an epoch-2 writer's objects = %v; want ErrFenced", err)
	}
	if got := keys(t, mem, "ckpt/wc/data/chk-9/"); len(got) != 1 {
		t.Fatalf("the newer writer's objects: %v", got)
	}
	if _, err := newer.Sweep(ctxT(t)); err != nil {
		t.Fatalf("Sweep by the newer owner: %v", err)
	}
}

// DiscardAll records the newest checkpoint's operator state, then deletes
// every checkpoint and shared object; savepoints stay. A failure to
// record deletes nothing.
func TestDiscardAll(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	f := objstore.NewFaulty(mem)
	s := open(t, f, 1, 2, nil)
	if rec, err := s.Discarded(ctxT(t)); err != nil || rec.Through != 0 {
		t.Fatalf("Discarded before any = %+v, %v", rec, err)
	}
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	complete(t, s, chk{id: 2, savepoint: true, private: map[string]string{"p": "2"}, reuse: []string{"a"}})
	complete(t, s, chk{id: 3, private: map[string]string{"p": "3"}, reuse: []string{"a"}})

	f.Inject(objstore.Fault{Op: objstore.OpPut, Key: "ckpt/wc/discarded", Nth: 1})
	if err := s.DiscardAll(); err == nil || !strings.Contains(err.Error(), "recording") {
		t.Fatalf("DiscardAll with the record failing = %v", err)
	}
	if id := latestID(t, open(t, mem, 1, 2, nil)); id != 3 {
		t.Fatalf("after a failed record, Latest = %d; want 3 untouched", id)
	}

	if err := s.DiscardAll(); err != nil {
		t.Fatalf("DiscardAll: %v", err)
	}
	r := open(t, mem, 1, 2, nil)
	rec, err := r.Discarded(ctxT(t))
	if err != nil || rec.Through != 3 || rec.Newest == nil || rec.Newest.CheckpointID != 3 ||
		len(rec.Newest.Operators) != 1 || rec.Newest.Operators[0].Subtasks[0].Keyed != nil ||
		string(rec.Newest.Operators[0].Subtasks[0].Operator.Inline) != "offsets" {
		t.Fatalf("Discarded = %+v, %v; want checkpoint 3's operator state only", rec, err)
	}
	if got := append(keys(t, mem, "ckpt/wc/data/chk-"), keys(t, mem, "ckpt/wc/shared/")...); len(got) != 0 {
		t.Fatalf("after DiscardAll: %v", got)
	}
	infos, err := r.List(ctxT(t))
	if err != nil || len(infos) != 1 || !infos[0].Savepoint || infos[0].ID != 2 {
		t.Fatalf("List after DiscardAll = %+v, %v; want savepoint 2 only", infos, err)
	}
	md := mustLatest(t, r)
	if got := restore(t, r, md); got["a"] != "A" || got["p"] != "2" {
		t.Fatalf("savepoint 2 restores %v", got)
	}
	// A second discard with nothing newer keeps the record.
	if err := r.DiscardAll(); err != nil {
		t.Fatal(err)
	}
	if rec, _ := r.Discarded(ctxT(t)); rec.Through != 3 || rec.Newest == nil {
		t.Fatalf("record after a second discard: %+v", rec)
	}
}

// Adopt makes an older savepoint or checkpoint the newest checkpoint: its
// private files copied, its shared ones referenced, RestoredFrom and the
// committed marker recorded; the copy outlives its original's removal.
func TestAdopt(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 2, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	complete(t, s, chk{id: 2, savepoint: true, private: map[string]string{"p": "sp"}, reuse: []string{"a"}})
	complete(t, s, chk{id: 3, private: map[string]string{"p": "3"}, reuse: []string{"a"}})
	if err := s.MarkCommitted(ctxT(t), 2); err != nil {
		t.Fatal(err)
	}
	sp, err := s.Load(ctxT(t), "savepoint-2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Adopt(ctxT(t), sp, 3); err == nil {
		t.Fatal("Adopt as id 3, not above the newest, succeeded")
	}
	md, err := s.Adopt(ctxT(t), sp, 4)
	if err != nil {
		t.Fatalf("Adopt: %v", err)
	}
	if md.CheckpointID != 4 || md.Savepoint || md.RestoredFrom != sp.Path || !md.Committed || !strings.HasSuffix(md.Path, "manifest/chk-4") {
		t.Fatalf("adopted %+v", md)
	}
	r := open(t, mem, 1, 2, nil)
	latest := mustLatest(t, r)
	if latest.CheckpointID != 4 || !latest.Committed || latest.RestoredFrom != sp.Path {
		t.Fatalf("Latest after Adopt = %+v", latest)
	}
	if got := restore(t, r, latest); got["p"] != "sp" || got["a"] != "A" {
		t.Fatalf("adopted checkpoint restores %v", got)
	}
	// Adopt checkpoint 3 (shared a referenced, not copied) as 5; then 3
	// and 4 are subsumed, and 5 still restores.
	c3, err := r.Load(ctxT(t), "chk-3")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Adopt(ctxT(t), c3, 5); err != nil {
		t.Fatalf("Adopt(chk-3): %v", err)
	}
	complete(t, r, chk{id: 6, private: map[string]string{"p": "6"}})
	infos, _ := r.List(ctxT(t))
	var ids []int64
	for _, in := range infos {
		ids = append(ids, in.ID)
	}
	if fmt.Sprint(ids) != "[2 5 6]" {
		t.Fatalf("after checkpoint 6, the storage holds %v; want [2 5 6]", ids)
	}
	c5, err := r.Load(ctxT(t), "chk-5")
	if err != nil {
		t.Fatalf("Load(chk-5) after its original went: %v", err)
	}
	if got := restore(t, r, c5); got["p"] != "3" || got["a"] != "A" {
		t.Fatalf("checkpoint 5 restores %v", got)
	}
}

// Two checkpoints in flight write a shared file of the same name; aborting
// one keeps the other's. Complete refuses metadata naming a missing file,
// a file of another size, a path outside the storage, and an id that is
// not newer than the newest.
func TestConcurrentCheckpointsShareFilesSafely(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 1, nil)
	put := func(id int64, name string) checkpoint.FileRef {
		w, err := s.Writer(id, "op", 0)
		if err != nil {
			t.Fatal(err)
		}
		f, err := w.Create(name, true)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(f, "same content")
		ref, err := f.Close()
		if err != nil {
			t.Fatalf("Close of %s for checkpoint %d: %v", name, id, err)
		}
		return ref
	}
	md := func(id int64, refs ...checkpoint.FileRef) *checkpoint.Metadata {
		return &checkpoint.Metadata{CheckpointID: id, Operators: []checkpoint.OperatorSnapshot{{UID: "op", Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "test", Files: refs}}}}}}
	}
	put(2, "x.sst")
	b := put(3, "x.sst")
	if err := s.Abort(2); err != nil {
		t.Fatal(err)
	}
	if err := s.Complete(ctxT(t), md(3, b)); err != nil {
		t.Fatalf("Complete(3) after Abort(2): %v", err)
	}
	for _, c := range []struct {
		md   *checkpoint.Metadata
		want string
	}{
		{md(4, checkpoint.FileRef{Path: "shared/nope.sst", Size: 3, Shared: true}), "nope.sst"},
		{md(5, checkpoint.FileRef{Path: b.Path, Size: b.Size + 1, CRC32C: b.CRC32C, Shared: true}), "bytes"},
		{md(6, checkpoint.FileRef{Path: "../other/x", Size: 1}), "../other/x"},
		{md(3, b), "not newer"},
	} {
		if err := s.Complete(ctxT(t), c.md); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Fatalf("Complete(%d) = %v; want an error saying %q", c.md.CheckpointID, err, c.want)
		}
	}
	r := open(t, mem, 1, 1, nil)
	if got := restore(t, r, mustLatest(t, r)); got["x.sst"] != "same content" {
		t.Fatalf("checkpoint 3 restores %v", got)
	}
}

// Inline files travel in the manifest and are checked on Open.
func TestInlineFilesRoundTripAndAreChecked(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 1, nil)
	data := []byte("tiny")
	in := checkpoint.FileRef{Path: "OPTIONS", Size: 4, CRC32C: crc32.Checksum(data, crc32.MakeTable(crc32.Castagnoli)), Inline: true, Data: data}
	empty := checkpoint.FileRef{Path: "EMPTY", Inline: true, Data: []byte{}}
	md := &checkpoint.Metadata{CheckpointID: 1, Operators: []checkpoint.OperatorSnapshot{{UID: "op", Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "pebble", Files: []checkpoint.FileRef{in, empty}}}}}}}
	if err := s.Complete(ctxT(t), md); err != nil {
		t.Fatal(err)
	}
	r := open(t, mem, 1, 1, nil)
	got := restore(t, r, mustLatest(t, r))
	if got["OPTIONS"] != "tiny" || got["EMPTY"] != "" || len(got) != 2 {
		t.Fatalf("inline files restore as %q", got)
	}
	bad := in
	bad.Data = []byte("tinY")
	if _, err := r.Open(bad); err == nil || !strings.Contains(err.Error(), "OPTIONS") {
		t.Fatalf("Open of a damaged inline file = %v", err)
	}
}

// Aborts racing with uploads (four subtasks writing private and shared
// files) leave no object of the aborted checkpoint behind, and the next
// checkpoint completes and restores.
func TestAbortRacingUploads(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 1, nil)
	for round := range 20 {
		id := int64(2*round + 1)
		var wg sync.WaitGroup
		for sub := range 4 {
			w, err := s.Writer(id, "op", sub)
			if err != nil {
				t.Fatal(err)
			}
			wg.Add(1)
			go func() {
				defer wg.Done()
				for i := range 5 {
					f, err := w.Create(fmt.Sprintf("f%d-%d", sub, i), i%2 == 0)
					if err != nil {
						return // aborted
					}
					io.WriteString(f, "data")
					if _, err := f.Close(); err != nil {
						return
					}
				}
			}()
		}
		if round%2 == 0 {
			runtime.Gosched() // let the uploads start before the abort
		}
		if err := s.Abort(id); err != nil {
			t.Fatalf("Abort(%d): %v", id, err)
		}
		wg.Wait()
		for _, prefix := range []string{fmt.Sprintf("ckpt/wc/data/chk-%d/", id), "ckpt/wc/shared/"} {
			for _, k := range keys(t, mem, prefix) {
				if strings.HasSuffix(k[:strings.LastIndexByte(k, '/')], fmt.Sprintf("-%d", id)) || strings.Contains(k, fmt.Sprintf("/chk-%d/", id)) {
					t.Fatalf("round %d: aborted checkpoint %d left %s", round, id, k)
				}
			}
		}
		complete(t, s, chk{id: id + 1, private: map[string]string{"p": fmt.Sprint(id + 1)}, shared: map[string]string{fmt.Sprintf("s%d", id+1): "S"}})
	}
	r := open(t, mem, 1, 1, nil)
	if got := restore(t, r, mustLatest(t, r)); got["p"] != "40" {
		t.Fatalf("restores %v", got)
	}
}

// A savepoint whose completion failed after its copies were made leaves
// nothing once aborted; a completed one leaves only its own objects.
func TestSavepointObjectsAfterFailureAndSuccess(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	f := objstore.NewFaulty(mem)
	s := open(t, f, 1, 1, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A"}})
	md := write(t, s, chk{id: 2, savepoint: true, private: map[string]string{"p": "sp"}, shared: map[string]string{"b": "B"}, reuse: []string{"a"}})
	f.Inject(objstore.Fault{Op: objstore.OpPut, Key: "ckpt/wc/manifest/savepoint-2", Nth: 1})
	if err := s.Complete(ctxT(t), md); err == nil {
		t.Fatal("Complete with the manifest put failing succeeded")
	}
	if err := s.Abort(2); err != nil {
		t.Fatalf("Abort: %v", err)
	}
	for _, prefix := range []string{"ckpt/wc/data/savepoint-2/", "ckpt/wc/data/chk-2/", "ckpt/wc/shared/e"} {
		for _, k := range keys(t, mem, prefix) {
			if strings.Contains(k, "savepoint-2") || strings.Contains(k, "chk-2") || strings.Contains(k, "-2/") {
				t.Fatalf("the failed savepoint left %s", k)
			}
		}
	}
	complete(t, s, chk{id: 3, savepoint: true, private: map[string]string{"p": "sp3"}, shared: map[string]string{"c": "C"}, reuse: []string{"a"}})
	for _, k := range append(keys(t, mem, "ckpt/wc/data/chk-3/"), keys(t, mem, "ckpt/wc/shared/")...) {
		if strings.Contains(k, "-3/") || strings.Contains(k, "chk-3") {
			t.Fatalf("savepoint 3's originals stay: %s", k)
		}
	}
	r := open(t, mem, 1, 1, nil)
	if got := restore(t, r, mustLatest(t, r)); got["p"] != "sp3" || got["a"] != "A" || got["c"] != "C" {
		t.Fatalf("savepoint 3 restores %v", got)
	}
}

// A file larger than the spool threshold goes through a spool file, which
// Close and Abort remove; its reference and content are those of the
// bytes written.
func TestLargeFilesAreSpooled(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	spool := t.TempDir()
	s, err := s3store.New(ctxT(t), mem, s3store.Options{Prefix: "ckpt", Job: "wc", Epoch: 1, SpoolDir: spool, SpoolThreshold: 1000})
	if err != nil {
		t.Fatal(err)
	}
	w, err := s.Writer(1, "op", 0)
	if err != nil {
		t.Fatal(err)
	}
	big := bytes.Repeat([]byte("0123456789"), 1000)
	f, _ := w.Create("big.sst", true)
	for i := 0; i < len(big); i += 300 {
		if _, err := f.Write(big[i:min(i+300, len(big))]); err != nil {
			t.Fatal(err)
		}
	}
	if ents, _ := os.ReadDir(spool); len(ents) != 1 {
		t.Fatalf("spool dir holds %d files while writing; want 1", len(ents))
	}
	ref, err := f.Close()
	if err != nil {
		t.Fatal(err)
	}
	g, _ := w.Create("aborted", false)
	g.Write(big)
	g.Abort()
	if ents, _ := os.ReadDir(spool); len(ents) != 0 {
		t.Fatalf("spool files stay after Close and Abort: %v", ents)
	}
	if ref.Size != int64(len(big)) || ref.CRC32C != crc32.Checksum(big, crc32.MakeTable(crc32.Castagnoli)) {
		t.Fatalf("ref %+v", ref)
	}
	md := &checkpoint.Metadata{CheckpointID: 1, Operators: []checkpoint.OperatorSnapshot{{UID: "op", Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "pebble", Files: []checkpoint.FileRef{ref}}}}}}}
	if err := s.Complete(ctxT(t), md); err != nil {
		t.Fatal(err)
	}
	if got := restore(t, s, mustLatest(t, s)); got["big.sst"] != string(big) {
		t.Fatalf("restored %d bytes", len(got["big.sst"]))
	}
	// A savepoint copies it, and an Adopt of the savepoint copies the copy,
	// both through spool files.
	w, err = s.Writer(2, "op", 0)
	if err != nil {
		t.Fatal(err)
	}
	shared, ok := w.HasShared("big.sst")
	if !ok {
		t.Fatal("HasShared(big.sst) = false")
	}
	sp := &checkpoint.Metadata{CheckpointID: 2, Savepoint: true, Operators: []checkpoint.OperatorSnapshot{{UID: "op", Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "pebble", Files: []checkpoint.FileRef{shared}}}}}}}
	if err := s.Complete(ctxT(t), sp); err != nil {
		t.Fatal(err)
	}
	adopted, err := s.Adopt(ctxT(t), sp, 3)
	if err != nil {
		t.Fatal(err)
	}
	for _, md := range []*checkpoint.Metadata{sp, adopted} {
		if got := restore(t, s, md); got["big.sst"] != string(big) {
			t.Fatalf("%s restores %d bytes", md.Path, len(got["big.sst"]))
		}
	}
	if ents, _ := os.ReadDir(spool); len(ents) != 0 {
		t.Fatalf("spool files stay after the copies: %v", ents)
	}
}

// A read that fails (the store does not answer) is not damage: Latest
// fails instead of falling back to an older checkpoint, whose restore
// would replay what the newer one's transactions committed.
func TestLatestFailsOnAReadErrorRatherThanFallingBack(t *testing.T) {
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	s := open(t, mem, 1, 2, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}})
	md2 := complete(t, s, chk{id: 2, private: map[string]string{"p": "2"}})
	file := "ckpt/wc/" + md2.Operators[0].Subtasks[0].Keyed.Files[0].Path
	for _, key := range []string{"ckpt/wc/manifest/chk-2", file} {
		f := objstore.NewFaulty(mem)
		f.Inject(objstore.Fault{Op: objstore.OpGet, Key: key})
		r, err := s3store.New(ctxT(t), f, s3store.Options{Prefix: "ckpt", Job: "wc", Epoch: 1, Retained: 2})
		if err != nil {
			if strings.Contains(err.Error(), key) {
				continue // refusing to open is fine too
			}
			t.Fatalf("New with %s unreadable: %v", key, err)
		}
		md, infos, err := r.Latest(ctxT(t))
		if err == nil || !strings.Contains(err.Error(), key) {
			t.Fatalf("Latest with %s unreadable = checkpoint %v, %+v, %v; want an error naming it", key, md, infos, err)
		}
		if md != nil {
			t.Fatalf("Latest with %s unreadable returned checkpoint %d", key, md.CheckpointID)
		}
	}
}
