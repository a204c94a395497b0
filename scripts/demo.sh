#!/usr/bin/env bash
# make demo: start a local Kafka broker, create the topics, feed sample
# text, run the exactly-once word count with `processor run`, show the
# counts (read_committed) and the checkpoint history, then stop the job
# with a savepoint and stop the broker. Everything it starts, it stops.
set -euo pipefail
cd "$(dirname "$0")/.."
start=$(date +%s)
work=$(mktemp -d)
data=./data/demo
broker_pid= processor_pid=

cleanup() {
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
	if [ -s "$work/processor.log" ]; then
		echo "demo: the processor's log ends with:" >&2
		tail -n 20 "$work/processor.log" >&2
	fi
	exit 1
}

go build -o bin/processor ./cmd/processor
go build -o "$work/demokafka" ./scripts/demokafka
go build -o "$work/kafkalocal" ./integration/cmd/kafkalocal

"$work/kafkalocal" -addr-file "$work/broker.addr" > /dev/null 2> "$work/broker.log" &
broker_pid=$!
for _ in $(seq 1 180); do
	[ -s "$work/broker.addr" ] && break
	kill -0 "$broker_pid" 2>/dev/null || { cat "$work/broker.log" >&2; fail "the local broker did not start"; }
	sleep 1
done
[ -s "$work/broker.addr" ] || fail "the local broker did not come up within 3 minutes"
brokers=$(cat "$work/broker.addr")
echo "demo: local Kafka broker at $brokers"

"$work/demokafka" create -brokers "$brokers" -partitions 2 words counts
echo "demo: topics words and counts (2 partitions each)"

cat > "$work/sample.txt" <<'TEXT'
a stream of lines flows in from the words topic
every line is split into words and every word is counted
the count of a word is state kept per key and checkpointed
a checkpoint is a barrier that flows with the records
the sink writes counts inside a kafka transaction
the transaction commits when the checkpoint completes
so every word is counted exactly once even after a crash
stop the job with a savepoint and nothing is left open
TEXT
for _ in 1 2 3 4 5; do cat "$work/sample.txt"; done > "$work/input.txt"
words=$(wc -w < "$work/input.txt" | tr -d ' ')
"$work/demokafka" produce -brokers "$brokers" -topic words < "$work/input.txt"

# A fresh demo: the broker is new, so are the job's checkpoints.
rm -rf "$data"
bin/processor run --config examples/wordcount.yaml \
	--set kafka.brokers="$brokers" \
	--set http.listen=127.0.0.1:0 \
	--set checkpoint.dir="$data/checkpoints" \
	--set state.dir="$data/state" \
	--addr-file "$work/http.addr" > "$work/savepoint.path" 2> "$work/processor.log" &
processor_pid=$!
for _ in $(seq 1 60); do
	[ -s "$work/http.addr" ] && break
	kill -0 "$processor_pid" 2>/dev/null || fail "processor run exited"
	sleep 0.5
done
[ -s "$work/http.addr" ] || fail "processor run did not start its HTTP listener"
http=$(cat "$work/http.addr")
echo "demo: processor run (job wc-demo, examples/wordcount.yaml); metrics at http://$http/metrics"

"$work/demokafka" counts -brokers "$brokers" -topic counts -want "$words" -timeout 2m \
	|| fail "the word counts did not arrive"
sleep 1.5 # one more checkpoint in the history
"$work/demokafka" checkpoints -http "$http"

savepoint=$(bin/processor stop --savepoint --http "$http") || fail "stop with a savepoint failed"
wait "$processor_pid" || fail "processor run exited with $? after the stop"
processor_pid=
echo "demo: stopped with a savepoint, every transaction committed: $savepoint"
echo "demo: the job's checkpoints (bin/processor checkpoints list $data/checkpoints/wc-demo):"
bin/processor checkpoints list "$data/checkpoints/wc-demo" | sed 's/^/  /'
echo "demo: done in $(( $(date +%s) - start ))s; resume with: bin/processor run --config examples/wordcount.yaml --from $savepoint ..."
