package engine

import "fmt"

// JobState is where a job is in its life (Status.State). Its String and
// text form (MarshalText, so JSON and log attributes too) are Flink's
// names, which the processor's API and metrics show: CREATED, RUNNING,
// RESTARTING, FAILED, CANCELED, STOPPED, FINISHED.
type JobState uint8

const (
	// JobCreated: Run has not started the first attempt (the zero value).
	JobCreated JobState = iota
	// JobRunning: an attempt runs.
	JobRunning
	// JobRestarting: an attempt failed and the restart strategy's pause
	// runs before the next.
	JobRestarting
	// JobFailed: the job failed for good (Run returned the failure).
	JobFailed
	// JobCanceled: Run's context ended.
	JobCanceled
	// JobStopped: StopWithSavepoint stopped the job.
	JobStopped
	// JobFinished: the bounded sources were exhausted and the final
	// checkpoint committed.
	JobFinished
)

var jobStateNames = [...]string{"CREATED", "RUNNING", "RESTARTING", "FAILED", "CANCELED", "STOPPED", "FINISHED"}

// JobStates lists every JobState, in the order of their values.
func JobStates() []JobState {
	out := make([]JobState, len(jobStateNames))
	for i := range out {
		out[i] = JobState(i)
	}
	return out
}

// String is the state's name, as the API and metrics show it.
func (s JobState) String() string {
	if int(s) < len(jobStateNames) {
		return jobStateNames[s]
	}
	return fmt.Sprintf("JobState(%d)", uint8(s))
}

// Active reports whether the job may still run: created, running or
// restarting.
func (s JobState) Active() bool { return s == JobCreated || s == JobRunning || s == JobRestarting }

// MarshalText is the state's name; an unknown value is an error.
func (s JobState) MarshalText() ([]byte, error) {
	if int(s) >= len(jobStateNames) {
		return nil, fmt.Errorf("engine: unknown job state %d", uint8(s))
	}
	return []byte(jobStateNames[s]), nil
}

// UnmarshalText reads a state's name; an unknown name is an error naming
// it.
func (s *JobState) UnmarshalText(b []byte) error {
	for i, n := range jobStateNames {
		if n == string(b) {
			*s = JobState(i)
			return nil
		}
	}
	return fmt.Errorf("engine: unknown job state %q", b)
}

// CheckpointStatus is where a checkpoint is (CheckpointStats.Status). Its
// String and text form are the names the processor's API shows:
// IN_PROGRESS, COMPLETED, FAILED, SUBSUMED.
type CheckpointStatus uint8

const (
	// CheckpointInProgress: triggered, not yet complete (the zero value).
	CheckpointInProgress CheckpointStatus = iota
	// CheckpointCompleted: durable in the storage.
	CheckpointCompleted
	// CheckpointFailed: aborted by a failure (CheckpointStats.Failure).
	CheckpointFailed
	// CheckpointSubsumed: aborted without a failure, because a newer
	// checkpoint completed first or the attempt ended.
	CheckpointSubsumed
)

var checkpointStatusNames = [...]string{"IN_PROGRESS", "COMPLETED", "FAILED", "SUBSUMED"}

// CheckpointStatuses lists every CheckpointStatus, in the order of their
// values.
func CheckpointStatuses() []CheckpointStatus {
	out := make([]CheckpointStatus, len(checkpointStatusNames))
	for i := range out {
		out[i] = CheckpointStatus(i)
	}
	return out
}

// String is the status's name, as the API shows it.
func (s CheckpointStatus) String() string {
	if int(s) < len(checkpointStatusNames) {
		return checkpointStatusNames[s]
	}
	return fmt.Sprintf("CheckpointStatus(%d)", uint8(s))
}

// MarshalText is the status's name; an unknown value is an error.
func (s CheckpointStatus) MarshalText() ([]byte, error) {
	if int(s) >= len(checkpointStatusNames) {
		return nil, fmt.Errorf("engine: unknown checkpoint status %d", uint8(s))
	}
	return []byte(checkpointStatusNames[s]), nil
}

// UnmarshalText reads a status's name; an unknown name is an error naming
// it.
func (s *CheckpointStatus) UnmarshalText(b []byte) error {
	for i, n := range checkpointStatusNames {
		if n == string(b) {
			*s = CheckpointStatus(i)
			return nil
		}
	}
	return fmt.Errorf("engine: unknown checkpoint status %q", b)
}
