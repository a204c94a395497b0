package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"text/tabwriter"
	"time"
)

// getJSON decodes the answer of GET http://addr+path into v.
func getJSON(ctx context.Context, addr, path string, v any) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+addr+path, nil)
	if err != nil {
		return err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("GET %s from the processor at %s: %w", path, addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET %s from the processor at %s: %s", path, addr, resp.Status)
	}
	if err := json.NewDecoder(resp.Body).Decode(v); err != nil {
		return fmt.Errorf("GET %s from the processor at %s: %w", path, addr, err)
	}
	return nil
}

// jobBody is the part of GET /api/v1/job used here.
type jobBody struct {
	LastCheckpoint int64 `json:"last_checkpoint"`
	Source         struct {
		RecordsRead int64 `json:"records_read"`
	} `json:"source"`
}

func jobStatus(ctx context.Context, addr string) (jobBody, error) {
	var jb jobBody
	err := getJSON(ctx, addr, "/api/v1/job", &jb)
	return jb, err
}

// checkpointsBody is the part of GET /api/v1/checkpoints printed here.
type checkpointsBody struct {
	Counts struct {
		Completed  int64 `json:"completed"`
		Failed     int64 `json:"failed"`
		InProgress int64 `json:"in_progress"`
	} `json:"counts"`
	History []struct {
		ID          int64     `json:"id"`
		Savepoint   bool      `json:"savepoint"`
		Status      string    `json:"status"`
		TriggerTime time.Time `json:"trigger_time"`
		DurationMS  int64     `json:"duration_ms"`
		StateSize   int64     `json:"state_size"`
		AlignmentMS int64     `json:"alignment_ms"`
	} `json:"history"`
}

// checkpoints prints the running job's checkpoint counts and its latest
// checkpoints, newest first.
func checkpoints(ctx context.Context, addr string, out io.Writer) error {
	var cb checkpointsBody
	if err := getJSON(ctx, addr, "/api/v1/checkpoints", &cb); err != nil {
		return err
	}
	fmt.Fprintf(out, "demo: checkpoints of this run: completed %d, failed %d, in progress %d; the latest (GET /api/v1/checkpoints):\n",
		cb.Counts.Completed, cb.Counts.Failed, cb.Counts.InProgress)
	w := tabwriter.NewWriter(out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(w, "  ID\tKIND\tSTATUS\tTRIGGERED\tDURATION\tSTATE SIZE\tALIGNMENT")
	for _, c := range cb.History[:min(len(cb.History), 5)] {
		kind := "checkpoint"
		if c.Savepoint {
			kind = "savepoint"
		}
		fmt.Fprintf(w, "  %d\t%s\t%s\t%s\t%dms\t%d B\t%dms\n", c.ID, kind, c.Status, c.TriggerTime.Format("15:04:05.000"), c.DurationMS, c.StateSize, c.AlignmentMS)
	}
	return w.Flush()
}
