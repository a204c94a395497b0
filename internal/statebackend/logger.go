package statebackend

import (
	"fmt"
	"log/slog"

	"github.com/cockroachdb/pebble/v2"
)

// SlogLogger adapts log to PebbleOptions.Logger: Infof writes at Debug
// (pebble reports every database it opens there) and Errorf at Error, each line with component=pebble. Fatalf writes at Error
// and panics, because pebble's contract is that Fatalf does not return.
func SlogLogger(log *slog.Logger) pebble.Logger { return slogLogger{log.With("component", "pebble")} }

type slogLogger struct{ log *slog.Logger }

func (l slogLogger) Infof(format string, args ...interface{}) {
	l.log.Debug(fmt.Sprintf(format, args...))
}

func (l slogLogger) Errorf(format string, args ...interface{}) {
	l.log.Error(fmt.Sprintf(format, args...))
}

func (l slogLogger) Fatalf(format string, args ...interface{}) {
	msg := fmt.Sprintf(format, args...)
	l.log.Error(msg)
	panic("pebble: " + msg)
}

// quietLogger is PebbleOptions.Logger's default: it discards lines and
// panics on Fatalf.
type quietLogger struct{}

func (quietLogger) Infof(string, ...interface{})  {}
func (quietLogger) Errorf(string, ...interface{}) {}
func (quietLogger) Fatalf(format string, args ...interface{}) {
	panic(fmt.Sprintf("pebble: "+format, args...))
}
