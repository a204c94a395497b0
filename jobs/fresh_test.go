package jobs

import (
	"context"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kgo"

	"github.com/onceflow/onceflow/internal/logbuf"
	"github.com/onceflow/onceflow/internal/objstore"
	"github.com/onceflow/onceflow/internal/testkit/s3test"
)

// storedKeys lists the keys under prefix, relative to it.
func storedKeys(t *testing.T, ctx context.Context, st objstore.Store, prefix string) []string {
	t.Helper()
	infos, err := st.List(ctx, prefix)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, in := range infos {
		out = append(out, strings.TrimPrefix(in.Key, prefix))
	}
	return out
}

// --fresh with S3 checkpoints, on the real S3 server: every object of the
// job moves to <prefix>/<job>.set-aside-<time>/, the log names the
// checkpoints set aside, and the new run starts over: its first
// checkpoint (here its stop's savepoint) is id 1, and it copies every
// input record again.
func TestFreshSetsS3CheckpointsAsideAndStartsOver(t *testing.T) {
	if testing.Short() {
		t.Skip("needs an S3 service")
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	ep := s3test.Bootstrap(t)
	prefix := strings.TrimSuffix(s3test.Prefix(t), "/")
	// With an hour between checkpoints the stops' savepoints are the only
	// checkpoints: run n's savepoint has id n.
	client := fakeCluster(t, kfake.BrokerConfigs(map[string]string{"transaction.max.timeout.ms": strconv.Itoa(int(4 * time.Hour / time.Millisecond))}))
	cfg := testConfig(t, t.TempDir(), "copy", "state.backend=memory", "checkpoint.interval=1h", "sink.transaction_timeout=3h",
		"checkpoint.dir=s3://"+ep.Bucket+"/"+prefix,
		"checkpoint.s3.endpoint="+ep.URL, "checkpoint.s3.region="+ep.Region, "checkpoint.s3.path_style=true",
		"checkpoint.s3.access_key_id="+ep.AccessKeyID, "checkpoint.s3.secret_access_key="+ep.SecretAccessKey)
	store, err := OpenObjectStore(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	root := prefix + "/" + cfg.Job.Name + "/"
	produce := func(from, to int) {
		var recs []*kgo.Record
		for i := from; i < to; i++ {
			recs = append(recs, &kgo.Record{Value: []byte("v" + strconv.Itoa(i))})
		}
		produceRecords(t, ctx, client, recs...)
	}
	// run builds the job, runs it until it read n records, stops it with
	// a savepoint and returns the committed output and the ids of the
	// run's checkpoints.
	run := func(env Env, n int64) ([]*kgo.Record, []int64) {
		t.Helper()
		env.ClientOpts = client
		b, err := Build(ctx, cfg, env)
		if err != nil {
			t.Fatal(err)
		}
		out := runThenStop(t, ctx, b, client, strconv.FormatInt(n, 10)+" records read", func() bool { return b.Stats().RecordsRead >= n })
		var ids []int64
		for _, cs := range b.Job.Status().Checkpoints {
			ids = append(ids, cs.ID)
		}
		return out, ids
	}

	// A plain run, then a resumed one: savepoints 1 and 2.
	produce(0, 10)
	if out, ids := run(Env{}, 10); len(out) != 10 || !slices.Equal(ids, []int64{1}) {
		t.Fatalf("first run: %d records committed, checkpoints %v; want 10 and [1]", len(out), ids)
	}
	produce(10, 15)
	if out, ids := run(Env{}, 5); len(out) != 15 || !slices.Equal(ids, []int64{2}) {
		t.Fatalf("resumed run: %d records committed, checkpoints %v; want 15 and [2]", len(out), ids)
	}
	before := storedKeys(t, ctx, store, root)
	if !slices.Contains(before, "manifest/savepoint-2") {
		t.Fatalf("the job's objects before --fresh are %v, without manifest/savepoint-2", before)
	}

	produce(15, 20)
	logs := &logbuf.Buffer{}
	env := Env{Fresh: true, Logger: slog.New(slog.NewTextHandler(logs, nil))}
	out, ids := run(env, 20)

	asides := storedKeys(t, ctx, store, prefix+"/"+cfg.Job.Name+".set-aside-")
	if len(asides) == 0 {
		t.Fatal("nothing under the set-aside prefix")
	}
	aside, _, _ := strings.Cut(asides[0], "/")
	asideRoot := prefix + "/" + cfg.Job.Name + ".set-aside-" + aside + "/"
	if got := storedKeys(t, ctx, store, asideRoot); !slices.Equal(got, before) {
		t.Fatalf("set aside under %s: %v; want the job's objects %v", asideRoot, got, before)
	}
	if len(asides) != len(before) {
		t.Fatalf("the set-aside prefix holds %d objects, want %d (one set-aside root)", len(asides), len(before))
	}
	l := logs.String()
	for _, want := range []string{"fresh start", "savepoint-1", "savepoint-2", "s3://" + ep.Bucket + "/" + asideRoot[:len(asideRoot)-1]} {
		if !strings.Contains(l, want) {
			t.Fatalf("the log does not say %q:\n%s", want, l)
		}
	}
	// The new run started over: checkpoint ids from 1, every input copied
	// again (the old output stays, as with a directory).
	if !slices.Equal(ids, []int64{1}) {
		t.Fatalf("the fresh run's checkpoints are %v, want [1]", ids)
	}
	if len(out) != 35 {
		t.Fatalf("after --fresh the output has %d records, want 35 (the 15 of before and all 20 again)", len(out))
	}
	if got := storedKeys(t, ctx, store, root); !slices.Contains(got, "manifest/savepoint-1") || slices.Contains(got, "manifest/savepoint-2") {
		t.Fatalf("the job's objects after the fresh run are %v; want its savepoint-1 and nothing of before", got)
	}
}
