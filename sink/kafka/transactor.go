package kafka

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kadm"
	"github.com/twmb/franz-go/pkg/kgo"
	"github.com/twmb/franz-go/pkg/kmsg"
	"github.com/twmb/franz-go/pkg/kversion"

	"github.com/onceflow/onceflow/internal/outage"
	"github.com/onceflow/onceflow/twophase"
)

// TransactorOptions configure the exactly-once Transactor of one subtask.
type TransactorOptions struct {
	// ClientOpts connect to the cluster (seed brokers, TLS, SASL). The
	// Transactor adds the transactional settings itself. Its clients
	// retry after 100ms doubling to at most 1s, as Kafka's Java clients
	// do; a kgo.RetryBackoffFn here replaces that.
	ClientOpts []kgo.Opt
	// Topic is where records without a topic of their own go.
	Topic string
	// Prefix starts every transactional id of the job: ids are
	// <Prefix>-<subtask>-<slot>. Two jobs must never share a prefix.
	Prefix string
	// Slots is how many transactional ids one subtask cycles through
	// (default MinSlots(1), 5; at least 2). A slot is busy from the
	// first record of a transaction until its commit is confirmed, and
	// then held until a checkpoint
	// taken after the commit completed (a restore from an earlier one
	// commits the transaction again). With c checkpoints in flight and
	// commits running beside the writing (twophase's AsyncCommit, one
	// batch at a time) a subtask needs MinSlots(c), 3c+2: the open transaction, c
	// pre-committed ones, c being committed and c+1 held ones. When all
	// are taken (after a restore that holds many recovered transactions,
	// or while commits lag) the pool grows, up to MaxSlots; the recovery
	// fences every id of the subtask, whatever its slot number.
	Slots int
	// MaxSlots bounds the pool's growth (default 4 × Slots, at least 16;
	// not below Slots).
	// Beyond it Begin fails and the job restarts: not a loss of data.
	MaxSlots int
	// Logger receives the pool's growth (nil: slog.Default()).
	Logger *slog.Logger
	// TransactionTimeout is sent to the broker with every producer id
	// (default DefaultTransactionTimeout).
	TransactionTimeout time.Duration
	// Outage is the job's cluster-outage tracker: every call to the
	// cluster waits through an outage for its tolerance (nil: a tracker
	// of the Transactor's own with outage.DefaultTolerance).
	Outage *outage.Tracker
	// MaxBufferedRecords is how many records a slot's client holds
	// unacknowledged before Write blocks (kgo.MaxBufferedRecords; default
	// DefaultMaxBufferedRecords). A kgo.MaxBufferedRecords in ClientOpts
	// overrides it.
	MaxBufferedRecords int
	// Compression is the codec of the slots' produced batches (default
	// DefaultCompression; see SinkOptions.Compression).
	Compression string
	// Linger is the slots' producer linger (default DefaultLinger; see
	// SinkOptions.Linger).
	Linger time.Duration
}

// slot is one transactional id and the client that owns it.
type slot struct {
	id     string
	client *kgo.Client
	// busy is set from Begin until the transaction is committed or aborted.
	busy bool
	// held is set from the commit until twophase releases the transaction:
	// the latest completed checkpoint may still hold it, and a restore
	// would commit it again with this producer id and epoch, which fails if
	// the id was fenced or reused in between.
	held bool
	// pid and epoch are the producer id and epoch when the transaction
	// began; pre-commit refuses a transaction whose producer changed.
	pid   int64
	epoch int16

	// guard is the running transaction's delivery timeout and the
	// promise of its records (with their first failure), started by Begin
	// and stopped by PreCommit, Abort and drop.
	guard *deliveryGuard

	// The order across transactions (see "Flushes at the barrier" in
	// doc.go). flushed is the running transaction's signal, made by
	// Begin and closed once its records are all on the broker, or it
	// ended without that (PreCommit, Abort, drop). after is the previous
	// transaction's signal while it may still be open; queue holds the
	// records written meanwhile, produced (in order) once after closed.
	// after and queue belong to whichever goroutine runs the
	// transaction's calls: the subtask's Write, then PreCommit.
	flushed *flushSignal
	after   *flushSignal
	queue   []*kgo.Record
}

// flushSignal is closed once, when a transaction's records are all on the
// broker or it ended.
type flushSignal struct {
	ch   chan struct{}
	once sync.Once
}

func newFlushSignal() *flushSignal { return &flushSignal{ch: make(chan struct{})} }

func (f *flushSignal) close() { f.once.Do(func() { close(f.ch) }) }

func (f *flushSignal) closed() bool {
	select {
	case <-f.ch:
		return true
	default:
		return false
	}
}

// newSlot returns the slot of transactional id id, whose records fail
// once none was delivered for tolerance.
func newSlot(id string, tolerance time.Duration) *slot {
	return &slot{id: id, guard: newDeliveryGuard(tolerance)}
}

// Transactor writes a subtask's records into Kafka transactions and commits
// them for twophase.Sink. Each transactional id has its own kgo client, and
// no client is ever created for an id whose pre-committed transaction is
// still to be committed (creating one would abort it). Commits of
// transactions it did not begin, and commits its own client could not
// confirm, go out as raw EndTxn requests through a separate client.
//
// Every call to the cluster rides out an outage (a broker restarting or
// unreachable, a leader or coordinator moving or loading) for the outage
// tracker's tolerance, retrying with backoff, and then returns the
// tracker's *outage.Error, an ordinary failure for the restart strategy.
// kgo retries produce requests by itself; the records' delivery timeout is
// the tolerance, and a flush that does not finish asks the cluster whether
// it answers, so that a pre-commit fails only once the outage outlasted
// the tolerance. A fenced producer, an invalid epoch or an unknown
// transaction is never retried: a commit refused so wraps
// twophase.ErrTransactionLost at once.
type Transactor struct {
	opts    TransactorOptions
	subtask int
	version int16
	outage  *outage.Tracker
	// side has no transactional id and no version cap: fencing, listing,
	// and raw EndTxn of transactions begun under transaction.version 2.
	side  *kgo.Client
	slots []*slot
	next  int
	// writing is the slot Write wrote to last: the slot of the open
	// transaction, found without a lock and a search per record. Only
	// the subtask's goroutine (Write) uses it; a slot, once made, keeps
	// its id.
	writing *slot

	// mu guards the slots' busy and held flags, clients, producer ids and
	// epochs where Commit (on twophase's committer goroutine) and the
	// subtask's calls can meet: Commit works on a slot of a pre-committed
	// transaction, the subtask on the slot of its open one and on Begin's
	// choice among the free ones. It also guards legacy.
	mu sync.Mutex
	// legacy sends EndTxn at v4 at most: raw commits of transactions
	// begun under transaction.version 0 or 1. Created on first use.
	legacy *kgo.Client
	// last is the signal of the transaction begun last (guarded by mu):
	// the next Begin orders its transaction after it.
	last *flushSignal
}

// NewTransactor checks opts (TransactorOptions.Validate: every refusal
// names the option), connects to the cluster and reads its transaction
// version. Close releases the clients.
func NewTransactor(ctx context.Context, subtask int, opts TransactorOptions) (*Transactor, error) {
	if err := opts.Validate(); err != nil {
		return nil, err
	}
	if opts.Slots == 0 {
		opts.Slots = MinSlots(1)
	}
	if opts.MaxSlots == 0 {
		opts.MaxSlots = max(4*opts.Slots, 16)
	}
	if opts.Logger == nil {
		opts.Logger = slog.Default()
	}
	if opts.TransactionTimeout == 0 {
		opts.TransactionTimeout = DefaultTransactionTimeout
	}
	if opts.MaxBufferedRecords == 0 {
		opts.MaxBufferedRecords = DefaultMaxBufferedRecords
	}
	if opts.Outage == nil {
		tr, err := outage.NewTracker(outage.Options{Logger: opts.Logger})
		if err != nil {
			return nil, fmt.Errorf("kafka sink: %w", err)
		}
		opts.Outage = tr
	}
	side, err := kgo.NewClient(append(outage.ClientOpts(), opts.ClientOpts...)...)
	if err != nil {
		return nil, fmt.Errorf("kafka sink: creating a client: %w", err)
	}
	var version int16
	err = opts.Outage.Do(ctx, "reading the cluster's transaction version", func(ctx context.Context) error {
		var err error
		version, err = TransactionVersion(ctx, side)
		return err
	})
	if err != nil {
		side.Close()
		return nil, fmt.Errorf("kafka sink: %w", err)
	}
	t := &Transactor{opts: opts, subtask: subtask, version: version, outage: opts.Outage, side: side}
	for i := range opts.Slots {
		t.slots = append(t.slots, newSlot(TransactionalID(opts.Prefix, subtask, i), opts.Outage.Tolerance()))
	}
	return t, nil
}

// TransactionalID returns the id of a subtask's slot.
func TransactionalID(prefix string, subtask, slot int) string {
	return fmt.Sprintf("%s-%d-%d", prefix, subtask, slot)
}

// parseTransactionalID splits an id made by TransactionalID.
func parseTransactionalID(prefix, id string) (subtask, slot int, ok bool) {
	rest, found := strings.CutPrefix(id, prefix+"-")
	if !found {
		return 0, 0, false
	}
	a, b, found := strings.Cut(rest, "-")
	if !found {
		return 0, 0, false
	}
	s, err1 := strconv.Atoi(a)
	n, err2 := strconv.Atoi(b)
	return s, n, err1 == nil && err2 == nil && s >= 0 && n >= 0
}

// capEndTxn caps EndTxn at v4, the last version with the semantics of
// transaction.version 0 and 1: the broker reads v5 and above as a
// version-2 end of transaction (KIP-890), which bumps the epoch, and
// Kafka 4.1 refuses to repeat at v5 the commit of a transaction begun and
// committed under version 0 (INVALID_TXN_STATE).
func capEndTxn() kgo.Opt {
	v := kversion.Stable()
	v.SetMaxKeyVersion(kmsg.EndTxn.Int16(), 4)
	return kgo.MaxVersions(v)
}

// Version is the cluster's transaction version seen at start: the version
// of every transaction this Transactor begins.
func (t *Transactor) Version() int16 { return t.version }

// endTxnClient returns the client that sends a raw EndTxn for a
// transaction begun under transaction version tv: the side client for 2,
// one capped at EndTxn v4 below, whatever the cluster runs now (it may
// have been upgraded since the transaction began).
func (t *Transactor) endTxnClient(tv int16) (*kgo.Client, error) {
	if tv >= 2 {
		return t.side, nil
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.legacy == nil {
		cl, err := kgo.NewClient(append(append(outage.ClientOpts(), t.opts.ClientOpts...), capEndTxn())...)
		if err != nil {
			return nil, fmt.Errorf("creating a client: %w", err)
		}
		t.legacy = cl
	}
	return t.legacy, nil
}

func (t *Transactor) find(id string) *slot {
	t.mu.Lock()
	defer t.mu.Unlock()
	for _, s := range t.slots {
		if s.id == id {
			return s
		}
	}
	return nil
}

// Begin takes the next free slot, creating its client if needed, and begins
// a transaction on it. All slots busy means checkpoints are not completing
// fast enough for the pool: an error, so that the job restarts instead of
// piling up open transactions.
//
// The next in turn, not the first free: with the default five slots an id
// then waits four transactions before it is used again, so a resume from
// the checkpoint before the newest one, when the newest is damaged and no
// entries say what was committed since, still commits its transactions
// (TestResumeFromBeforeTheNewestCommitsItsTransactions). The first free
// id would cycle through three ids and save 2-4% of the copy's CPU
// (franz-go's per-client buffers stay warm, copy-tuning/slot-ab), but it
// reuses an id while the checkpoint before the newest may still need it.
func (t *Transactor) Begin(ctx context.Context) (Txn, error) {
	var s *slot
	t.mu.Lock()
	for i := range t.slots {
		c := t.slots[(t.next+i)%len(t.slots)]
		if !c.busy && !c.held {
			s = c
			s.busy = true // reserved; drop frees it again on failure
			t.next = (t.next + i + 1) % len(t.slots)
			break
		}
	}
	grew := false
	if s == nil && len(t.slots) < t.opts.MaxSlots {
		s = t.grow(len(t.slots) + 1)
		s.busy = true
		grew = true
	}
	n := len(t.slots)
	t.mu.Unlock()
	if grew {
		t.opts.Logger.Info("kafka sink: every transactional id is in use; the pool grows", "subtask", t.subtask, "slots", n, "max", t.opts.MaxSlots)
	}
	if s == nil {
		return Txn{}, fmt.Errorf("kafka sink: all %d transactional ids of subtask %d hold transactions that the latest checkpoint still refers to; checkpoints are not completing fast enough for the pool (raise sink.slots)", n, t.subtask)
	}
	if err := t.outage.Do(ctx, "beginning a transaction on "+s.id, func(ctx context.Context) error { return t.begin(ctx, s) }); err != nil {
		t.drop(s)
		return Txn{}, fmt.Errorf("kafka sink: beginning a transaction on %s: %w", s.id, err)
	}
	t.mu.Lock()
	pid, epoch, cl := s.pid, s.epoch, s.client
	s.flushed, s.after = newFlushSignal(), nil
	if t.last != nil && !t.last.closed() {
		s.after = t.last
	}
	t.last = s.flushed
	t.mu.Unlock()
	s.guard.start(cl.BufferedProduceRecords)
	return Txn{TransactionalID: s.id, ProducerID: pid, ProducerEpoch: epoch, TransactionVersion: t.version}, nil
}

// begin begins a transaction on the free slot s, creating its client if
// needed, and loads its producer id. On failure the client is closed: s
// holds no pre-committed transaction, so a new client may be created for
// its id on the next try, and a client whose producer id load failed
// halfway is not worth reasoning about.
func (t *Transactor) begin(ctx context.Context, s *slot) error {
	t.mu.Lock()
	cl := s.client
	t.mu.Unlock()
	if cl == nil {
		var err error
		if cl, err = t.newClient(s); err != nil {
			return err
		}
		t.mu.Lock()
		s.client = cl
		t.mu.Unlock()
	}
	fail := func(err error) error {
		t.mu.Lock()
		if s.client == cl {
			s.client = nil
		}
		t.mu.Unlock()
		cl.Close()
		return err
	}
	if err := cl.BeginTransaction(); err != nil {
		return fail(err)
	}
	pid, epoch, err := cl.ProducerID(ctx)
	if err != nil {
		return fail(fmt.Errorf("loading the producer id: %w", err))
	}
	t.mu.Lock()
	s.pid, s.epoch = pid, epoch
	t.mu.Unlock()
	return nil
}

// newClient creates the transactional client of slot s.
func (t *Transactor) newClient(s *slot) (*kgo.Client, error) {
	opts := append(append(outage.ClientOpts(), producerOpts(t.opts.MaxBufferedRecords, t.opts.Compression, t.opts.Linger)...), t.opts.ClientOpts...)
	opts = append(opts,
		kgo.TransactionalID(s.id),
		kgo.TransactionTimeout(t.opts.TransactionTimeout),
	)
	opts = append(opts, rideOutProduce()...)
	if t.opts.Topic != "" {
		opts = append(opts, kgo.DefaultProduceTopic(t.opts.Topic))
	}
	if t.version < 2 {
		opts = append(opts, capEndTxn())
	}
	cl, err := kgo.NewClient(opts...)
	if err != nil {
		return nil, fmt.Errorf("kafka sink: creating the client of %s: %w", s.id, err)
	}
	return cl, nil
}

// grow adds slots up to n in all (t.mu held) and returns the last one.
func (t *Transactor) grow(n int) *slot {
	for len(t.slots) < n {
		t.slots = append(t.slots, newSlot(TransactionalID(t.opts.Prefix, t.subtask, len(t.slots)), t.outage.Tolerance()))
	}
	return t.slots[n-1]
}

// drop closes a slot's client; the next Begin on the slot creates a new
// one, whose producer id initialisation fences and aborts whatever the old
// one left open.
func (t *Transactor) drop(s *slot) {
	s.guard.stop()
	s.end()
	t.mu.Lock()
	cl := s.client
	s.client, s.busy = nil, false
	t.mu.Unlock()
	if cl != nil {
		cl.Close()
	}
}

// Write produces rec inside txn. Produce results arrive asynchronously; the
// first failure is kept and fails the pre-commit. Write takes rec: once its
// produce completed, written or failed, the Transactor calls rec.Recycle,
// which gives a record fetched into pooled memory
// (sourcekafka.ReaderOptions.PoolBytes) back to its pool and does nothing to
// any other record.
func (t *Transactor) Write(ctx context.Context, txn Txn, rec *kgo.Record) error {
	s := t.writing
	if s == nil || s.id != txn.TransactionalID {
		s = t.find(txn.TransactionalID)
		t.writing = s
	}
	if s == nil || !s.busy || s.client == nil {
		return fmt.Errorf("kafka sink: write into %s, which has no running transaction", txn)
	}
	if s.after != nil {
		passed, err := t.pass(ctx, s, len(s.queue) >= t.opts.MaxBufferedRecords)
		if err != nil {
			return fmt.Errorf("kafka sink: write into %s: %w", txn, err)
		}
		if !passed {
			s.queue = append(s.queue, rec)
			return nil
		}
	}
	s.client.Produce(s.guard.produceCtx(ctx), rec, s.guard.promise)
	return nil
}

// pass produces s's queued records once the previous transaction's
// records are all on the broker (s.after closed), and reports whether
// they were; with wait it waits for that, until ctx ends.
func (t *Transactor) pass(ctx context.Context, s *slot, wait bool) (bool, error) {
	if !s.after.closed() {
		if !wait {
			return false, nil
		}
		select {
		case <-s.after.ch:
		case <-ctx.Done():
			return false, fmt.Errorf("waiting for the previous transaction's flush: %w", context.Cause(ctx))
		}
	}
	s.after = nil
	if len(s.queue) > 0 {
		pctx := s.guard.produceCtx(ctx)
		for _, r := range s.queue {
			s.client.Produce(pctx, r, s.guard.promise)
		}
		clear(s.queue)
		s.queue = s.queue[:0]
	}
	return true, nil
}

// end ends s's place in the order of transactions: its successor need
// not wait for it any more, and the records it still queued, never
// produced, are recycled.
func (s *slot) end() {
	if s.flushed != nil {
		s.flushed.close()
	}
	s.after = nil
	for _, r := range s.queue {
		r.Recycle()
	}
	clear(s.queue)
	s.queue = s.queue[:0]
}

// PreCommit flushes the transaction and checks that every record was
// written and that the producer id and epoch did not change under it (a
// failed produce can make kgo re-initialise the producer, which aborts the
// transaction). The returned Txn is what the checkpoint records. The flush
// waits through an outage for the tracker's tolerance (see flush), then
// fails, leaving the transaction to be aborted.
func (t *Transactor) PreCommit(ctx context.Context, txn Txn) (Txn, error) {
	s := t.find(txn.TransactionalID)
	if s == nil || !s.busy || s.client == nil {
		return Txn{}, fmt.Errorf("kafka sink: pre-commit of %s, which has no running transaction", txn)
	}
	defer s.end() // after the flush: the next transaction's records may go
	if s.after != nil {
		if _, err := t.pass(ctx, s, true); err != nil {
			s.guard.stop()
			return Txn{}, fmt.Errorf("kafka sink: pre-commit of %s: %w", txn, err)
		}
	}
	err := flush(ctx, s.client, t.outage, "flushing "+txn.String())
	s.guard.stop() // nothing more is produced in txn
	if err != nil {
		return Txn{}, fmt.Errorf("kafka sink: %w", err)
	}
	if perr := s.guard.failed(); perr != nil {
		return Txn{}, fmt.Errorf("kafka sink: transaction %s: %w", txn, perr)
	}
	t.outage.Succeeded() // every record reached the cluster
	pid, epoch, err := s.client.ProducerID(ctx)
	if err != nil {
		return Txn{}, fmt.Errorf("kafka sink: producer id of %s after flush: %w", txn, err)
	}
	if pid != s.pid || epoch != s.epoch {
		return Txn{}, fmt.Errorf("kafka sink: the producer of %s changed to (%d, %d) during the transaction; its records were aborted", txn, pid, epoch)
	}
	return txn, nil
}

// Commit commits a pre-committed transaction. Under transaction version 2
// the slot's own client commits the transactions it began; when that
// fails, for a transaction of an earlier process, and for every
// transaction of versions 0 and 1, a raw EndTxn goes out through the side
// client, riding out an outage for the tracker's tolerance. Commit may be
// called more than once for the same transaction and succeeds each time
// (until the id is used for a later transaction). A commit refused as
// fenced, for an invalid epoch or an unknown transaction wraps
// twophase.ErrTransactionLost and is not retried.
//
// Why versions 0 and 1 never commit through the own client: kgo ends a
// transaction without sending EndTxn when it believes no partition was
// added to it, and with AddPartitionsToTxn (brokers without KIP-890) that
// bookkeeping lost a partition under load: EndTransaction returned nil
// for a flushed transaction with records, which stayed open until the
// next client of the id aborted it (seen on kfake, 1 run in about 80 of
// TestSinkInAJobThatFailsOnce/exactly_once-tv1). Under those versions the
// slot's client is recreated before its id is reused anyway, so it is
// closed here instead, which leaves the transaction as it is.
//
// Commit may run concurrently with the other methods (twophase's
// AsyncCommit), for a transaction other than the open one.
func (t *Transactor) Commit(ctx context.Context, txn Txn) error {
	s := t.find(txn.TransactionalID)
	var own *kgo.Client
	t.mu.Lock()
	if s != nil && s.busy && s.client != nil && s.pid == txn.ProducerID && s.epoch == txn.ProducerEpoch {
		own = s.client
		if txn.TransactionVersion < 2 {
			s.client = nil
		}
	}
	t.mu.Unlock()
	if own != nil && txn.TransactionVersion < 2 {
		own.Close() // like a crash: the transaction stays as it is
		own = nil
	}
	if own != nil {
		err := own.EndTransaction(ctx, kgo.TryCommit)
		if err == nil {
			t.release(s, txn)
			return nil
		}
		// Never retry through this client: after an unconfirmed EndTxn it
		// would re-initialise its producer id, aborting the transaction.
		t.mu.Lock()
		if s.client == own {
			s.client = nil
		}
		t.mu.Unlock()
		own.Close()
	}
	cl, err := t.endTxnClient(txn.TransactionVersion)
	if err != nil {
		return fmt.Errorf("kafka sink: committing %s: %w", txn, err)
	}
	if err := endTxn(ctx, cl, t.outage, txn, true); err != nil {
		return fmt.Errorf("kafka sink: %w", err)
	}
	if s != nil {
		t.release(s, txn)
	}
	return nil
}

// release marks the slot of a committed transaction held until Release
// (when the slot still runs that transaction).
func (t *Transactor) release(s *slot, txn Txn) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if s.busy && s.pid == txn.ProducerID {
		s.busy, s.held = false, true
	}
}

// Release frees the slot of a committed transaction that no completed
// checkpoint holds any more (twophase.Releaser). Under transaction version
// 1 the producer epoch does not change between transactions, so the (id,
// producer id, epoch) of the committed transaction would also name the
// next one: the client is recreated, which bumps the epoch.
func (t *Transactor) Release(txn Txn) {
	s := t.find(txn.TransactionalID)
	if s == nil {
		return
	}
	t.mu.Lock()
	if !s.held {
		t.mu.Unlock()
		return
	}
	var cl *kgo.Client
	if t.version < 2 {
		cl, s.client = s.client, nil
	}
	s.held = false
	t.mu.Unlock()
	if cl != nil {
		cl.Close()
	}
}

// Abort aborts a transaction that was not pre-committed. While the
// cluster is away (the outage tracker says so) it only closes the slot's
// client, like a crash, instead of waiting for produce requests that
// cannot be answered: the next restore's fencing aborts the transaction.
func (t *Transactor) Abort(ctx context.Context, txn Txn) error {
	s := t.find(txn.TransactionalID)
	if s == nil || s.client == nil {
		return nil
	}
	defer t.drop(s)
	if st := t.outage.Status(); st.Down {
		t.opts.Logger.Warn("kafka sink: the cluster is away; the open transaction is left for the next restore to abort",
			"txn", txn.String(), "outage", st.For.Round(time.Millisecond))
		return nil
	}
	if err := s.client.AbortBufferedRecords(ctx); err != nil {
		return fmt.Errorf("kafka sink: aborting buffered records of %s: %w", txn, err)
	}
	if err := s.client.EndTransaction(ctx, kgo.TryAbort); err != nil {
		return fmt.Errorf("kafka sink: aborting %s: %w", txn, err)
	}
	return nil
}

// AbortLingering fences every transactional id this subtask may own: its
// own slots and, found by listing the cluster's transactions, ids of the
// prefix left by subtasks that no longer exist (after a rescale) and
// assigned to this subtask by subtask % parallelism. Fencing bumps the
// epoch, which aborts any open transaction of the id. The ids of keep,
// just committed by recovery, are not fenced but held: the restored
// checkpoint still holds their transactions, and committing them again
// after another crash must succeed. No later transaction can be open on
// them, because an id is only reused after its release.
//
// The recovery is on the path of every start and every takeover of a
// partition group, so its round trips run side by side: each free slot
// is fenced by creating its own client and initialising its producer id
// (the InitProducerID that fences), all slots at once and beside the
// listing, and the client is kept for the slot's first transaction,
// which so does not wait for that round trip again (one broker
// connection serves one request at a time: the slots' own connections
// are what lets the fences run at once). The other ids found by the
// listing are fenced through the side client. Every fence and the
// listing ride out an outage for the tracker's tolerance; a fence that
// fails then, or for good, fails AbortLingering, naming the id (the
// clients created so far are released by Close).
func (t *Transactor) AbortLingering(ctx context.Context, scope twophase.Scope, keep []Txn) error {
	for _, s := range t.slots {
		if s.client != nil || s.busy {
			return fmt.Errorf("kafka sink: AbortLingering after %s was used", s.id)
		}
	}
	for _, k := range keep {
		// A kept id of this subtask beyond the pool (an earlier run had a
		// bigger one) joins it, held, so that growth never reuses it early.
		if sub, n, ok := parseTransactionalID(t.opts.Prefix, k.TransactionalID); ok && sub == t.subtask && n >= len(t.slots) {
			t.mu.Lock()
			t.grow(n + 1)
			t.mu.Unlock()
		}
		if s := t.find(k.TransactionalID); s != nil {
			s.held = true
		}
	}
	kept := func(id string) bool {
		return slices.ContainsFunc(keep, func(k Txn) bool { return k.TransactionalID == id })
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		mu      sync.Mutex
		first   error
		fenced  int
		listing time.Duration
		wg      sync.WaitGroup
	)
	done := func(err error) {
		mu.Lock()
		defer mu.Unlock()
		if err == nil {
			fenced++
			return
		}
		if first == nil {
			first = err
			cancel()
		}
	}
	start := time.Now()
	t.mu.Lock()
	own := make(map[string]bool, len(t.slots))
	var free []*slot
	for _, s := range t.slots {
		own[s.id] = true
		if !s.held {
			free = append(free, s)
		}
	}
	t.mu.Unlock()
	for _, s := range free {
		wg.Go(func() { done(t.fenceSlot(ctx, s)) })
	}
	wg.Go(func() {
		var listed kadm.ListedTransactions
		err := t.outage.Do(ctx, "listing transactions", func(ctx context.Context) error {
			var err error
			listed, err = kadm.NewClient(t.side).ListTransactions(ctx, nil, nil)
			return err
		})
		mu.Lock()
		listing = time.Since(start)
		mu.Unlock()
		if err != nil {
			done(fmt.Errorf("kafka sink: listing transactions to find ids of prefix %s: %w", t.opts.Prefix, err))
			return
		}
		var others []string
		for id := range listed {
			sub, _, ok := parseTransactionalID(t.opts.Prefix, id)
			if ok && !own[id] && !kept(id) && sub%scope.Parallelism == scope.Subtask && (sub >= scope.Parallelism || sub == scope.Subtask) {
				others = append(others, id)
			}
		}
		slices.Sort(others)
		for _, id := range others { // one connection: one request at a time anyway
			if err := fence(ctx, t.side, t.outage, id, t.opts.TransactionTimeout); err != nil {
				done(fmt.Errorf("kafka sink: %w", err))
				return
			}
			done(nil)
		}
	})
	wg.Wait()
	if first != nil {
		return first
	}
	t.opts.Logger.Debug("kafka sink: lingering transactions aborted", "prefix", t.opts.Prefix, "subtask", t.subtask,
		"fenced", fenced, "kept", len(keep), "listing", listing.Round(time.Millisecond), "took", time.Since(start).Round(time.Millisecond))
	return nil
}

// fenceSlot fences the id of the free slot s by initialising the
// producer id of a new client of it, and keeps that client for the
// slot's first transaction. CONCURRENT_TRANSACTIONS (the coordinator
// still aborting what the id left open) is repeated by the client for up
// to concurrentWait, then handed to the outage tracker like any error of
// a cluster in trouble; a client whose initialisation failed is closed
// and the next try makes a new one.
func (t *Transactor) fenceSlot(ctx context.Context, s *slot) error {
	what := "fencing transactional id " + s.id
	var cl *kgo.Client
	err := t.outage.Do(ctx, what, func(ctx context.Context) error {
		c, err := t.newClient(s)
		if err != nil {
			return err
		}
		ictx, cancel := context.WithTimeout(ctx, concurrentWait)
		defer cancel()
		if _, _, err := c.ProducerID(ictx); err != nil {
			c.Close()
			return fmt.Errorf("%s: initialising its producer id: %w", what, err)
		}
		cl = c
		return nil
	})
	if err != nil {
		return fmt.Errorf("kafka sink: %w", err)
	}
	t.mu.Lock()
	s.client = cl
	t.mu.Unlock()
	return nil
}

// Close closes every client without ending their transactions: an open
// transaction stays for recovery (or the broker's timeout) to end.
func (t *Transactor) Close() {
	for _, s := range t.slots {
		s.guard.stop()
		if s.client != nil {
			s.client.Close()
			s.client = nil
		}
	}
	t.side.Close()
	t.mu.Lock()
	if t.legacy != nil {
		t.legacy.Close()
		t.legacy = nil
	}
	t.mu.Unlock()
}
