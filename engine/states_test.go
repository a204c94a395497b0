package engine_test

import (
	"encoding/json"
	"strings"
	"testing"

	"github.com/onceflow/onceflow/engine"
)

// TestStatesKeepTheirNames: the typed job states and checkpoint statuses
// print, marshal and unmarshal as the exact strings the processor's API
// and metrics show, and an unknown name or value is refused naming it.
func TestStatesKeepTheirNames(t *testing.T) {
	jobNames := []string{"CREATED", "RUNNING", "RESTARTING", "FAILED", "CANCELED", "STOPPED", "FINISHED"}
	states := engine.JobStates()
	if len(states) != len(jobNames) {
		t.Fatalf("%d job states, want %d", len(states), len(jobNames))
	}
	for i, s := range states {
		if s.String() != jobNames[i] {
			t.Errorf("state %d is %q, want %q", i, s, jobNames[i])
		}
		var back engine.JobState
		if b, err := json.Marshal(s); err != nil || string(b) != `"`+jobNames[i]+`"` || json.Unmarshal(b, &back) != nil || back != s {
			t.Errorf("state %s: JSON %s (%v), read back as %s", s, b, err, back)
		}
	}
	if var0 := (engine.Status{}).State; var0 != engine.JobCreated {
		t.Errorf("a job whose first attempt has not started is %s, want CREATED", var0)
	}
	ckNames := []string{"IN_PROGRESS", "COMPLETED", "FAILED", "SUBSUMED"}
	for i, s := range engine.CheckpointStatuses() {
		var back engine.CheckpointStatus
		if b, err := json.Marshal(s); err != nil || string(b) != `"`+ckNames[i]+`"` || json.Unmarshal(b, &back) != nil || back != s {
			t.Errorf("status %s: JSON %s (%v), read back as %s", s, b, err, back)
		}
	}
	var js engine.JobState
	if err := js.UnmarshalText([]byte("RUNING")); err == nil || !strings.Contains(err.Error(), `"RUNING"`) {
		t.Errorf("unknown state name: %v", err)
	}
	if _, err := json.Marshal(engine.JobState(42)); err == nil || !strings.Contains(err.Error(), "42") {
		t.Errorf("unknown state value marshalled: %v", err)
	}
	var cs engine.CheckpointStatus
	if err := cs.UnmarshalText([]byte("DONE")); err == nil || !strings.Contains(err.Error(), `"DONE"`) {
		t.Errorf("unknown status name: %v", err)
	}
	// The whole Status marshals its state by name.
	b, err := json.Marshal(engine.Status{State: engine.JobRestarting, Checkpoints: []engine.CheckpointStats{{Status: engine.CheckpointSubsumed}}})
	if err != nil || !strings.Contains(string(b), `"State":"RESTARTING"`) || !strings.Contains(string(b), `"Status":"SUBSUMED"`) {
		t.Errorf("Status as JSON: %s (%v)", b, err)
	}
}
