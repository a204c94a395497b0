#!/usr/bin/env bash
# make pgo: refresh cmd/processor/default.pgo, the CPU profile that Go's
# profile-guided optimisation builds the processor with (go build picks
# up a main package's default.pgo on its own; -pgo=off builds without),
# and bench/cmd/gopipe/default.pgo, the same for the Go contenders of the
# benchmarks, so that the limit and franz-go's copier are built as well
# as onceflow is.
#
# It builds the processor with the pprof tag, runs bench/cmd/compare's
# copy (12M records) and word count (2M lines) at 100 ms checkpoints on a
# local broker, takes a CPU profile of PGO_SECONDS of each backlog run
# from PROCESSOR_PPROF, and merges the two into default.pgo. A profile
# from one workload only would tune the build to that one; the copy and
# the word count between them run the source, the chain, the keyed state
# (Pebble) and the transactional sink. gopipe's profile merges its limit
# and its transactional copy at 100 ms (GOPIPE_PPROF). Run it on an idle
# machine after a change to a hot path, and commit the new profiles with
# the A/B that shows they still pay (bench/results/copy-tuning/pgo-ab).
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${PGO_SECONDS:-6}
addr=127.0.0.1:${PGO_PORT:-6061}
work=$(mktemp -d)
grabber=
cleanup() {
	if [ -n "$grabber" ]; then kill "$grabber" 2>/dev/null || true; fi
	rm -rf "$work"
}
trap cleanup EXIT

go build -tags pprof -pgo=off -o "$work/processor" ./cmd/processor
go build -o "$work/compare" ./bench/cmd/compare

# grab OUT: waits for the processor's pprof server, lets the backlog run
# get going, then takes the profile.
grab() {
	for _ in $(seq 1 3000); do
		if curl -s -o /dev/null "http://$addr/debug/pprof/"; then
			sleep 1.5
			curl -sf -o "$1" "http://$addr/debug/pprof/profile?seconds=$secs"
			return
		fi
		sleep 0.1
	done
	echo "pgo: no pprof server at $addr" >&2
	return 1
}

profile() { # profile CONTENDER WORKLOAD SIZE-FLAG OUT
	grab "$4" &
	grabber=$!
	"$work/compare" -contenders "$1" -workloads "$2" "$3" \
		-intervals 100ms -runs 1 -paced=false -warmup=false \
		-processor "$work/processor" -out "$work/out" >"$work/run.log" 2>&1 ||
		{ cat "$work/run.log" >&2; exit 1; }
	wait "$grabber"
	grabber=
	[ -s "$4" ] || { echo "pgo: no profile of $1 $2" >&2; exit 1; }
}

profile "onceflow@PROCESSOR_PPROF=$addr" copy -records=12000000 "$work/copy.pprof"
profile "onceflow@PROCESSOR_PPROF=$addr" wordcount -lines=2000000 "$work/wordcount.pprof"
profile "limit@GOPIPE_PPROF=$addr" copy -records=12000000 "$work/limit.pprof"
profile "franz-txn@GOPIPE_PPROF=$addr" copy -records=12000000 "$work/txn.pprof"
go tool pprof -proto "$work/copy.pprof" "$work/wordcount.pprof" >cmd/processor/default.pgo
go tool pprof -proto "$work/limit.pprof" "$work/txn.pprof" >bench/cmd/gopipe/default.pgo
for f in cmd/processor/default.pgo bench/cmd/gopipe/default.pgo; do
	echo "pgo: wrote $f ($(wc -c <"$f") bytes)"
done
