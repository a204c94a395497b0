package objstore_test

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/objstore"
	"github.com/onceflow/onceflow/internal/objstore/objstoretest"
)

func TestMemoryConformance(t *testing.T) {
	objstoretest.Run(t, objstoretest.Suite{
		New:          func(*testing.T) objstore.Store { return objstore.NewMemory(objstore.MemoryOptions{}) },
		AtomicCreate: true,
	})
}

// The memory store refuses keys file-backed servers refuse (the suite
// also accepts AWS S3's storing them), stamps LastModified with its clock
// and names itself in errors.
func TestMemoryStrictness(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	m := objstore.NewMemory(objstore.MemoryOptions{Name: "unit", Now: func() time.Time { return now }})
	ctx := context.Background()
	if _, err := m.Put(ctx, "chk-1/_metadata", strings.NewReader("m"), objstore.PutOptions{}); err != nil {
		t.Fatal(err)
	}
	for _, key := range []string{"chk-1", "chk-1/_metadata/x"} {
		_, err := m.Put(ctx, key, strings.NewReader("x"), objstore.PutOptions{})
		if !errors.Is(err, objstore.ErrKeyConflict) || !strings.Contains(err.Error(), "mem://unit/"+key) {
			t.Fatalf("put %s beside chk-1/_metadata: %v; want ErrKeyConflict naming mem://unit/%s", key, err, key)
		}
	}
	info, err := m.Stat(ctx, "chk-1/_metadata")
	if err != nil || !info.LastModified.Equal(now) {
		t.Fatalf("stat: %+v %v; want LastModified %s", info, err, now)
	}
	// Deleting the object frees its directory for an object of that name.
	if err := m.Delete(ctx, "chk-1/_metadata"); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Put(ctx, "chk-1", strings.NewReader("x"), objstore.PutOptions{IfNoneMatch: true}); err != nil {
		t.Fatalf("put chk-1 once chk-1/_metadata is gone: %v", err)
	}
}

func TestValidateKey(t *testing.T) {
	for _, k := range []string{"a", "job/pg-3/chk-12/_metadata", "shared/000123.sst", "a-b.c_d~e", "ünïcode/键"} {
		if err := objstore.ValidateKey(k); err != nil {
			t.Errorf("ValidateKey(%q): %v", k, err)
		}
	}
	for _, k := range []string{"", "/a", "a/", "a//b", "./a", "a/./b", "a/..", "tab\tkey", "del\x7f", "\xff\xfe", strings.Repeat("k", 1025)} {
		if err := objstore.ValidateKey(k); err == nil {
			t.Errorf("ValidateKey(%q) accepted it", k)
		}
	}
}

// Faulty fails the Nth call of a kind (or every one), before the call or
// after it took effect, and counts calls.
func TestFaulty(t *testing.T) {
	ctx := context.Background()
	mem := objstore.NewMemory(objstore.MemoryOptions{})
	f := objstore.NewFaulty(mem)
	boom := errors.New("boom")
	f.Inject(objstore.Fault{Op: objstore.OpPut, Nth: 2, Err: boom})
	f.Inject(objstore.Fault{Op: objstore.OpPut, Key: "lost", Applied: true})

	put := func(key string) error {
		_, err := f.Put(ctx, key, strings.NewReader(key), objstore.PutOptions{IfNoneMatch: true})
		return err
	}
	if err := put("a"); err != nil {
		t.Fatalf("put 1: %v", err)
	}
	if err := put("b"); !errors.Is(err, boom) || !strings.Contains(err.Error(), "put b") {
		t.Fatalf("put 2: %v; want the injected boom naming the key", err)
	}
	if _, err := mem.Stat(ctx, "b"); !errors.Is(err, objstore.ErrNotFound) {
		t.Fatalf("the failed put 2 reached the store: %v", err)
	}
	if err := put("b"); err != nil {
		t.Fatalf("put 3 (the Nth fault is spent): %v", err)
	}
	for i := range 2 { // every put of "lost" takes effect and then fails
		err := put("lost")
		if !errors.Is(err, objstore.ErrInjected) {
			t.Fatalf("put %d of lost: %v; want ErrInjected", i+1, err)
		}
	}
	if _, err := mem.Stat(ctx, "lost"); err != nil {
		t.Fatalf("the applied fault did not apply the put: %v", err)
	}
	if n := f.Calls(objstore.OpPut); n != 5 {
		t.Fatalf("Calls(put) = %d, want 5", n)
	}
	f.Clear()
	if _, err := f.Put(ctx, "lost", strings.NewReader("x"), objstore.PutOptions{}); err != nil {
		t.Fatalf("put after Clear: %v", err)
	}
	f.Inject(objstore.Fault{Op: objstore.OpList, Nth: 1})
	if _, err := f.List(ctx, "p/"); !errors.Is(err, objstore.ErrInjected) {
		t.Fatalf("list: %v; want ErrInjected", err)
	}
	if infos, err := f.List(ctx, ""); err != nil || len(infos) != 3 {
		t.Fatalf("list after the fault: %v %v", infos, err)
	}
}

// A Faulty store without faults is the store it wraps.
func TestFaultyConformance(t *testing.T) {
	objstoretest.Run(t, objstoretest.Suite{
		New: func(*testing.T) objstore.Store {
			return objstore.NewFaulty(objstore.NewMemory(objstore.MemoryOptions{}))
		},
		AtomicCreate: true,
	})
}
