package integration

import (
	"context"
	"fmt"
	"io"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/onceflow/onceflow/internal/checkpoint"
	"github.com/onceflow/onceflow/internal/checkpoint/s3store"
	"github.com/onceflow/onceflow/internal/objstore"
	"github.com/onceflow/onceflow/internal/testkit/s3test"
)

// The built processor's savepoints prune on a job's S3 location
// (versitygw): --dry-run says what would go and deletes nothing; the
// prune removes the oldest savepoints beyond --keep, manifests and
// objects, keeps the newest restore point, and works at the epoch of
// the job's newest owner (a checkpoint of epoch 2 is there). savepoints
// list then shows the kept ones. No broker is needed.
func TestS3SavepointsPruneCommand(t *testing.T) {
	start := time.Now()
	ep := s3test.Bootstrap(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	prefix := strings.TrimSuffix(s3test.Prefix(t), "/")
	store, err := objstore.New(ctx, objstore.Options{Bucket: ep.Bucket, Endpoint: ep.URL, Region: ep.Region, PathStyle: true,
		AccessKeyID: ep.AccessKeyID, SecretAccessKey: ep.SecretAccessKey})
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	open := func(epoch int64) *s3store.Storage {
		st, err := s3store.New(ctx, store, s3store.Options{Prefix: prefix, Job: "spjob", Epoch: epoch})
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	put := func(st *s3store.Storage, id int64, savepoint bool) {
		w, err := st.Writer(id, "op", 0)
		if err != nil {
			t.Fatal(err)
		}
		fw, err := w.Create("state", false)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.WriteString(fw, fmt.Sprintf("state of %d", id)); err != nil {
			t.Fatal(err)
		}
		ref, err := fw.Close()
		if err != nil {
			t.Fatal(err)
		}
		md := &checkpoint.Metadata{CheckpointID: id, Savepoint: savepoint, Timestamp: time.Now(), Operators: []checkpoint.OperatorSnapshot{{UID: "op", Parallelism: 1,
			MaxParallelism: 128, Subtasks: []checkpoint.SubtaskSnapshot{{Keyed: &checkpoint.Handle{Backend: "test", Files: []checkpoint.FileRef{ref}}}}}}}
		if err := st.Complete(ctx, md); err != nil {
			t.Fatalf("Complete(%d): %v", id, err)
		}
	}
	old := open(1)
	put(old, 1, true)
	put(old, 2, false)
	put(old, 3, true)
	put(old, 4, true)
	owner := open(2)
	put(owner, 5, false)
	put(owner, 6, true)
	root := prefix + "/spjob/"
	stored := func() []string {
		infos, err := store.List(ctx, root)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, in := range infos {
			if i := strings.Index(in.Key, "savepoint-"); i >= 0 {
				name := in.Key[i:]
				names = append(names, name[:strings.IndexByte(name+"/", '/')])
			}
		}
		slices.Sort(names)
		return slices.Compact(names)
	}
	before := stored()
	env := []string{
		"ONCEFLOW_CHECKPOINT_S3_ENDPOINT=" + ep.URL,
		"ONCEFLOW_CHECKPOINT_S3_REGION=" + ep.Region,
		"ONCEFLOW_CHECKPOINT_S3_PATH_STYLE=true",
		"ONCEFLOW_CHECKPOINT_S3_ACCESS_KEY_ID=" + ep.AccessKeyID,
		"ONCEFLOW_CHECKPOINT_S3_SECRET_ACCESS_KEY=" + ep.SecretAccessKey,
	}
	loc := "s3://" + ep.Bucket + "/" + prefix + "/spjob"
	run := func(args ...string) string {
		t.Helper()
		c := startChild(t, env, args...)
		if !c.wait(time.Minute) || c.err != nil {
			t.Fatalf("processor %v: %v:\n%s", args, c.err, c.tail())
		}
		return c.output.String()
	}

	out := run("savepoints", "prune", "--keep", "2", "--dry-run", loc)
	if !strings.Contains(out, "would remove "+root+"manifest/savepoint-1 ") || !strings.Contains(out, "would remove "+root+"manifest/savepoint-3 ") || !strings.Contains(out, "would remove 2 savepoint(s)") {
		t.Fatalf("prune --dry-run printed:\n%s", out)
	}
	if got := stored(); !slices.Equal(got, before) {
		t.Fatalf("the dry run deleted: %v before, %v after", before, got)
	}
	out = run("savepoints", "prune", "--keep", "1", loc)
	if !strings.Contains(out, "removed "+root+"manifest/savepoint-3 ") || !strings.Contains(out, "removed 3 savepoint(s)") || !strings.Contains(out, "; 1 kept") {
		t.Fatalf("prune --keep 1 printed:\n%s", out)
	}
	if got := stored(); !slices.Equal(got, []string{"savepoint-6"}) {
		t.Fatalf("left %v; want savepoint 6's manifest and objects only", got)
	}
	out = run("savepoints", "list", loc)
	if lines := strings.Split(strings.TrimSpace(out), "\n"); len(lines) != 2 || !strings.HasPrefix(lines[1], "6 ") || !strings.Contains(lines[1], "newest restore point") {
		t.Fatalf("savepoints list after the prune printed:\n%s", out)
	}
	if md, _, err := open(2).Latest(ctx); err != nil || md == nil || md.CheckpointID != 6 {
		t.Fatalf("Latest after the prune = %+v, %v; want savepoint 6", md, err)
	}
	t.Logf("took %s", time.Since(start).Round(time.Millisecond))
}
