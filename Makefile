# onceflow: the single entry point. `make test` and `make demo` work on a
# fresh machine with Go, Java 17 and Maven: they fetch what they need.
GO        ?= go
KAFKALOCAL = $(GO) run ./integration/cmd/kafkalocal
S3LOCAL    = $(GO) run ./integration/cmd/s3local
BROKER_ADDR_FILE ?= /tmp/onceflow-broker.addr

.PHONY: all deps fmt vet build test test-short bench bench-go bench-compare bench-copy bench-quick bench-distributed bench-windows bench-state pgo demo broker broker3 broker-stop s3 clean

all: vet build test

# Go modules, the Kafka broker's jars and the versitygw S3 server (built
# once from the Go module proxy, a few minutes on 2 cores; all cached in
# ~/.cache/onceflow or $ONCEFLOW_CACHE_DIR), and Debian's chromium for the
# web UI's browser test (installed with apt-get when missing).
deps:
	$(GO) mod download
	$(KAFKALOCAL) -fetch-only
	$(S3LOCAL) -build-only
	./scripts/install-chromium.sh

fmt:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt would change:"; echo "$$out"; exit 1; fi

vet:
	$(GO) vet ./...

build:
	$(GO) build -o bin/processor ./cmd/processor

# Every test, integration included: the tests start the local broker
# themselves (or use KAFKA_BOOTSTRAP).
test: deps fmt vet
	$(GO) test -race -count=1 -timeout 60m ./...

# Unit tests only (no broker).
test-short:
	$(GO) test -race -count=1 -short ./...

# Benchmarks: the Go micro-benchmarks, then the side-by-side comparison
# of onceflow with a plain franz-go pipe (the limit), franz-go
# transactions, Kafka Streams and Flink on one local broker
# (bench/cmd/compare; results in bench/results/). BENCH_FLAGS passes
# flags to the harness, e.g. BENCH_FLAGS='-records 500000'.
bench: bench-go bench-compare

bench-go: deps
	$(GO) test -run '^$$' -bench . -benchtime 1x ./...

bench-compare: deps
	$(GO) run ./bench/cmd/compare $(BENCH_FLAGS)

# The comparison on a small input (a few minutes), into bench/results/quick/.
bench-quick: deps
	$(GO) run ./bench/cmd/compare -quick $(BENCH_FLAGS)

# The copy (issue 19): the limit and its ceiling, franz-go's
# transactional copier (also placing and stamping records as onceflow's
# copy does: txn-keep) and onceflow at 50 ms, 100 ms and 1 s checkpoints,
# throughput of a 10M-record backlog (1.1 GB: 7-9 s of copying, so that
# a run at 1 s spans 7-9 commits instead of 3-4), p99 of the paced run,
# peak RSS, medians of 5 runs (the ratio to franz-txn moved by 0.1
# between sets of 3), into bench/results/copy/. Settings of onceflow's
# own are compared in bench/results/copy-tuning.
bench-copy: deps
	$(GO) run ./bench/cmd/compare -workloads copy -contenders limit,ceiling,franz-txn,franz-txn@txn-keep=true,onceflow -intervals 50ms,100ms,1s -runs 5 -records 10000000 -out bench/results/copy $(BENCH_FLAGS)

# Distributed mode (issue 16): 1, 2 and 3 instances of one job.mode
# distributed job against single mode, with a local S3 server, medians of
# 3 runs, into bench/results/distributed/ (BENCH_FLAGS=-quick: smaller).
bench-distributed: deps
	$(GO) run ./bench/cmd/compare -distributed $(BENCH_FLAGS)

# Windows (issue 17): Nexmark q5-like and q11-like windowed counts,
# onceflow's window job against Flink and Kafka Streams, exactly once at
# 100 ms and 1 s, medians of 3 runs, into bench/results/windows/
# (BENCH_FLAGS=-quick: smaller, into bench/results/windows/quick/).
bench-windows: deps
	$(GO) run ./bench/cmd/compare -windows $(BENCH_FLAGS)

# Large state (issue 19 section 4): the word count over 10M distinct words
# (about 1 GB of state), onceflow with Pebble against Flink with RocksDB
# incremental checkpoints: checkpoint duration and bytes at 1% and 10%
# churn, recovery from SIGKILL, medians of 3 runs, into
# bench/results/state/ (BENCH_FLAGS='-state-keys N' for a smaller state).
bench-state: deps
	$(GO) run ./bench/cmd/compare -state $(BENCH_FLAGS)

# Profile-guided optimisation: refresh cmd/processor/default.pgo (and
# bench/cmd/gopipe/default.pgo for the Go contenders) from CPU profiles of
# the copy and the word count on a local broker (scripts/pgo.sh, a few
# minutes; run it on an idle machine and commit the profiles).
pgo: deps
	scripts/pgo.sh

# A local single-node broker until Ctrl-C (or make broker-stop).
broker:
	$(KAFKALOCAL) -addr-file $(BROKER_ADDR_FILE)

broker3:
	$(KAFKALOCAL) -nodes 3 -addr-file $(BROKER_ADDR_FILE)

broker-stop:
	-pkill -INT -f 'kafkalocal -addr-file $(BROKER_ADDR_FILE)'

# A local S3-compatible server (versitygw, posix backend) until Ctrl-C;
# prints the endpoint and credentials as shell exports.
s3:
	$(S3LOCAL)

# The demo needs the Go modules and the broker's jars, not versitygw;
# scripts/demo.sh builds bin/processor itself.
demo:
	$(GO) mod download
	$(KAFKALOCAL) -fetch-only
	./scripts/demo.sh

clean:
	rm -rf bin data
