package main

import (
	"fmt"
	"os/exec"
	"sync"
	"syscall"
	"time"
)

// process is a server the bench started (deputy-idp, Ory Hydra): its
// output is drained into log tails while it runs, so that it never blocks
// on a full pipe and its last lines can explain a failure.
type process struct {
	cmd     *exec.Cmd
	logs    *logTail // stderr (and stdout, when one tail takes both)
	exited  chan struct{}
	waitErr error
}

// startProcess starts cmd with its stdout drained into out and its stderr
// into logs (out may be logs).
func startProcess(cmd *exec.Cmd, out, logs *logTail) (*process, error) {
	p := &process{cmd: cmd, logs: logs, exited: make(chan struct{})}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	stderr, err := cmd.StderrPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("start %s: %w", cmd.Path, err)
	}
	var drained sync.WaitGroup
	drained.Add(2)
	go func() { defer drained.Done(); out.drain(stdout) }()
	go func() { defer drained.Done(); logs.drain(stderr) }()
	go func() {
		drained.Wait() // Wait closes the pipes: read them to the end first
		p.waitErr = cmd.Wait()
		close(p.exited)
	}()
	return p, nil
}

// stop ends the server as an orchestrator would (SIGTERM, then SIGKILL
// after a grace of 30 s).
func (p *process) stop() {
	if p.cmd.Process == nil {
		return
	}
	p.cmd.Process.Signal(syscall.SIGTERM) //nolint:errcheck // it may be gone already
	select {
	case <-p.exited:
	case <-time.After(30 * time.Second):
		p.cmd.Process.Kill() //nolint:errcheck
		<-p.exited
	}
}

func (p *process) pid() int { return p.cmd.Process.Pid }
