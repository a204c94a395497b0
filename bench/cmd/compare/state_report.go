package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// stateResult is one run of one contender in the large-state comparison
// (state.go), or the medians of several (Run 0, Runs their number).
type stateResult struct {
	Contender string `json:"contender"`
	Run       int    `json:"run,omitempty"`
	Runs      int    `json:"runs,omitempty"`
	// Measured is how many of a contender's Runs ended without an error
	// (a median's entry only). A run that failed partway still gives the
	// figures it measured; its failure is listed under the table.
	Measured int    `json:"measured,omitempty"`
	Err      string `json:"error,omitempty"`
	Keys     int    `json:"keys"`
	// Load: seconds from the start to the last word's count visible, and
	// words per second over it.
	LoadS    float64 `json:"load_s"`
	LoadRate float64 `json:"load_words_per_s"`
	// StateDiskMB is the local state's files after the load (onceflow's
	// state.dir, Flink's RocksDB directory); CheckpointDirMB the
	// checkpoint directory's; StateSizeMB what the latest checkpoint
	// refers to, as the API reports it.
	StateDiskMB     float64      `json:"state_disk_mb"`
	CheckpointDirMB float64      `json:"checkpoint_dir_mb"`
	StateSizeMB     float64      `json:"checkpoint_state_mb"`
	Phases          []statePhase `json:"churn"`
	// RecoveryS: SIGKILL to the first committed output of a word produced
	// after it (-1 not measured); RecoveryMinS and RecoveryMaxS the range
	// over the runs. SpawnMS: kill to the new process started; APIUpS: to
	// its API answering. RestartS: the first restart's (at the recovery
	// interval, after a SIGKILL too) start to its first visible output.
	RecoveryS    float64 `json:"recovery_s"`
	RecoveryMinS float64 `json:"recovery_min_s,omitempty"`
	RecoveryMaxS float64 `json:"recovery_max_s,omitempty"`
	SpawnMS      float64 `json:"spawn_ms"`
	APIUpS       float64 `json:"api_up_s"`
	RestartS     float64 `json:"first_restart_s"`
	Check        string  `json:"output_check"`
}

// statePhase is one churn burst: the checkpoints completed between the
// burst and its visibility. In a median over runs and bursts (Burst 0),
// Bursts is their number and MaxMSMax and BytesMax the largest of them.
type statePhase struct {
	ChurnPct    int     `json:"churn_pct"`
	Burst       int     `json:"burst,omitempty"`
	Bursts      int     `json:"bursts,omitempty"`
	MaxMSMax    float64 `json:"duration_max_ms_max,omitempty"`
	BytesMax    int64   `json:"bytes_written_max,omitempty"`
	Keys        int     `json:"keys"`
	Checkpoints int     `json:"checkpoints"`
	MaxMS       float64 `json:"duration_max_ms"`
	SumMS       float64 `json:"duration_sum_ms"`
	// BytesWritten: files added to the checkpoint directory; APIBytes
	// the contender's own figure of bytes written (Flink's
	// checkpointed_size, summed; -1 when it has none); StateSizeMB what
	// the last of them refers to.
	BytesWritten int64   `json:"bytes_written"`
	APIBytes     int64   `json:"api_checkpointed_bytes"`
	StateSizeMB  float64 `json:"checkpoint_state_mb"`
}

func (r *stateResult) summary() string {
	var b strings.Builder
	fmt.Fprintf(&b, "load %.0f words/s, state %.0f MB on disk", r.LoadRate, r.StateDiskMB)
	for _, p := range r.Phases {
		fmt.Fprintf(&b, ", %d%% churn burst %d: %d checkpoint(s), longest %.0f ms, %.1f MB written", p.ChurnPct, p.Burst, p.Checkpoints, p.MaxMS, float64(p.BytesWritten)/1e6)
	}
	fmt.Fprintf(&b, ", recovery %s s, output %s", secs(r.RecoveryS), r.Check)
	if r.Err != "" {
		b.WriteString(", error: " + r.Err)
	}
	return b.String()
}

// stateMedians merges the runs of each contender (in the order of
// contenders): every figure is the median over the runs that measured it
// (the lower one of an even count), a run that failed counts only for
// what it measured before it failed; Check lists every run's check that
// was not ok, Err every run's error.
func stateMedians(runs []*stateResult, contenders []string) []*stateResult {
	var out []*stateResult
	for _, name := range contenders {
		var rs []*stateResult
		measured := 0
		for _, r := range runs {
			if r.Contender == name {
				rs = append(rs, r)
				if r.Err == "" {
					measured++
				}
			}
		}
		if len(rs) == 0 {
			continue
		}
		m := &stateResult{Contender: name, Runs: len(rs), Measured: measured, Keys: rs[0].Keys, RecoveryS: -1}
		pick := func(f func(*stateResult) float64, ok func(*stateResult) bool) float64 {
			var v []float64
			for _, r := range rs {
				if ok(r) {
					v = append(v, f(r))
				}
			}
			return lowerMedian(v)
		}
		loaded := func(r *stateResult) bool { return r.LoadS > 0 }
		m.LoadS = pick(func(r *stateResult) float64 { return r.LoadS }, loaded)
		m.LoadRate = pick(func(r *stateResult) float64 { return r.LoadRate }, loaded)
		m.StateDiskMB = pick(func(r *stateResult) float64 { return r.StateDiskMB }, loaded)
		m.CheckpointDirMB = pick(func(r *stateResult) float64 { return r.CheckpointDirMB }, loaded)
		m.StateSizeMB = pick(func(r *stateResult) float64 { return r.StateSizeMB }, loaded)
		recovered := func(r *stateResult) bool { return r.RecoveryS >= 0 }
		if slices.ContainsFunc(rs, recovered) {
			m.RecoveryS = pick(func(r *stateResult) float64 { return r.RecoveryS }, recovered)
			m.SpawnMS = pick(func(r *stateResult) float64 { return r.SpawnMS }, recovered)
			m.APIUpS = pick(func(r *stateResult) float64 { return r.APIUpS }, recovered)
			m.RestartS = pick(func(r *stateResult) float64 { return r.RestartS }, recovered)
			m.RecoveryMinS, m.RecoveryMaxS = m.RecoveryS, m.RecoveryS
			for _, r := range rs {
				if recovered(r) {
					m.RecoveryMinS, m.RecoveryMaxS = min(m.RecoveryMinS, r.RecoveryS), max(m.RecoveryMaxS, r.RecoveryS)
				}
			}
		}
		// Phases by churn, in the order the runs made them.
		var pcts []int
		for _, r := range rs {
			for _, p := range r.Phases {
				if !slices.Contains(pcts, p.ChurnPct) {
					pcts = append(pcts, p.ChurnPct)
				}
			}
		}
		for _, pct := range pcts {
			var ps []statePhase
			for _, r := range rs {
				for _, p := range r.Phases {
					if p.ChurnPct == pct {
						ps = append(ps, p)
					}
				}
			}
			f := func(g func(statePhase) float64) float64 {
				v := make([]float64, len(ps))
				for i, p := range ps {
					v[i] = g(p)
				}
				return lowerMedian(v)
			}
			mp := statePhase{ChurnPct: pct, Keys: ps[0].Keys, Bursts: len(ps),
				Checkpoints:  int(f(func(p statePhase) float64 { return float64(p.Checkpoints) })),
				MaxMS:        f(func(p statePhase) float64 { return p.MaxMS }),
				SumMS:        f(func(p statePhase) float64 { return p.SumMS }),
				BytesWritten: int64(f(func(p statePhase) float64 { return float64(p.BytesWritten) })),
				APIBytes:     int64(f(func(p statePhase) float64 { return float64(p.APIBytes) })),
				StateSizeMB:  f(func(p statePhase) float64 { return p.StateSizeMB }),
			}
			for _, p := range ps {
				mp.MaxMSMax, mp.BytesMax = max(mp.MaxMSMax, p.MaxMS), max(mp.BytesMax, p.BytesWritten)
			}
			m.Phases = append(m.Phases, mp)
		}
		var checks, errs []string
		for _, r := range rs {
			if r.Check != "" && r.Check != "ok" {
				checks = append(checks, fmt.Sprintf("run %d: %s", r.Run, r.Check))
			}
			if r.Err != "" {
				errs = append(errs, fmt.Sprintf("run %d: %s", r.Run, r.Err))
			}
		}
		switch {
		case len(checks) > 0:
			m.Check = strings.Join(checks, "; ")
		case slices.ContainsFunc(rs, func(r *stateResult) bool { return r.Check == "ok" }):
			m.Check = "ok"
		}
		m.Err = strings.Join(errs, "; ")
		out = append(out, m)
	}
	return out
}

// lowerMedian is the median of v, the lower of the two middle values of
// an even count; 0 for none.
func lowerMedian(v []float64) float64 {
	if len(v) == 0 {
		return 0
	}
	v = slices.Clone(v)
	slices.Sort(v)
	return v[(len(v)-1)/2]
}

// stateReport is results.json of -state.
type stateReport struct {
	// Merged, when set, says which runs a results.json merged from
	// another measurement (edited by hand before -render); the page
	// prints it under its first line.
	Merged             string         `json:"merged,omitempty"`
	Started            time.Time      `json:"started"`
	Took               time.Duration  `json:"took_ns"`
	Quick              bool           `json:"quick"`
	Brokers            string         `json:"brokers"`
	Machine            string         `json:"machine"`
	Keys               int            `json:"keys"`
	WordBytes          int            `json:"word_bytes"`
	Churn              []int          `json:"churn_pct"`
	Bursts             int            `json:"bursts"`
	IntervalMS         int64          `json:"interval_ms"`
	RecoveryIntervalMS int64          `json:"recovery_interval_ms"`
	PaceRate           int            `json:"pace_rate"`
	Parallelism        int            `json:"parallelism"`
	RunsN              int            `json:"runs_n"`
	Contenders         []string       `json:"contenders"`
	Results            []*stateResult `json:"results"`
	Runs               []*stateResult `json:"runs"`
	LoadBefore         string         `json:"load_before"`
	LoadAfter          string         `json:"load_after"`
}

func (rep *stateReport) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "results.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(rep.markdown()), 0o644)
}

// renderState writes results.md of dir again from its results.json,
// taking the medians again from its runs, so that a page of an older
// harness shows as the current one would write it.
func renderState(dir string) error {
	b, err := os.ReadFile(filepath.Join(dir, "results.json"))
	if err != nil {
		return err
	}
	var rep stateReport
	if err := json.Unmarshal(b, &rep); err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "results.json"), err)
	}
	if len(rep.Runs) > 0 {
		rep.Results = stateMedians(rep.Runs, rep.Contenders)
	}
	return os.WriteFile(filepath.Join(dir, "results.md"), []byte(rep.markdown()), 0o644)
}

func (rep *stateReport) find(name string) *stateResult {
	for _, r := range rep.Results {
		if r.Contender == name {
			return r
		}
	}
	return nil
}

func mb(v float64) string {
	if v == 0 {
		return "–"
	}
	if v < 10 {
		return fmt.Sprintf("%.2f", v)
	}
	return num(v)
}

func (rep *stateReport) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# Large state: checkpoints by churn and recovery, onceflow against Flink (issue 19 §4)\n\n")
	fmt.Fprintf(&b, "`go run ./bench/cmd/compare -state` (make bench-state) on %s UTC, %s; %s; load average %s before, %s after.\n\n",
		rep.Started.UTC().Format("2006-01-02 15:04"), rep.Machine, roundDur(rep.Took), rep.LoadBefore, rep.LoadAfter)
	if rep.Merged != "" {
		fmt.Fprintf(&b, "**Merged runs.** %s\n\n", rep.Merged)
	}
	fmt.Fprintf(&b, "The word count over %s distinct words of %d bytes (10 a line, 8 partitions, parallelism %d), exactly once, onceflow with Pebble state "+
		"(its defaults: incremental checkpoints with the changelog, local recovery) against Flink 2.0 with RocksDB and incremental checkpoints "+
		"(mini cluster in one JVM); checkpoints to files on the local disk every %s during the load and churn, every %s for recovery. "+
		"Medians over the runs that measured each figure (%d asked; the row runs measured counts those that ended without an error, and a failure is listed under the table); a churn figure is the median over every burst of every run (%d bursts of each percentage a run, each started right after a checkpoint completed), the largest in brackets: "+
		"the first burst after the load also pays for the compactions the load left behind.\n\n",
		num(float64(rep.Keys)), rep.WordBytes, rep.Parallelism, time.Duration(rep.IntervalMS)*time.Millisecond,
		time.Duration(rep.RecoveryIntervalMS)*time.Millisecond, rep.RunsN, rep.Bursts)
	names := rep.Contenders
	b.WriteString("| figure |")
	for _, n := range names {
		fmt.Fprintf(&b, " %s |", n)
	}
	b.WriteString("\n|---|")
	for range names {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	row := func(label string, f func(r *stateResult) string) {
		fmt.Fprintf(&b, "| %s |", label)
		for _, n := range names {
			r := rep.find(n)
			v := "–"
			if r != nil {
				v = f(r)
			}
			fmt.Fprintf(&b, " %s |", v)
		}
		b.WriteString("\n")
	}
	row(fmt.Sprintf("runs measured (of %d asked)", rep.RunsN), func(r *stateResult) string { return fmt.Sprint(r.Measured) })
	row("load: words/s (all keys once, backlog)", func(r *stateResult) string { return num(r.LoadRate) })
	row("local state on disk after the load, MB", func(r *stateResult) string { return mb(r.StateDiskMB) })
	row("checkpoint directory after the load, MB", func(r *stateResult) string { return mb(r.CheckpointDirMB) })
	for _, pct := range rep.Churn {
		phase := func(r *stateResult) *statePhase {
			for i := range r.Phases {
				if r.Phases[i].ChurnPct == pct {
					return &r.Phases[i]
				}
			}
			return nil
		}
		row(fmt.Sprintf("%d%% churn: checkpoints that carried it", pct), func(r *stateResult) string {
			if p := phase(r); p != nil {
				return fmt.Sprint(p.Checkpoints)
			}
			return "–"
		})
		row(fmt.Sprintf("%d%% churn: longest checkpoint of a burst, ms", pct), func(r *stateResult) string {
			if p := phase(r); p != nil {
				return fmt.Sprintf("%s (%s)", num(p.MaxMS), num(p.MaxMSMax))
			}
			return "–"
		})
		row(fmt.Sprintf("%d%% churn: bytes written by a burst (files added to the checkpoint directory), MB (share of the state on disk)", pct), func(r *stateResult) string {
			if p := phase(r); p != nil {
				share := ""
				if r.StateDiskMB > 0 {
					share = fmt.Sprintf(" (%.1f%%)", float64(p.BytesWritten)/1e6/r.StateDiskMB*100)
				}
				return mb(float64(p.BytesWritten)/1e6) + share + fmt.Sprintf(" (max %s)", mb(float64(p.BytesMax)/1e6))
			}
			return "–"
		})
		row(fmt.Sprintf("%d%% churn: bytes written by a burst by the contender's own count, MB", pct), func(r *stateResult) string {
			if p := phase(r); p != nil && p.APIBytes >= 0 {
				return mb(float64(p.APIBytes) / 1e6)
			}
			return "–"
		})
	}
	row("recovery: SIGKILL → first committed output of a word produced after it, s", func(r *stateResult) string {
		if r.RecoveryS < 0 {
			return "–"
		}
		if r.Runs > 1 {
			return fmt.Sprintf("%.2f (%.2f–%.2f)", r.RecoveryS, r.RecoveryMinS, r.RecoveryMaxS)
		}
		return fmt.Sprintf("%.2f", r.RecoveryS)
	})
	row("recovery: SIGKILL → API of the new process answering, s", func(r *stateResult) string {
		if r.RecoveryS < 0 || r.APIUpS == 0 {
			return "–"
		}
		return fmt.Sprintf("%.2f", r.APIUpS)
	})
	row("output exact (every count, no duplicate, across both restarts)", func(r *stateResult) string {
		if r.Check == "" {
			return "–"
		}
		return mdEscape(r.Check)
	})
	b.WriteString("\n")
	if o, f := rep.find("onceflow"), rep.find("flink"); o != nil && f != nil && o.RecoveryS >= 0 && f.RecoveryS > 0 {
		fmt.Fprintf(&b, "- Recovery: onceflow %.2f s against Flink %.2f s (%.2f×); the issue's target is under 3 s: %s.\n",
			o.RecoveryS, f.RecoveryS, o.RecoveryS/f.RecoveryS, map[bool]string{true: "met", false: "missed"}[o.RecoveryS < 3])
	}
	for _, r := range rep.Results {
		if r.Err != "" {
			fmt.Fprintf(&b, "- %s failed: %s\n", r.Contender, mdEscape(r.Err))
		}
	}
	b.WriteString("\nHow it is measured: bench/cmd/compare/state.go. Bytes written are the files that appeared in the checkpoint directory " +
		"between the burst and its visibility (the same measure for both); a checkpoint that carried a burst is one completed in between, " +
		"as the contender's API reports it. Every run's figures are in results.json.\n")
	return b.String()
}

func roundDur(d time.Duration) string { return d.Round(time.Second).String() }
