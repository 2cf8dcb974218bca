// Package localsvc starts and supervises the services cdcflow runs against on
// one machine — PostgreSQL clusters from the installed binaries, the Temporal
// CLI dev server, an in-process Kafka-protocol broker — and cdcflow's own
// programs. `make run` (devstack) and the tests use it; it links no testing
// code.
package localsvc

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"runtime"
	"sync"
	"syscall"
	"time"
)

// Process is a supervised child process. It dies with its parent: the kernel
// sends it SIGTERM when the thread that started it exits, so the starting
// goroutine stays on its locked thread for the child's whole life. It runs in
// its own process group, so a Ctrl-C reaches only the parent, which stops
// children in order.
type Process struct {
	Name string
	cmd  *exec.Cmd
	done chan struct{}
	err  error // valid once done is closed
}

// Start starts cmd, with its standard output and error going to out.
func Start(name string, cmd *exec.Cmd, out io.Writer) (*Process, error) {
	p := &Process{Name: name, cmd: cmd, done: make(chan struct{})}
	if cmd.SysProcAttr == nil {
		cmd.SysProcAttr = &syscall.SysProcAttr{}
	}
	cmd.SysProcAttr.Pdeathsig = syscall.SIGTERM
	cmd.SysProcAttr.Setpgid = true
	cmd.Stdout, cmd.Stderr = out, out
	started := make(chan error, 1)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread exits with the child
		if err := cmd.Start(); err != nil {
			started <- err
			close(p.done)
			return
		}
		started <- nil
		p.err = cmd.Wait()
		close(p.done)
	}()
	if err := <-started; err != nil {
		return nil, fmt.Errorf("start %s: %w", name, err)
	}
	return p, nil
}

// StartProgram runs the program at path with the environment env added to
// this process's own.
func StartProgram(name, path string, env []string, out io.Writer) (*Process, error) {
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), env...)
	return Start(name, cmd, out)
}

// Pid is the process's ID.
func (p *Process) Pid() int { return p.cmd.Process.Pid }

// Done is closed when the process has ended.
func (p *Process) Done() <-chan struct{} { return p.done }

// Err is how the process ended; valid once Done is closed.
func (p *Process) Err() error {
	<-p.done
	return p.err
}

// Exited reports, without blocking, whether the process has ended, and how.
func (p *Process) Exited() (bool, error) {
	select {
	case <-p.done:
		return true, p.err
	default:
		return false, nil
	}
}

// Signal sends sig to the process, unless it has ended.
func (p *Process) Signal(sig os.Signal) error {
	if done, _ := p.Exited(); done {
		return nil
	}
	return p.cmd.Process.Signal(sig)
}

// Kill kills the process (SIGKILL) and waits for it to end.
func (p *Process) Kill() {
	_ = p.Signal(syscall.SIGKILL)
	<-p.done
}

// Stop sends sig and waits up to timeout for the process to end, then kills
// it. It returns an error only when the process had to be killed.
func (p *Process) Stop(sig os.Signal, timeout time.Duration) error {
	if err := p.Signal(sig); err != nil {
		return err
	}
	select {
	case <-p.done:
		return nil
	case <-time.After(timeout):
		p.Kill()
		return fmt.Errorf("%s did not stop within %s of %s; killed", p.Name, timeout, sig)
	}
}

// waitReady polls check until it succeeds, the process exits, timeout
// passes or ctx ends: a start-up that was called off returns at once, with
// ctx's error.
func (p *Process) waitReady(ctx context.Context, timeout time.Duration, check func() error) error {
	deadline := time.Now().Add(timeout)
	for {
		err := check()
		if err == nil {
			return nil
		}
		if done, exitErr := p.Exited(); done {
			return errors.Join(fmt.Errorf("%s exited during start-up", p.Name), exitErr, err)
		}
		if ctx.Err() != nil {
			return fmt.Errorf("%s start-up called off: %w", p.Name, context.Cause(ctx))
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("%s not ready after %s: %w", p.Name, timeout, err)
		}
		select {
		case <-ctx.Done():
		case <-p.done:
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago,
// and that no other request for a free port (bind to port 0), in this
// process or another, gets for a minute: a connection to it is closed from
// its listening side, which keeps the port in TIME_WAIT, where the system
// does not hand it out again but a listener may still bind it. (Without
// this, two dev servers started close together could be given the same
// port, one of them taking the other's connections.)
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	port := l.Addr().(*net.TCPAddr).Port
	c, err := net.DialTCP("tcp", nil, l.Addr().(*net.TCPAddr))
	if err != nil {
		return 0, fmt.Errorf("reserve port %d: %w", port, err)
	}
	defer c.Close()
	s, err := l.Accept()
	if err != nil {
		return 0, fmt.Errorf("reserve port %d: %w", port, err)
	}
	s.Close() // the listening side closes first: its end waits in TIME_WAIT
	return port, nil
}

// PortOr returns port when it is free on 127.0.0.1, else 0 (pick any).
func PortOr(port int) int {
	l, err := net.Listen("tcp", fmt.Sprintf("127.0.0.1:%d", port))
	if err != nil {
		return 0
	}
	l.Close()
	return port
}

// Buffer collects a process's output; it is safe for concurrent use.
type Buffer struct {
	mu sync.Mutex
	b  []byte
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.b = append(b.b, p...)
	return len(p), nil
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return string(b.b)
}
