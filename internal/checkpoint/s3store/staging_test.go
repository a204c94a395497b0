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

// Complete asks the store only about the objects it does not know are
// stored: those a writer of the checkpoint or a staging put, and shared
// objects a retained checkpoint names with the same size, cost no round
// trip, also after a restart. A shared object no retained checkpoint
// names, and one of another size, are asked about, and refused when
// missing or of another size.
func TestCompleteAsksOnlyAboutObjectsItDoesNotKnow(t *testing.T) {
	f := objstore.NewFaulty(objstore.NewMemory(objstore.MemoryOptions{}))
	s := open(t, f, 1, 1, nil)
	complete(t, s, chk{id: 1, private: map[string]string{"p": "1"}, shared: map[string]string{"a": "A", "b": "B"}})
	sg, err := s.Stage("op/1", 0)
	if err != nil {
		t.Fatal(err)
	}
	fw, err := sg.Create("m", true)
	if err != nil {
		t.Fatal(err)
	}
	io.WriteString(fw, "materialized")
	staged, err := fw.Close()
	if err != nil {
		t.Fatal(err)
	}
	stats := func(what string, md *checkpoint.Metadata, want int) {
		t.Helper()
		before := f.Calls(objstore.OpStat)
		if err := s.Complete(ctxT(t), md); err != nil {
			t.Fatalf("Complete(%d): %v", md.CheckpointID, err)
		}
		if n := f.Calls(objstore.OpStat) - before; n != want {
			t.Fatalf("%s: Complete(%d) asked the store about %d objects; want %d", what, md.CheckpointID, n, want)
		}
	}
	md := write(t, s, chk{id: 2, private: map[string]string{"p": "2"}, shared: map[string]string{"c": "C"}, reuse: []string{"a", "b"}})
	addRefs(md, staged)
	stats("its own, a staged and retained objects", md, 0)
	sg.Release()

	// After a restart the retained manifest read from the store vouches
	// for the objects it names.
	s = open(t, f, 2, 1, nil)
	md = write(t, s, chk{id: 3, private: map[string]string{"p": "3"}, reuse: []string{"a", "m"}})
	stats("after a restart", md, 0)

	// An object some other writer put is asked about; so is a known one
	// whose reference says another size, and the checkpoint is refused.
	other := checkpoint.FileRef{Path: "shared/elsewhere/x", Size: 5, Shared: true}
	if _, err := f.Put(ctxT(t), "ckpt/wc/"+other.Path, strings.NewReader("other"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	md = write(t, s, chk{id: 4, private: map[string]string{"p": "4"}, reuse: []string{"a"}})
	addRefs(md, other)
	stats("an object of another writer", md, 1)
	md = write(t, s, chk{id: 5, private: map[string]string{"p": "5"}, reuse: []string{"a"}})
	h := md.Operators[0].Subtasks[0].Keyed
	h.Files[len(h.Files)-1].Size++
	before := f.Calls(objstore.OpStat)
	if err := s.Complete(ctxT(t), md); err == nil || !strings.Contains(err.Error(), "bytes") {
		t.Fatalf("Complete naming a retained object with another size = %v; want it refused", err)
	}
	if n := f.Calls(objstore.OpStat) - before; n != 1 {
		t.Fatalf("the object of another size: %d Stats; want 1", n)
	}
}

// addRefs adds refs to md's keyed handle.
func addRefs(md *checkpoint.Metadata, refs ...checkpoint.FileRef) {
	h := md.Operators[0].Subtasks[0].Keyed
	h.Files = append(h.Files, refs...)
}
