package capture

import "context"

// LeaveTriggers exposes the switch from trigger capture to the tests.
func LeaveTriggers(ctx context.Context, l *Logical) error { return l.leaveTriggers(ctx) }
