#!/usr/bin/env bash
# make demo: start a local Kafka broker, run the exactly-once word count
# with `processor run` while a feeder writes lines into its input, kill
# the processor with SIGKILL in the middle, restart it, then show that the
# counts read back under read_committed equal a count made directly from
# the input and that no transaction is left open. The Kafka side and every
# check is scripts/demokafka (Go); this script is the plumbing. Everything
# it starts, it stops. It exits non-zero when a check fails.
# DEMO_TRACE=1 prefixes its own lines with the milliseconds since it began.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s%N)
work=$(mktemp -d)
data=./data/demo
job=wc-demo # examples/wordcount.yaml: job.name and sink.transactional_id_prefix
lines=20000
feed_over=3s
interval=300ms
broker_pid= processor_pid= feeder_pid= log=

cleanup() {
	if [ -n "$feeder_pid" ]; then
		kill -TERM "$feeder_pid" 2>/dev/null || true
		wait "$feeder_pid" 2>/dev/null || true
	fi
	if [ -n "$processor_pid" ] && kill -0 "$processor_pid" 2>/dev/null; then
		kill -TERM "$processor_pid" 2>/dev/null || true
		for _ in $(seq 1 60); do kill -0 "$processor_pid" 2>/dev/null || break; sleep 1; done
		kill -KILL "$processor_pid" 2>/dev/null || true
		wait "$processor_pid" 2>/dev/null || true
	fi
	if [ -n "$broker_pid" ]; then
		kill -INT "$broker_pid" 2>/dev/null || true
		wait "$broker_pid" 2>/dev/null || true
	fi
	rm -rf "$work"
}
trap cleanup EXIT

fail() {
	echo "demo: $*" >&2
	if [ -n "$log" ] && [ -s "$log" ]; then
		echo "demo: the processor's log ends with:" >&2
		tail -n 20 "$log" >&2
	fi
	exit 1
}
say() { echo "demo: ${DEMO_TRACE:+[$(( ($(date +%s%N) - start) / 1000000 ))ms] }$*"; }
heading() { echo; echo "demo: --- $* ---"; }

# The broker starts while the processor and demokafka build.
go build -o "$work/kafkalocal" ./integration/cmd/kafkalocal
"$work/kafkalocal" -addr-file "$work/broker.addr" > /dev/null 2> "$work/broker.log" &
broker_pid=$!
go build -o bin/processor ./cmd/processor
go build -o "$work/demokafka" ./scripts/demokafka
dk="$work/demokafka"
for _ in $(seq 1 1800); do
	[ -s "$work/broker.addr" ] && break
	kill -0 "$broker_pid" 2>/dev/null || { cat "$work/broker.log" >&2; fail "the local broker did not start"; }
	sleep 0.1
done
[ -s "$work/broker.addr" ] || fail "the local broker did not come up within 3 minutes"
brokers=$(cat "$work/broker.addr")
"$dk" create -brokers "$brokers" -partitions 2 words counts
say "a local Kafka broker at $brokers; topics words (input) and counts (output), 2 partitions each"

# start_processor LOG: `processor run` in the background, the same command
# both times: a plain run resumes from the job's latest checkpoint.
start_processor() {
	log=$1
	rm -f "$work/http.addr"
	bin/processor run --config examples/wordcount.yaml \
		--set kafka.brokers="$brokers" \
		--set http.listen=127.0.0.1:0 \
		--set checkpoint.interval="$interval" \
		--set checkpoint.dir="$data/checkpoints" \
		--set state.dir="$data/state" \
		--addr-file "$work/http.addr" > "$work/savepoint.path" 2> "$log" &
	processor_pid=$!
	for _ in $(seq 1 600); do
		[ -s "$work/http.addr" ] && break
		kill -0 "$processor_pid" 2>/dev/null || fail "processor run exited"
		sleep 0.05
	done
	[ -s "$work/http.addr" ] || fail "processor run did not start its HTTP listener within 30s"
	http=$(cat "$work/http.addr")
}

# A fresh demo: the broker is new, so are the job's checkpoints.
rm -rf "$data"
start_processor "$work/processor-1.log"
say "the word count runs: bin/processor run --config examples/wordcount.yaml (job $job, exactly_once sink,"
say "  a checkpoint every $interval; each checkpoint commits the Kafka transactions that hold the counts written before it)"
"$dk" feed -brokers "$brokers" -topic words -lines "$lines" -over "$feed_over" -hold "$work/restarted" > "$work/feeder.out" &
feeder_pid=$!
say "a feeder writes $lines lines of sample text into words, spread over $feed_over, and keeps writing through the kill"

heading "1. the crash"
"$dk" first -brokers "$brokers" -topic counts -input words -lines "$lines" -http "$http" \
	|| fail "no count was committed"
say "killing the processor with SIGKILL (kill -9) while lines keep arriving: no savepoint, no clean shutdown."
# Disowned first: bash reaps it without its "Killed" job notice.
disown "$processor_pid"
kill -KILL "$processor_pid"
while kill -0 "$processor_pid" 2>/dev/null; do sleep 0.02; done
processor_pid=
"$dk" left-open -brokers "$brokers" -prefix "$job" -save "$work/left-open.json"

heading "2. the restart"
say "restarting with the same command: a plain processor run, no --from, no flag for recovery."
start_processor "$work/processor-2.log"
touch "$work/restarted" # from now on the feeder may write its last quarter
restored=
for _ in $(seq 1 200); do
	restored=$(sed -n 's/.*msg=restoring.* checkpoint=\([0-9]*\) .*/\1/p' "$log" | head -n 1)
	[ -n "$restored" ] && break
	sleep 0.05
done
[ -n "$restored" ] || fail "the restarted processor did not log which checkpoint it restored"
say "restarted: it resumed from checkpoint $restored (the input offsets and the word counts as of that checkpoint),"
say "  made sure the transactions checkpoint $restored had pre-committed are committed, aborted the ones the killed run"
say "  left open, and reads again the lines that came after checkpoint $restored."
"$dk" closed -brokers "$brokers" -from "$work/left-open.json" -timeout 1m \
	|| fail "the transactions the killed run left open did not end"
wait "$feeder_pid" || { feeder_pid=; cat "$work/feeder.out"; fail "the feeder failed"; }
feeder_pid=
cat "$work/feeder.out"
"$dk" caught-up -brokers "$brokers" -input words -topic counts -timeout 2m \
	|| fail "the word counts did not arrive"
"$dk" checkpoints -http "$http"
savepoint=$(bin/processor stop --savepoint --http "$http") || fail "stop with a savepoint failed"
wait "$processor_pid" || fail "processor run exited with $? after the stop"
processor_pid=
say "stopped with a savepoint (bin/processor stop --savepoint), its transactions committed: $savepoint"

heading "3. the counts are exact"
"$dk" verify -brokers "$brokers" -input words -topic counts -timeout 1m \
	|| fail "the counts are not exact (see above)"

heading "4. nothing is left open"
say "bin/processor transactions list --prefix $job:"
bin/processor transactions list --prefix "$job" --brokers "$brokers" | sed 's/^/  /'
"$dk" none-open -brokers "$brokers" -prefix "$job" -topic counts -timeout 1m \
	|| fail "a transaction is left open"

echo
say "the job's checkpoints (bin/processor checkpoints list $data/checkpoints/$job):"
bin/processor checkpoints list "$data/checkpoints/$job" | sed 's/^/  /'
say "done in $(( ($(date +%s%N) - start) / 1000000000 ))s; resume with: bin/processor run --config examples/wordcount.yaml --from $savepoint ..."
