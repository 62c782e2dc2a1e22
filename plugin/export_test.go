package plugin

import "time"

// SetClock sets the clock approvals are made and expire by, for tests that
// step over an approval's lifespan.
func SetClock(p *Plugin, now func() time.Time) { p.now = now }
