package localsvc

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5"
)

// PostgresBinDir is where Debian installs PostgreSQL 15's server binaries.
// CDCFLOW_PG_BINDIR overrides it.
const PostgresBinDir = "/usr/lib/postgresql/15/bin"

// Postgres is a throwaway PostgreSQL cluster, or an external server.
type Postgres struct {
	// DSN connects to the maintenance database "postgres" as superuser.
	DSN  string
	Port int

	dir      string
	bin      string
	settings []string
	cred     *syscall.Credential
	proc     *Process
	log      *Buffer
	dbSeq    atomic.Int64
}

// PostgresOptions tunes a throwaway cluster.
type PostgresOptions struct {
	// Durable keeps fsync on; tests turn it off for speed.
	Durable bool
	// Port to listen on; 0 picks a free one.
	Port int
	// Settings are extra server settings, as name=value.
	Settings []string
}

// StartPostgres initialises and starts a cluster in a new temporary directory,
// listening on 127.0.0.1 only, with wal_level=logical. When running as root it
// runs the server as the "postgres" user, since initdb refuses root.
func StartPostgres(ctx context.Context, opts PostgresOptions) (*Postgres, error) {
	bin := os.Getenv("CDCFLOW_PG_BINDIR")
	if bin == "" {
		bin = PostgresBinDir
	}
	dir, err := os.MkdirTemp("", "cdcflow-pg-")
	if err != nil {
		return nil, err
	}
	p := &Postgres{dir: dir, bin: bin, log: &Buffer{}}
	if os.Geteuid() == 0 {
		if p.cred, err = postgresUser(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
		if err := os.Chown(dir, int(p.cred.Uid), int(p.cred.Gid)); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	data := filepath.Join(dir, "data")
	initdb := exec.CommandContext(ctx, filepath.Join(bin, "initdb"), "-D", data, "-U", "postgres",
		"-A", "trust", "-E", "UTF8", "--locale=C", "--no-sync")
	// In its own process group, as Start's children are: a Ctrl-C reaches
	// only this process, which calls initdb off through ctx, stopping it and
	// the server it runs for bootstrap together (SIGKILL 10 s later).
	initdb.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred, Setpgid: true}
	initdb.Cancel = func() error { return syscall.Kill(-initdb.Process.Pid, syscall.SIGTERM) }
	initdb.WaitDelay = 10 * time.Second
	if out, err := initdb.CombinedOutput(); err != nil {
		os.RemoveAll(dir)
		if ctx.Err() != nil { // called off: its transcript says only that
			return nil, fmt.Errorf("initdb called off: %w", context.Cause(ctx))
		}
		return nil, fmt.Errorf("initdb: %w\n%s", err, out)
	}
	p.Port = opts.Port
	if p.Port == 0 {
		if p.Port, err = FreePort(); err != nil {
			os.RemoveAll(dir)
			return nil, err
		}
	}
	p.settings = []string{
		"-D", data, "-p", strconv.Itoa(p.Port), "-k", dir,
		"-c", "listen_addresses=127.0.0.1",
		"-c", "wal_level=logical",
		"-c", "max_connections=200",
		"-c", "max_replication_slots=20",
		"-c", "max_wal_senders=10",
		"-c", "shared_buffers=256MB",
		// With synchronous_commit off (below), a commit reaches the log a
		// replication slot reads only when the WAL writer flushes it: every
		// 10 ms here, not 200, as a source that commits synchronously would.
		"-c", "wal_writer_delay=10ms",
	}
	if !opts.Durable {
		p.settings = append(p.settings, "-c", "fsync=off", "-c", "full_page_writes=off", "-c", "synchronous_commit=off")
	}
	for _, kv := range opts.Settings { // after the defaults, so that they win
		p.settings = append(p.settings, "-c", kv)
	}
	p.DSN = fmt.Sprintf("postgres://postgres@127.0.0.1:%d/postgres?sslmode=disable", p.Port)
	if err := p.Start(ctx); err != nil {
		os.RemoveAll(dir)
		return nil, err
	}
	return p, nil
}

func postgresUser() (*syscall.Credential, error) {
	u, err := user.Lookup("postgres")
	if err != nil {
		return nil, fmt.Errorf("running as root, and initdb needs another user: %w", err)
	}
	uid, _ := strconv.Atoi(u.Uid)
	gid, _ := strconv.Atoi(u.Gid)
	return &syscall.Credential{Uid: uint32(uid), Gid: uint32(gid)}, nil
}

// Start starts the server of a cluster made by StartPostgres (again, after
// Stop) and waits until it accepts connections.
func (p *Postgres) Start(ctx context.Context) error {
	cmd := exec.Command(filepath.Join(p.bin, "postgres"), p.settings...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Credential: p.cred}
	proc, err := Start("postgres", cmd, p.log)
	if err != nil {
		return err
	}
	p.proc = proc
	err = proc.waitReady(ctx, 60*time.Second, func() error {
		conn, err := pgx.Connect(ctx, p.DSN)
		if err != nil {
			return err
		}
		return conn.Close(ctx)
	})
	if err == nil {
		return nil
	}
	p.Stop() //nolint:errcheck // the start-up's error says more
	if ctx.Err() != nil {
		return err // called off: the server's log says only that
	}
	return fmt.Errorf("%w\n%s", err, p.log.String())
}

// Stop shuts the server down (fast mode) and leaves the data directory.
func (p *Postgres) Stop() error { return p.shutdown(syscall.SIGINT) }

// Crash stops the server as a crash would: an immediate shutdown (SIGQUIT),
// with no checkpoint; the next Start recovers from the write-ahead log.
func (p *Postgres) Crash() error { return p.shutdown(syscall.SIGQUIT) }

// shutdown sends the postmaster sig, the shutdown mode, and waits.
func (p *Postgres) shutdown(sig syscall.Signal) error {
	if p.proc == nil {
		return nil
	}
	err := p.proc.Stop(sig, 30*time.Second)
	p.proc = nil
	return err
}

// Close stops the server and removes the cluster.
func (p *Postgres) Close() error {
	err := p.Stop()
	if p.dir != "" {
		os.RemoveAll(p.dir)
	}
	return err
}

// CreateDatabase creates a new empty database and returns its DSN.
func (p *Postgres) CreateDatabase(ctx context.Context, prefix string) (string, error) {
	name := fmt.Sprintf("%s_%d_%d", prefix, os.Getpid(), p.dbSeq.Add(1))
	conn, err := pgx.Connect(ctx, p.DSN)
	if err != nil {
		return "", err
	}
	defer conn.Close(ctx)
	if _, err := conn.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{name}.Sanitize()); err != nil {
		return "", fmt.Errorf("create database %s: %w", name, err)
	}
	cfg, err := pgx.ParseConfig(p.DSN)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("postgres://%s@%s:%d/%s?sslmode=disable", cfg.User, cfg.Host, cfg.Port, name), nil
}

// ExternalPostgres uses a running server; dsn must name a database where the
// user may CREATE DATABASE.
func ExternalPostgres(dsn string) *Postgres {
	cfg, err := pgx.ParseConfig(dsn)
	port := 0
	if err == nil {
		port = int(cfg.Port)
	}
	return &Postgres{DSN: dsn, Port: port}
}
