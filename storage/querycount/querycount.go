// Package querycount counts the calls a Store makes to its database driver,
// for benchmarks and tests: statements, prepares, transactions and, on
// PostgreSQL, network exchanges. Unlike timings the counts are
// deterministic, so tests can assert them. It plugs in below the pool
// through storage.WithConnector; production code does not use it.
package querycount

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"net"
	"sync/atomic"
	"time"

	"github.com/lib/pq"

	"github.com/deputyauth/deputy/storage"
)

// Counter counts the calls that reach the database driver under a Store
// opened with Open: one per statement executed, statement prepared,
// transaction begun, committed or rolled back. These are the store's round
// trips as the driver sees them; the benchmark and the query-count tests
// read them, since, unlike timings, they are deterministic.
//
// A call the driver declines with driver.ErrSkip (database/sql then prepares
// and executes instead) is not counted: nothing reached the database, and
// the prepare and execute that follow are.
type Counter struct {
	exec, query, prepare    atomic.Int64
	stmtExec, stmtQuery     atomic.Int64
	begin, commit, rollback atomic.Int64
	connect                 atomic.Int64
	wire                    atomic.Int64
}

// Counts is a snapshot of a Counter.
type Counts struct {
	Exec      int64 `json:"exec"`       // one-shot statements without a result set
	Query     int64 `json:"query"`      // one-shot statements returning rows
	Prepare   int64 `json:"prepare"`    // statements prepared (per connection)
	StmtExec  int64 `json:"stmt_exec"`  // executions of a prepared statement
	StmtQuery int64 `json:"stmt_query"` // queries through a prepared statement
	Begin     int64 `json:"begin"`
	Commit    int64 `json:"commit"`
	Rollback  int64 `json:"rollback"`
	// Connect counts new connections opened by the pool. It is not a
	// round trip of any request, but a pool that churns shows up here.
	Connect int64 `json:"connect"`
	// Wire counts network round trips to PostgreSQL: each time the client
	// writes after having read, it starts a new exchange and will wait for
	// the answer. lib/pq runs a statement with arguments as two of them
	// (parse and describe, then bind and execute) when binary_parameters
	// is off, one when it is on (Open's default); a statement without
	// arguments is one. Opening
	// a connection costs several. Always 0 on SQLite, which has no wire.
	Wire int64 `json:"wire"`
}

// RoundTrips is the number of calls that went to the database: every
// statement, prepare, begin, commit and rollback. Opening connections is not
// included, nor is Wire, which counts the same work in network exchanges.
func (c Counts) RoundTrips() int64 {
	return c.Exec + c.Query + c.Prepare + c.StmtExec + c.StmtQuery + c.Begin + c.Commit + c.Rollback
}

// Sub returns c − o, the calls made between two snapshots.
func (c Counts) Sub(o Counts) Counts {
	return Counts{
		Exec:      c.Exec - o.Exec,
		Query:     c.Query - o.Query,
		Prepare:   c.Prepare - o.Prepare,
		StmtExec:  c.StmtExec - o.StmtExec,
		StmtQuery: c.StmtQuery - o.StmtQuery,
		Begin:     c.Begin - o.Begin,
		Commit:    c.Commit - o.Commit,
		Rollback:  c.Rollback - o.Rollback,
		Connect:   c.Connect - o.Connect,
		Wire:      c.Wire - o.Wire,
	}
}

// Add returns c + o.
func (c Counts) Add(o Counts) Counts {
	return Counts{
		Exec:      c.Exec + o.Exec,
		Query:     c.Query + o.Query,
		Prepare:   c.Prepare + o.Prepare,
		StmtExec:  c.StmtExec + o.StmtExec,
		StmtQuery: c.StmtQuery + o.StmtQuery,
		Begin:     c.Begin + o.Begin,
		Commit:    c.Commit + o.Commit,
		Rollback:  c.Rollback + o.Rollback,
		Connect:   c.Connect + o.Connect,
		Wire:      c.Wire + o.Wire,
	}
}

func (c Counts) String() string {
	return fmt.Sprintf("%d round trips (exec %d, query %d, prepare %d, stmt exec %d, stmt query %d, begin %d, commit %d, rollback %d; %d on the wire)",
		c.RoundTrips(), c.Exec, c.Query, c.Prepare, c.StmtExec, c.StmtQuery, c.Begin, c.Commit, c.Rollback, c.Wire)
}

// Counts returns the calls counted so far.
func (q *Counter) Counts() Counts {
	return Counts{
		Exec:      q.exec.Load(),
		Query:     q.query.Load(),
		Prepare:   q.prepare.Load(),
		StmtExec:  q.stmtExec.Load(),
		StmtQuery: q.stmtQuery.Load(),
		Begin:     q.begin.Load(),
		Commit:    q.commit.Load(),
		Rollback:  q.rollback.Load(),
		Connect:   q.connect.Load(),
		Wire:      q.wire.Load(),
	}
}

// Measure runs fn and returns the calls made while it ran. Calls made
// concurrently by other goroutines on the same store are included, so measure
// on a store nothing else is using.
func (q *Counter) Measure(fn func()) Counts {
	before := q.Counts()
	fn()
	return q.Counts().Sub(before)
}

// Open is storage.Open with a Counter between the pool and the driver. The
// store behaves exactly as one from storage.Open (same driver, DSN handling
// and pool settings); it only counts.
func Open(ctx context.Context, dsn string, opts ...storage.Option) (*storage.Store, *Counter, error) {
	qc := new(Counter)
	s, err := storage.Open(ctx, dsn, append(opts, qc.Option())...)
	if err != nil {
		return nil, nil, err
	}
	return s, qc, nil
}

// Option puts q between the pool and the driver of the store storage.Open
// opens with it, for a program that opens its store itself (deputy-idp's
// debug listener counts its queries this way).
func (q *Counter) Option() storage.Option {
	return storage.WithConnector(func(driverName, dsn string) (driver.Connector, error) {
		return countingConnector(driverName, dsn, q)
	})
}

// countingConnector wraps the connector of the driver registered as
// driverName, exactly as sql.Open would build it.
func countingConnector(driverName, dsn string, qc *Counter) (driver.Connector, error) {
	// sql.Open only looks the driver up; it connects to nothing.
	probe, err := sql.Open(driverName, "")
	if err != nil {
		return nil, err
	}
	d := probe.Driver()
	probe.Close()
	var inner driver.Connector
	if _, ok := d.(*pq.Driver); ok {
		// What pq.Driver.Open does for each connection, once, with a dialer
		// that counts the wire.
		pc, err := pq.NewConnector(dsn)
		if err != nil {
			return nil, err
		}
		pc.Dialer(wireDialer{qc: qc})
		inner = pc
	} else if dc, ok := d.(driver.DriverContext); ok {
		if inner, err = dc.OpenConnector(dsn); err != nil {
			return nil, err
		}
	} else {
		inner = dsnConnector{d: d, dsn: dsn}
	}
	return &countConnector{inner: inner, qc: qc}, nil
}

// wireDialer is lib/pq's default dialer with connections that count
// exchanges on the wire.
type wireDialer struct {
	d  net.Dialer
	qc *Counter
}

func (w wireDialer) Dial(network, address string) (net.Conn, error) {
	return w.DialContext(context.Background(), network, address)
}

func (w wireDialer) DialTimeout(network, address string, timeout time.Duration) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	return w.DialContext(ctx, network, address)
}

func (w wireDialer) DialContext(ctx context.Context, network, address string) (net.Conn, error) {
	c, err := w.d.DialContext(ctx, network, address)
	if err != nil {
		return nil, err
	}
	return &wireConn{Conn: c, qc: w.qc}, nil
}

// wireConn counts a round trip at the first write after a read.
type wireConn struct {
	net.Conn
	qc      *Counter
	writing atomic.Bool
}

func (c *wireConn) Write(b []byte) (int, error) {
	if !c.writing.Swap(true) {
		c.qc.wire.Add(1)
	}
	return c.Conn.Write(b)
}

func (c *wireConn) Read(b []byte) (int, error) {
	c.writing.Store(false)
	return c.Conn.Read(b)
}

// dsnConnector is database/sql's own fallback for drivers without
// OpenConnector.
type dsnConnector struct {
	d   driver.Driver
	dsn string
}

func (c dsnConnector) Connect(context.Context) (driver.Conn, error) { return c.d.Open(c.dsn) }
func (c dsnConnector) Driver() driver.Driver                        { return c.d }

type countConnector struct {
	inner driver.Connector
	qc    *Counter
}

func (c *countConnector) Connect(ctx context.Context) (driver.Conn, error) {
	conn, err := c.inner.Connect(ctx)
	if err != nil {
		return nil, err
	}
	c.qc.connect.Add(1)
	return &countConn{inner: conn, qc: c.qc}, nil
}

func (c *countConnector) Driver() driver.Driver { return c.inner.Driver() }

// Close closes the inner connector if it holds resources, as sql.DB.Close
// would have without the wrapper.
func (c *countConnector) Close() error {
	if cl, ok := c.inner.(interface{ Close() error }); ok {
		return cl.Close()
	}
	return nil
}

// countConn offers every optional interface database/sql probes for, and
// answers each the way database/sql would treat its absence when the inner
// connection lacks it, so that the wrapper changes no code path.
type countConn struct {
	inner driver.Conn
	qc    *Counter
}

var (
	_ driver.Conn               = (*countConn)(nil)
	_ driver.ConnPrepareContext = (*countConn)(nil)
	_ driver.ConnBeginTx        = (*countConn)(nil)
	_ driver.ExecerContext      = (*countConn)(nil)
	_ driver.QueryerContext     = (*countConn)(nil)
	_ driver.Pinger             = (*countConn)(nil)
	_ driver.SessionResetter    = (*countConn)(nil)
	_ driver.Validator          = (*countConn)(nil)
	_ driver.NamedValueChecker  = (*countConn)(nil)
)

func (c *countConn) Prepare(query string) (driver.Stmt, error) {
	return c.PrepareContext(context.Background(), query)
}

func (c *countConn) PrepareContext(ctx context.Context, query string) (driver.Stmt, error) {
	var (
		st  driver.Stmt
		err error
	)
	if p, ok := c.inner.(driver.ConnPrepareContext); ok {
		st, err = p.PrepareContext(ctx, query)
	} else {
		st, err = c.inner.Prepare(query)
	}
	c.qc.prepare.Add(1)
	if err != nil {
		return nil, err
	}
	return &countStmt{inner: st, conn: c}, nil
}

func (c *countConn) Close() error { return c.inner.Close() }

func (c *countConn) Begin() (driver.Tx, error) {
	return c.BeginTx(context.Background(), driver.TxOptions{})
}

func (c *countConn) BeginTx(ctx context.Context, opts driver.TxOptions) (driver.Tx, error) {
	var (
		tx  driver.Tx
		err error
	)
	if b, ok := c.inner.(driver.ConnBeginTx); ok {
		tx, err = b.BeginTx(ctx, opts)
	} else {
		//lint:ignore SA1019 the fallback database/sql itself uses
		tx, err = c.inner.Begin() //nolint:staticcheck
	}
	c.qc.begin.Add(1)
	if err != nil {
		return nil, err
	}
	return &countTx{inner: tx, qc: c.qc}, nil
}

func (c *countConn) ExecContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Result, error) {
	var (
		r   driver.Result
		err error
	)
	switch e := c.inner.(type) {
	case driver.ExecerContext:
		r, err = e.ExecContext(ctx, query, args)
	default:
		return nil, driver.ErrSkip
	}
	if errors.Is(err, driver.ErrSkip) {
		return nil, err
	}
	c.qc.exec.Add(1)
	return r, err
}

func (c *countConn) QueryContext(ctx context.Context, query string, args []driver.NamedValue) (driver.Rows, error) {
	var (
		r   driver.Rows
		err error
	)
	switch q := c.inner.(type) {
	case driver.QueryerContext:
		r, err = q.QueryContext(ctx, query, args)
	default:
		return nil, driver.ErrSkip
	}
	if errors.Is(err, driver.ErrSkip) {
		return nil, err
	}
	c.qc.query.Add(1)
	return r, err
}

func (c *countConn) Ping(ctx context.Context) error {
	if p, ok := c.inner.(driver.Pinger); ok {
		return p.Ping(ctx)
	}
	return nil
}

func (c *countConn) ResetSession(ctx context.Context) error {
	if r, ok := c.inner.(driver.SessionResetter); ok {
		return r.ResetSession(ctx)
	}
	return nil
}

func (c *countConn) IsValid() bool {
	if v, ok := c.inner.(driver.Validator); ok {
		return v.IsValid()
	}
	return true
}

// CheckNamedValue defers to the driver; ErrSkip makes database/sql use its
// default conversion, as it would for a driver without a checker.
func (c *countConn) CheckNamedValue(nv *driver.NamedValue) error {
	if n, ok := c.inner.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(nv)
	}
	return driver.ErrSkip
}

// namedToValues is database/sql's conversion for drivers that only take
// positional values.
func namedToValues(named []driver.NamedValue) ([]driver.Value, error) {
	vals := make([]driver.Value, len(named))
	for i, nv := range named {
		if nv.Name != "" {
			return nil, errors.New("querycount: driver does not support named parameters")
		}
		vals[i] = nv.Value
	}
	return vals, nil
}

type countTx struct {
	inner driver.Tx
	qc    *Counter
}

func (t *countTx) Commit() error {
	t.qc.commit.Add(1)
	return t.inner.Commit()
}

func (t *countTx) Rollback() error {
	t.qc.rollback.Add(1)
	return t.inner.Rollback()
}

type countStmt struct {
	inner driver.Stmt
	conn  *countConn
}

var (
	_ driver.Stmt              = (*countStmt)(nil)
	_ driver.StmtExecContext   = (*countStmt)(nil)
	_ driver.StmtQueryContext  = (*countStmt)(nil)
	_ driver.NamedValueChecker = (*countStmt)(nil)
)

func (s *countStmt) Close() error  { return s.inner.Close() }
func (s *countStmt) NumInput() int { return s.inner.NumInput() }

func (s *countStmt) Exec(args []driver.Value) (driver.Result, error) {
	s.conn.qc.stmtExec.Add(1)
	//lint:ignore SA1019 driver.Stmt requires Exec; the call is only forwarded
	return s.inner.Exec(args)
}

func (s *countStmt) Query(args []driver.Value) (driver.Rows, error) {
	s.conn.qc.stmtQuery.Add(1)
	//lint:ignore SA1019 driver.Stmt requires Query; the call is only forwarded
	return s.inner.Query(args)
}

func (s *countStmt) ExecContext(ctx context.Context, args []driver.NamedValue) (driver.Result, error) {
	if e, ok := s.inner.(driver.StmtExecContext); ok {
		s.conn.qc.stmtExec.Add(1)
		return e.ExecContext(ctx, args)
	}
	vals, err := namedToValues(args)
	if err != nil {
		return nil, err
	}
	return s.Exec(vals)
}

func (s *countStmt) QueryContext(ctx context.Context, args []driver.NamedValue) (driver.Rows, error) {
	if q, ok := s.inner.(driver.StmtQueryContext); ok {
		s.conn.qc.stmtQuery.Add(1)
		return q.QueryContext(ctx, args)
	}
	vals, err := namedToValues(args)
	if err != nil {
		return nil, err
	}
	return s.Query(vals)
}

// CheckNamedValue is database/sql's order of checkers: the statement's,
// else the connection's, else the default conversion (ErrSkip). Neither
// lib/pq nor modernc's statements implement the older ColumnConverter, so
// the wrapper does not either.
func (s *countStmt) CheckNamedValue(nv *driver.NamedValue) error {
	if n, ok := s.inner.(driver.NamedValueChecker); ok {
		return n.CheckNamedValue(nv)
	}
	return s.conn.CheckNamedValue(nv)
}
