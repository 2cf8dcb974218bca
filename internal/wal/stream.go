package wal

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pglogrepl"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgxpool"

	"github.com/cdcflow/cdcflow/internal/event"
)

// Config names what logical replication capture uses on the source.
type Config struct {
	Publication string   // created for Tables if missing, and given the tables it lacks
	Slot        string   // created if missing
	Tables      []string // schema.name; a partitioned table is published through its root
	// StatusInterval is how often the reader tells the source how far it
	// has confirmed, also when nothing changes; it must be well below the
	// source's wal_sender_timeout (60 s by default). 0: 10 s.
	StatusInterval time.Duration
}

// ErrSlotLost is returned when the source has removed the log the slot
// still needed (max_slot_wal_keep_size): changes are lost, and the capture
// must be set up again with a new slot and a snapshot (operations.md).
var ErrSlotLost = errors.New("the replication slot has lost the log it needs (wal_status = lost)")

// Setup creates the publication and the slot when they are missing, and
// adds to the publication the configured tables it lacks. It returns the
// slot's confirmed position, and whether it created the slot.
func Setup(ctx context.Context, pool *pgxpool.Pool, cfg Config) (pglogrepl.LSN, bool, error) {
	tables := make([]string, len(cfg.Tables))
	for i, t := range cfg.Tables {
		norm, err := event.NormalizeTable(t)
		if err != nil {
			return 0, false, fmt.Errorf("table allowlist: %w", err)
		}
		tables[i] = norm
	}
	var level string
	if err := pool.QueryRow(ctx, `SELECT current_setting('wal_level')`).Scan(&level); err != nil {
		return 0, false, fmt.Errorf("read the source's wal_level: %w", err)
	}
	if level != "logical" {
		return 0, false, fmt.Errorf("the source has wal_level=%s: capture from the log needs wal_level=logical "+
			"(set it and restart the source), or CDCFLOW_CAPTURE_MODE=trigger", level)
	}
	if err := checkTables(ctx, pool, tables); err != nil {
		return 0, false, err
	}
	var published []string
	var exists, all bool
	err := pool.QueryRow(ctx, `SELECT puballtables, pubinsert AND pubupdate AND pubdelete AND pubviaroot
		FROM pg_publication WHERE pubname = $1`, cfg.Publication).Scan(&all, &exists)
	switch {
	case errors.Is(err, pgx.ErrNoRows):
		exists = false
	case err != nil:
		return 0, false, fmt.Errorf("read publication %s: %w", cfg.Publication, err)
	case !exists:
		return 0, false, fmt.Errorf("publication %s must publish inserts, updates and deletes, with publish_via_partition_root = true "+
			"(ALTER PUBLICATION %s SET (publish = 'insert, update, delete, truncate', publish_via_partition_root = true))",
			cfg.Publication, pgx.Identifier{cfg.Publication}.Sanitize())
	}
	if exists {
		var filtered string
		err := pool.QueryRow(ctx, `SELECT coalesce(string_agg(n.nspname || '.' || c.relname, ', '), '') FROM pg_publication_rel r
			JOIN pg_publication p ON p.oid = r.prpubid JOIN pg_class c ON c.oid = r.prrelid JOIN pg_namespace n ON n.oid = c.relnamespace
			WHERE p.pubname = $1 AND (r.prqual IS NOT NULL OR r.prattrs IS NOT NULL) AND n.nspname || '.' || c.relname = ANY ($2)`,
			cfg.Publication, tables).Scan(&filtered)
		if err != nil {
			return 0, false, fmt.Errorf("read publication %s: %w", cfg.Publication, err)
		}
		if filtered != "" {
			return 0, false, fmt.Errorf("publication %s filters rows or columns of %s: cdcflow needs every row and column", cfg.Publication, filtered)
		}
	}
	if exists && !all {
		rows, err := pool.Query(ctx, `SELECT schemaname || '.' || tablename FROM pg_publication_tables WHERE pubname = $1`, cfg.Publication)
		if err != nil {
			return 0, false, fmt.Errorf("read the tables of publication %s: %w", cfg.Publication, err)
		}
		if published, err = pgx.CollectRows(rows, pgx.RowTo[string]); err != nil {
			return 0, false, fmt.Errorf("read the tables of publication %s: %w", cfg.Publication, err)
		}
	}
	var missing []string
	for _, t := range tables {
		if !slices.Contains(published, t) {
			schema, rel, _ := strings.Cut(t, ".")
			missing = append(missing, pgx.Identifier{schema, rel}.Sanitize())
		}
	}
	pub := pgx.Identifier{cfg.Publication}.Sanitize()
	switch {
	case !exists:
		sql := `CREATE PUBLICATION ` + pub + ` WITH (publish_via_partition_root = true)`
		if len(missing) > 0 {
			sql = `CREATE PUBLICATION ` + pub + ` FOR TABLE ` + strings.Join(missing, ", ") + ` WITH (publish_via_partition_root = true)`
		}
		if _, err := pool.Exec(ctx, sql); err != nil {
			return 0, false, fmt.Errorf("create publication %s: %w", cfg.Publication, err)
		}
	case len(missing) > 0 && !all:
		if _, err := pool.Exec(ctx, `ALTER PUBLICATION `+pub+` ADD TABLE `+strings.Join(missing, ", ")); err != nil {
			return 0, false, fmt.Errorf("add %s to publication %s: %w", strings.Join(missing, ", "), cfg.Publication, err)
		}
	}

	var confirmed *string
	var status *string
	created := false
	err = pool.QueryRow(ctx, `SELECT confirmed_flush_lsn::text, wal_status FROM pg_replication_slots WHERE slot_name = $1`, cfg.Slot).Scan(&confirmed, &status)
	if errors.Is(err, pgx.ErrNoRows) {
		created = true
		err = pool.QueryRow(ctx, `SELECT lsn::text FROM pg_create_logical_replication_slot($1, 'pgoutput')`, cfg.Slot).Scan(&confirmed)
		if err != nil {
			return 0, false, fmt.Errorf("create replication slot %s: %w", cfg.Slot, err)
		}
	} else if err != nil {
		return 0, false, fmt.Errorf("read replication slot %s: %w", cfg.Slot, err)
	}
	if status != nil && *status == "lost" {
		return 0, false, fmt.Errorf("slot %s: %w", cfg.Slot, ErrSlotLost)
	}
	if confirmed == nil {
		return 0, false, fmt.Errorf("slot %s has no confirmed position: is it a logical slot?", cfg.Slot)
	}
	lsn, err := pglogrepl.ParseLSN(*confirmed)
	return lsn, created, err
}

// checkTables refuses a table capture cannot read from the log as it must:
// one that does not exist, has no primary key, or whose replica identity
// is neither DEFAULT (the primary key) nor FULL.
func checkTables(ctx context.Context, pool *pgxpool.Pool, tables []string) error {
	for _, t := range tables {
		schema, rel, _ := strings.Cut(t, ".")
		var identity string
		var hasKey bool
		err := pool.QueryRow(ctx, `SELECT c.relreplident::text, EXISTS (SELECT FROM pg_index i WHERE i.indrelid = c.oid AND i.indisprimary)
			FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = $1 AND c.relname = $2`, schema, rel).Scan(&identity, &hasKey)
		switch {
		case errors.Is(err, pgx.ErrNoRows):
			return fmt.Errorf("table %s does not exist on the source", t)
		case err != nil:
			return fmt.Errorf("read table %s: %w", t, err)
		case !hasKey:
			return fmt.Errorf("table %s has no primary key; cdcflow captures only tables with one", t)
		case identity != "d" && identity != "f":
			return fmt.Errorf("table %s has replica identity %s: cdcflow needs DEFAULT (its primary key) or FULL "+
				"(ALTER TABLE %s REPLICA IDENTITY DEFAULT)", t, map[string]string{"n": "NOTHING", "i": "USING INDEX"}[identity],
				pgx.Identifier{schema, rel}.Sanitize())
		}
	}
	return nil
}

// Stream reads the slot and hands its transactions to a Handler.
type Stream struct {
	cfg     Config
	dsn     string
	decoder *Decoder
}

// NewStream returns a reader of the slot of cfg on the source at dsn;
// decoder reads the source's catalog.
func NewStream(dsn string, cfg Config, decoder *Decoder) *Stream {
	if cfg.StatusInterval <= 0 {
		cfg.StatusInterval = 10 * time.Second
	}
	return &Stream{cfg: cfg, dsn: dsn, decoder: decoder}
}

// Run reads from the slot's confirmed position until ctx is done or the
// connection fails. confirmed returns how far the changes handed to h are
// safely published: Run confirms that to the source (which may then drop
// the log before it) and never more, except that when everything handed
// over is published, it confirms the position the source has sent up to,
// so that writes to tables outside the publication do not hold the log.
func (s *Stream) Run(ctx context.Context, h Handler, confirmed func() pglogrepl.LSN) error {
	conn, err := s.start(ctx)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var (
		handed   pglogrepl.LSN // the end of the last transaction handed over
		sent     pglogrepl.LSN // what the source's keepalives say it has sent
		last     time.Time     // when the last confirmation went
		told     pglogrepl.LSN // what was last confirmed to the source
		next     = time.Now()
		inTx     bool
		tracker  = txTracker{Handler: h, inTx: &inTx, handed: &handed, dirty: new(bool)}
		idler, _ = h.(Idler)
	)
	// confirm tells the source how far it may drop the log: what is
	// published, or when everything handed over is, what it has sent.
	confirm := func(ctx context.Context) error {
		pos := confirmed()
		if !inTx && pos >= handed && sent > pos {
			pos = sent // everything handed over is published: nothing before sent is pending
		}
		pos = max(pos, told)
		if err := pglogrepl.SendStandbyStatusUpdate(ctx, conn, pglogrepl.StandbyStatusUpdate{WALWritePosition: pos}); err != nil {
			return fmt.Errorf("confirm %s to slot %s: %w", pos, s.cfg.Slot, err)
		}
		told = pos
		return nil
	}
	for {
		// Confirm at the interval, when asked, and soon after progress.
		if now := time.Now(); !now.Before(next) || (confirmed() > told && now.Sub(last) >= 100*time.Millisecond) {
			if err := confirm(ctx); err != nil {
				return err
			}
			last, next = now, now.Add(s.cfg.StatusInterval)
		}
		wake := time.Now().Add(100 * time.Millisecond) // to confirm progress soon
		idle := idler != nil && *tracker.dirty
		if idle {
			wake = time.Now().Add(IdleAfter)
		}
		if next.Before(wake) {
			wake = next
		}
		rctx, cancel := context.WithDeadline(ctx, wake)
		raw, err := conn.ReceiveMessage(rctx)
		cancel()
		if ctx.Err() != nil {
			// Stopping: tell the source what is published, so that less is
			// sent again at the next start.
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			defer cancel()
			_ = confirm(fctx)
			return nil
		}
		if err != nil {
			if pgconn.Timeout(err) {
				if idle {
					*tracker.dirty = false
					if err := idler.Idle(ctx); err != nil {
						return err
					}
				}
				continue
			}
			return fmt.Errorf("read slot %s: %w", s.cfg.Slot, err)
		}
		switch msg := raw.(type) {
		case *pgproto3.ErrorResponse:
			return fmt.Errorf("read slot %s: %w", s.cfg.Slot, pgconn.ErrorResponseToPgError(msg))
		case *pgproto3.CopyData:
			if len(msg.Data) == 0 {
				continue
			}
			switch msg.Data[0] {
			case pglogrepl.PrimaryKeepaliveMessageByteID:
				ka, err := pglogrepl.ParsePrimaryKeepaliveMessage(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("read slot %s: %w", s.cfg.Slot, err)
				}
				sent = max(sent, ka.ServerWALEnd)
				if ka.ReplyRequested {
					next = time.Time{}
				}
			case pglogrepl.XLogDataByteID:
				xld, err := pglogrepl.ParseXLogData(msg.Data[1:])
				if err != nil {
					return fmt.Errorf("read slot %s: %w", s.cfg.Slot, err)
				}
				if err := s.decoder.Decode(ctx, xld.WALData, tracker); err != nil {
					return err
				}
			}
		}
	}
}

// Idler is a Handler told when the slot has sent nothing for IdleAfter
// since the last change: a moment to publish what it holds.
type Idler interface {
	Idle(ctx context.Context) error
}

// IdleAfter is how long the slot must be quiet before Idle is called.
const IdleAfter = 5 * time.Millisecond

// start opens a replication connection and starts reading the slot. The
// slot is still held for a moment by the sender of a connection that just
// closed (a capture restarted): that is waited out, for up to 10 s.
func (s *Stream) start(ctx context.Context) (*pgconn.PgConn, error) {
	deadline := time.Now().Add(10 * time.Second)
	for {
		conn, err := s.connect(ctx)
		if err != nil {
			return nil, err
		}
		err = pglogrepl.StartReplication(ctx, conn, s.cfg.Slot, 0, pglogrepl.StartReplicationOptions{
			PluginArgs: []string{"proto_version '1'", "publication_names '" + strings.ReplaceAll(s.cfg.Publication, "'", "''") + "'"},
		})
		if err == nil {
			return conn, nil
		}
		conn.Close(context.WithoutCancel(ctx))
		var pgErr *pgconn.PgError
		if !errors.As(err, &pgErr) || pgErr.Code != "55006" || time.Now().After(deadline) {
			return nil, fmt.Errorf("start replication from slot %s: %w", s.cfg.Slot, err)
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(100 * time.Millisecond):
		}
	}
}

// txTracker follows which transaction is open, the end of the last one
// handed over, and whether anything came since the handler was last idle.
type txTracker struct {
	Handler
	inTx   *bool
	handed *pglogrepl.LSN
	dirty  *bool
}

func (t txTracker) Change(ctx context.Context, tx Tx, c Change) error {
	*t.dirty = true
	return t.Handler.Change(ctx, tx, c)
}

func (t txTracker) Begin(ctx context.Context, tx Tx) error {
	*t.inTx = true
	return t.Handler.Begin(ctx, tx)
}

func (t txTracker) Commit(ctx context.Context, tx Tx) error {
	if err := t.Handler.Commit(ctx, tx); err != nil {
		return err
	}
	*t.inTx, *t.handed, *t.dirty = false, tx.EndLSN, true
	return nil
}

// connect opens a replication connection whose values print as the
// trigger capture's do: timestamps in UTC, ISO dates, hex bytea.
func (s *Stream) connect(ctx context.Context) (*pgconn.PgConn, error) {
	cfg, err := pgconn.ParseConfig(s.dsn)
	if err != nil {
		return nil, fmt.Errorf("source DSN: %w", err)
	}
	for k, v := range map[string]string{"replication": "database", "TimeZone": "UTC", "DateStyle": "ISO",
		"IntervalStyle": "postgres", "extra_float_digits": "1", "bytea_output": "hex"} {
		cfg.RuntimeParams[k] = v
	}
	conn, err := pgconn.ConnectConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("open a replication connection to the source: %w", err)
	}
	return conn, nil
}
