#!/usr/bin/env bash
# make demo: start a local broker, create the demo topics, and (once the
# processor issue lands) run the word count on sample text.
set -euo pipefail
cd "$(dirname "$0")/.."
addr_file=$(mktemp)
go run ./integration/cmd/kafkalocal -addr-file "$addr_file" > /dev/null &
broker_pid=$!
trap 'kill -INT $broker_pid 2>/dev/null; wait $broker_pid 2>/dev/null; rm -f "$addr_file"' EXIT
for _ in $(seq 1 120); do [ -s "$addr_file" ] && break; sleep 1; done
[ -s "$addr_file" ] || { echo "demo: the local broker did not come up" >&2; exit 1; }
echo "demo: local Kafka broker at $(cat "$addr_file")"
echo "demo: the word-count job arrives with the processor issue; stopping the broker"
