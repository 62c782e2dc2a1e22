package main

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/url"
	"os"
	"os/exec"
	"strings"
	"sync/atomic"
	"time"
)

// The load generator of every HTTP cell runs in a process of its own (this
// program again, with loadgenEnv set), so that the server's process (the
// bench's own for the in-process plugin cells, deputy-idp's for the shipped
// ones) spends its CPU on serving alone: CPU per token is then the server's
// process CPU divided by tokens, for every cell alike, and the shipped and
// plugin cells are driven the same way.
//
// The two processes speak JSON lines. The bench writes one loadgenSpec on
// the child's stdin; the child runs the warm-up, writes {"event":"measure"}
// and waits for a line on stdin, during which the bench takes its "before"
// snapshots (query counts, CPU); then it runs the measured phase and writes
// {"event":"done", …} with the result, after which the bench takes its
// "after" snapshots.

// loadgenEnv, set to 1, turns this program into the load generator.
const loadgenEnv = "DEPUTY_BENCH_LOADGEN"

// tokenSpec is one token request, which every worker sends over and over:
// form POSTed to Endpoint with HTTP Basic client authentication.
type tokenSpec struct {
	Endpoint string     `json:"endpoint"`
	ClientID string     `json:"client_id"`
	Secret   string     `json:"secret"`
	Form     url.Values `json:"form"`
}

func (s tokenSpec) op() op { return tokenRequest(s.Endpoint, s.ClientID, s.Secret, s.Form) }

type loadgenSpec struct {
	Request  tokenSpec     `json:"request"`
	Clients  int           `json:"clients"`
	Warmup   time.Duration `json:"warmup"`
	Duration time.Duration `json:"duration"`
}

type loadgenEvent struct {
	Event  string      `json:"event"` // measure, done
	Result *loadResult `json:"result,omitempty"`
	// Sent is the requests started in the measured phase, the ones still
	// in flight at its end included: what the server worked on.
	Sent int64 `json:"sent,omitempty"`
	// CPU is the load generator's own CPU time during the measured phase.
	CPU   time.Duration `json:"cpu_ns,omitempty"`
	Error string        `json:"error,omitempty"`
}

// loadgenMain is the child's main: it reads the spec, runs the load and
// reports; its exit code is 0 unless it could not do that.
func loadgenMain(stdin io.Reader, stdout io.Writer) int {
	in := bufio.NewReader(stdin)
	enc := json.NewEncoder(stdout)
	fail := func(err error) int {
		enc.Encode(loadgenEvent{Event: "done", Error: err.Error()}) //nolint:errcheck // the parent is gone
		return 1
	}
	line, err := in.ReadBytes('\n')
	if err != nil {
		return fail(fmt.Errorf("read spec: %w", err))
	}
	var spec loadgenSpec
	if err := json.Unmarshal(line, &spec); err != nil {
		return fail(fmt.Errorf("spec: %w", err))
	}
	if spec.Clients < 1 || spec.Duration <= 0 {
		return fail(errors.New("spec: clients and duration must be positive"))
	}
	// The target must be this machine, whatever the spec says; the dialer
	// checks every connection again.
	if err := checkURLLoopback(context.Background(), spec.Request.Endpoint); err != nil {
		return fail(err)
	}
	var (
		sent      atomic.Int64
		counted   = countSent(spec.Request.op(), &sent)
		cpu0, cpu time.Duration
		gate      error
	)
	r := runLoad(context.Background(), spec.Clients, spec.Warmup, spec.Duration, counted, func() func() {
		if err := enc.Encode(loadgenEvent{Event: "measure"}); err != nil {
			gate = err
		} else if _, err := in.ReadBytes('\n'); err != nil {
			gate = fmt.Errorf("wait for the bench: %w", err)
		}
		sent.Store(0)
		cpu0 = selfCPU()
		return func() { cpu = selfCPU() - cpu0 }
	})
	if gate != nil {
		return fail(gate)
	}
	if err := enc.Encode(loadgenEvent{Event: "done", Result: &r, Sent: sent.Load(), CPU: cpu}); err != nil {
		return 1
	}
	return 0
}

// loadgenRun is what one measured load run in the child produced.
type loadgenRun struct {
	loadResult
	Sent      int64
	ClientCPU time.Duration
}

// runLoadProcess runs spec in a load-generator child process. measuring is
// called just before the measured phase and returns the function called
// just after it, as for runLoad.
func runLoadProcess(ctx context.Context, spec loadgenSpec, measuring func() func()) (*loadgenRun, error) {
	self, err := os.Executable()
	if err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	cmd := exec.CommandContext(ctx, self)
	cmd.Env = append(os.Environ(), loadgenEnv+"=1")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	defer func() {
		stdin.Close()
		cmd.Wait() //nolint:errcheck // its report, or its failure, was read already
	}()
	buf, _ := json.Marshal(spec)
	if _, err := stdin.Write(append(buf, '\n')); err != nil {
		return nil, fmt.Errorf("load generator: %w", err)
	}
	dec := json.NewDecoder(stdout)
	var done func()
	for {
		var ev loadgenEvent
		if err := dec.Decode(&ev); err != nil {
			return nil, fmt.Errorf("load generator: %w (stderr: %.300s)", err, stderr.String())
		}
		switch ev.Event {
		case "measure":
			if measuring != nil {
				done = measuring()
			}
			if _, err := io.WriteString(stdin, "go\n"); err != nil {
				return nil, fmt.Errorf("load generator: %w", err)
			}
		case "done":
			if done != nil {
				done()
			}
			if ev.Error != "" {
				return nil, fmt.Errorf("load generator: %s", ev.Error)
			}
			if ev.Result == nil {
				return nil, errors.New("load generator: no result")
			}
			return &loadgenRun{loadResult: *ev.Result, Sent: ev.Sent, ClientCPU: ev.CPU}, nil
		default:
			return nil, fmt.Errorf("load generator: unexpected event %q", ev.Event)
		}
	}
}

// countSent wraps o to add to sent every request it puts on the wire: one
// per call, and each retry tokenRequest made on a new connection.
func countSent(o op, sent *atomic.Int64) op {
	return func(ctx context.Context, w *worker) error {
		sent.Add(1)
		err := o(ctx, w)
		sent.Add(w.retries)
		w.retries = 0
		return err
	}
}
