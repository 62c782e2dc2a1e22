package main

import (
	"context"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/deputyauth/deputy/storage"
)

// CPU time is what a loaded, shared machine does not distort much: a token
// costs about as many CPU microseconds whether or not other processes
// compete for the cores, while tokens/s and latencies move with the
// competition. The bench reports both, per cell: the CPU of the server's
// process (the bench's own for the in-process cells, whose load generator
// runs in a process of its own; deputy-idp's for the shipped cells), the
// load generator's, and the CPU of the PostgreSQL backends serving the
// server's pool.

// appName marks the bench's PostgreSQL connections, and idpAppName those of
// the deputy-idp it starts, so that their backends can be told from
// everyone else's on a shared server.
const (
	appName    = "deputy-bench"
	idpAppName = "deputy-bench-idp"
)

// clockTicks is Linux's USER_HZ, the unit of /proc/<pid>/stat times; it is
// 100 on every architecture Go supports.
const clockTicks = 100

// selfCPU is the user+system CPU time of this process so far.
func selfCPU() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// pgBackends returns the process ids of the server backends of the
// connections named app, or nil when PostgreSQL is not local or not telling.
func pgBackends(ctx context.Context, s *storage.Store, app string) []int {
	var pids []int
	if err := s.Select(ctx, &pids, `SELECT pid FROM pg_stat_activity WHERE application_name = ?`, app); err != nil {
		return nil
	}
	// A remote or containerised server's pids are not ours to read.
	var local []int
	for _, pid := range pids {
		if b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/comm"); err == nil && strings.HasPrefix(string(b), "postgres") {
			local = append(local, pid)
		}
	}
	return local
}

// procCPU sums the user+system CPU time of pids from /proc.
func procCPU(pids []int) time.Duration {
	var ticks int64
	for _, pid := range pids {
		b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
		if err != nil {
			continue // the backend ended; its time is lost, not invented
		}
		// The command name, in parentheses, may hold spaces: the fields
		// that follow are counted from its closing parenthesis.
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		// After ")": state is field 3 of stat(5), utime 14, stime 15.
		if len(f) < 13 {
			continue
		}
		u, err1 := strconv.ParseInt(f[11], 10, 64)
		st, err2 := strconv.ParseInt(f[12], 10, 64)
		if err1 == nil && err2 == nil {
			ticks += u + st
		}
	}
	return time.Duration(ticks) * time.Second / clockTicks
}

// cpuMeter measures the CPU a measured phase used: of the server's
// process (ServerPID, or this process when 0) and of the PostgreSQL
// backends of the connections named PGApp (found through PGStore).
type cpuMeter struct {
	ServerPID int
	PGStore   *storage.Store
	PGApp     string

	pids           []int
	server0, pg0   time.Duration
	Server, PG     time.Duration
	PGMeasured     bool
	ServerMeasured bool
}

func (m *cpuMeter) serverCPU() (time.Duration, bool) {
	if m.ServerPID == 0 {
		return selfCPU(), true
	}
	if _, err := os.Stat("/proc/" + strconv.Itoa(m.ServerPID) + "/stat"); err != nil {
		return 0, false
	}
	return procCPU([]int{m.ServerPID}), true
}

func (m *cpuMeter) start(ctx context.Context) {
	if m.PGStore != nil && m.PGStore.Dialect() == storage.Postgres {
		m.pids = pgBackends(ctx, m.PGStore, m.PGApp)
		m.PGMeasured = len(m.pids) > 0
		m.pg0 = procCPU(m.pids)
	}
	m.server0, m.ServerMeasured = m.serverCPU()
}

// stop ends the measurement. A backend that ended during the phase took
// its CPU time with it, so the backends' figure counts only when every
// backend of the start is still there; one that started during the phase
// is added whole (its time is all inside the phase). Hydra's pool, which
// opens and closes connections under load, usually ends some.
func (m *cpuMeter) stop(ctx context.Context) {
	v, ok := m.serverCPU()
	m.Server, m.ServerMeasured = v-m.server0, m.ServerMeasured && ok
	if !m.PGMeasured {
		return
	}
	m.PG = procCPU(m.pids) - m.pg0
	now := pgBackends(ctx, m.PGStore, m.PGApp)
	var started []int
	for _, pid := range now {
		if !slices.Contains(m.pids, pid) {
			started = append(started, pid)
		}
	}
	m.PG += procCPU(started)
	m.PGMeasured = len(now)-len(started) == len(m.pids)
}
