package membership

import (
	"context"
	"log/slog"

	"github.com/twmb/franz-go/pkg/kgo"
)

// clientLogger hands the Member's franz-go client's own log lines to the
// Member's logger at Debug, prefixed "kafka group client: ", with
// kgo_level giving franz-go's level. At franz-go's Info level these are
// the steps of the group protocol, a few per rebalance: a heartbeat
// answered REBALANCE_IN_PROGRESS ("heartbeat errored"), "joining group",
// "joined", "syncing", "synced", "new group session begun". They date
// each step of a takeover (when a survivor learned that a rebalance
// began, how long the join and the sync took) with log.level debug; at
// any other level the client logs nothing (Level is LogLevelNone), so
// they cost nothing. franz-go's Debug level (every request) is not
// asked for. Errors that end a group session are logged at Warn by the
// Member anyway (manageErrHook).
type clientLogger struct{ log *slog.Logger }

func (l clientLogger) Level() kgo.LogLevel {
	if l.log.Enabled(context.Background(), slog.LevelDebug) {
		return kgo.LogLevelInfo
	}
	return kgo.LogLevelNone
}

func (l clientLogger) Log(level kgo.LogLevel, msg string, keyvals ...any) {
	l.log.Debug("kafka group client: "+msg, append([]any{"kgo_level", level.String()}, keyvals...)...)
}
