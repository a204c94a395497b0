package state

import (
	"testing"

	"github.com/onceflow/onceflow/internal/testerr"
)

func must(t testing.TB, err error) { t.Helper(); testerr.Must(t, err) }

func wantErrContains(t testing.TB, err error, parts ...string) {
	t.Helper()
	testerr.Contains(t, err, parts...)
}
