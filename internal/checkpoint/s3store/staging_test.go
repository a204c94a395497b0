package s3store_test

import (
	"io"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/objstore"
)

// A staged object is not an orphan while its staging is held, however
// old; once released, an object no manifest names goes like any orphan,
// and one a checkpoint named stays with it. A crashed process's staging
// is gone with it.
func TestStagedObjectsAreKeptUntilReleased(t *testing.T) {
	clk := newClock()
	mem := objstore.NewMemory(objstore.MemoryOptions{Now: clk.Now})
	s := open(t, mem, 1, 1, clk)
	sg, err := s.Stage("op/1", 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := sg.Create("p", false); err == nil {
		t.Fatal("a staging created a private file")
	}
	stage := func(sg checkpoint.Staging, name string) checkpoint.FileRef {
		t.Helper()
		f, err := sg.Create(name, true)
		if err != nil {
			t.Fatal(err)
		}
		io.WriteString(f, "staged "+name)
		ref, err := f.Close()
		if err != nil {
			t.Fatal(err)
		}
		return ref
	}
	named, unnamed := stage(sg, "named"), stage(sg, "unnamed")
	clk.Advance(s3store.DefaultOrphanGrace + time.Second)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}})
	clk.Advance(s3store.DefaultOrphanGrace + time.Second)
	complete(t, s, chk{id: 2, private: map[string]string{"p": "2"}})
	if got := keys(t, mem, "ckpt/wc/shared/"); len(got) != 2 {
		t.Fatalf("staged objects while held: %v; want both", got)
	}
	md := write(t, s, chk{id: 3, private: map[string]string{"p": "3"}})
	h := md.Operators[0].Subtasks[0].Keyed
	h.Files = append(h.Files, named)
	if err := s.Complete(ctxT(t), md); err != nil {
		t.Fatal(err)
	}
	sg.Release()
	if _, err := sg.Create("late", true); err == nil || !strings.Contains(err.Error(), "staging of op/1/0 was released") {
		t.Fatalf("Create after Release: %v; want it refused naming the staging", err)
	}
	clk.Advance(s3store.DefaultOrphanGrace + time.Second)
	complete(t, s, chk{id: 4, private: map[string]string{"p": "4"}, reuse: []string{"named"}})
	got := keys(t, mem, "ckpt/wc/shared/")
	if len(got) != 1 || !strings.HasSuffix(got[0], "/named") {
		t.Fatalf("after the release: shared objects %v; want only %s (unnamed was %s)", got, named.Path, unnamed.Path)
	}

	// A crash: a new storage of a later epoch knows nothing of the
	// staging.
	sg, err = s.Stage("op/1", 0)
	if err != nil {
		t.Fatal(err)
	}
	stage(sg, "left")
	s2 := open(t, mem, 2, 1, clk)
	clk.Advance(s3store.DefaultOrphanGrace + time.Second)
	complete(t, s2, chk{id: 5, private: map[string]string{"p": "5"}})
	if got := keys(t, mem, "ckpt/wc/shared/"); len(got) != 0 {
		t.Fatalf("a crashed process's staged objects stay: %v", got)
	}
}
