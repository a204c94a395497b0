package membership

import "time"

// The defaults of Config's timeouts (config's distributed.* keys refer to
// them).
const (
	// DefaultSessionTimeout is Config.SessionTimeout when 0.
	DefaultSessionTimeout = 10 * time.Second
	// DefaultRebalanceTimeout is Config.RebalanceTimeout when 0.
	DefaultRebalanceTimeout = time.Minute
	// DefaultRevokeTimeout is Config.RevokeTimeout when 0.
	DefaultRevokeTimeout = 30 * time.Second
)
