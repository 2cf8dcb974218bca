package metrics

import (
	"context"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Capture holds capture's instruments. A nil *Capture records nothing.
type Capture struct {
	changes      metric.Int64Counter
	errors       metric.Int64Counter
	outboxRows   metric.Int64Gauge
	outboxDelay  metric.Float64Gauge
	slotLag      metric.Int64Gauge
	slotDelay    metric.Float64Gauge
	mu           sync.RWMutex
	tableOptions map[string]metric.AddOption // the table attribute of each table, made once
}

// NewCapture creates capture's instruments for the tables it captures.
func NewCapture(mp metric.MeterProvider, tables []string) (*Capture, error) {
	m := mp.Meter("cdcflow")
	c := &Capture{tableOptions: make(map[string]metric.AddOption, len(tables))}
	var err error
	if c.changes, err = m.Int64Counter("cdcflow.capture.changes", metric.WithUnit("{change}"),
		metric.WithDescription("Changes published to Kafka and acknowledged, by table (a change too large to publish counts: its mark was published).")); err != nil {
		return nil, err
	}
	if c.errors, err = m.Int64Counter("cdcflow.capture.publish.errors", metric.WithUnit("{error}"),
		metric.WithDescription("Kafka writes that failed; capture writes them again.")); err != nil {
		return nil, err
	}
	if c.outboxRows, err = m.Int64Gauge("cdcflow.capture.outbox.rows", metric.WithUnit("{row}"),
		metric.WithDescription("Trigger mode: changes in the source's outbox not yet published, at the last report.")); err != nil {
		return nil, err
	}
	if c.outboxDelay, err = m.Float64Gauge("cdcflow.capture.outbox.delay", metric.WithUnit("s"),
		metric.WithDescription("Trigger mode: age of the oldest change in the outbox (0 when empty), at the last report.")); err != nil {
		return nil, err
	}
	if c.slotLag, err = m.Int64Gauge("cdcflow.capture.slot.lag", metric.WithUnit("By"),
		metric.WithDescription("Logical mode: source log written since the replication slot's confirmed position, which the source keeps for it, at the last report.")); err != nil {
		return nil, err
	}
	if c.slotDelay, err = m.Float64Gauge("cdcflow.capture.slot.delay", metric.WithUnit("s"),
		metric.WithDescription("Logical mode: how long ago the oldest change read and not yet confirmed was committed (0 when none), at the last report.")); err != nil {
		return nil, err
	}
	for _, t := range tables {
		c.tableOptions[t] = metric.WithAttributeSet(attribute.NewSet(attribute.String("table", t)))
		c.changes.Add(context.Background(), 0, c.tableOptions[t])
	}
	c.errors.Add(context.Background(), 0)
	return c, nil
}

// table returns the attribute option of table, made once.
func (c *Capture) table(table string) metric.AddOption {
	c.mu.RLock()
	o, ok := c.tableOptions[table]
	c.mu.RUnlock()
	if ok {
		return o
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	if o, ok = c.tableOptions[table]; !ok {
		o = metric.WithAttributeSet(attribute.NewSet(attribute.String("table", table)))
		c.tableOptions[table] = o
	}
	return o
}

// Published counts n changes of table published.
func (c *Capture) Published(ctx context.Context, table string, n int) {
	if c != nil && n > 0 {
		c.changes.Add(ctx, int64(n), c.table(table))
	}
}

// PublishError counts one failed Kafka write.
func (c *Capture) PublishError(ctx context.Context) {
	if c != nil {
		c.errors.Add(ctx, 1)
	}
}

// Outbox records the outbox backlog: its rows and the age of the oldest.
func (c *Capture) Outbox(ctx context.Context, rows int64, oldest time.Duration) {
	if c != nil {
		c.outboxRows.Record(ctx, rows)
		c.outboxDelay.Record(ctx, oldest.Seconds())
	}
}

// Slot records the replication slot's lag, in bytes of log and in seconds.
func (c *Capture) Slot(ctx context.Context, lagBytes int64, lagSeconds float64) {
	if c != nil {
		c.slotLag.Record(ctx, lagBytes)
		c.slotDelay.Record(ctx, lagSeconds)
	}
}
