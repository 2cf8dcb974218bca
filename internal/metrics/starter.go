package metrics

import (
	"context"
	"strconv"
	"sync"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

// Starter holds the starter's instruments. A nil *Starter records nothing.
type Starter struct {
	started     metric.Int64Counter
	existing    metric.Int64Counter
	messages    metric.Int64Counter
	redelivered metric.Int64Counter
	poison      metric.Int64Counter
	start       metric.Float64Histogram
	reg         metric.Registration
	mu          sync.Mutex
	partitions  map[int]metric.ObserveOption // the partition attribute of each partition, made once
}

// Partitions reports, for each partition a starter reads, its consumer lag
// (messages: the partition's high watermark minus the next offset to read)
// and its batch workflows running.
type Partitions func(ctx context.Context, report func(partition int, lag, inFlight int64))

// NewStarter creates the starter's instruments; partitions is asked for
// the per-partition gauges when they are collected.
func NewStarter(mp metric.MeterProvider, partitions Partitions) (*Starter, error) {
	m := mp.Meter("cdcflow")
	s := &Starter{partitions: map[int]metric.ObserveOption{}}
	var err error
	for _, c := range []struct {
		c           *metric.Int64Counter
		name, unit  string
		description string
	}{
		{&s.started, "cdcflow.starter.batches.started", "{batch}", "Batch workflows started."},
		{&s.existing, "cdcflow.starter.batches.existing", "{batch}",
			"Batches whose workflow existed already: read again (after a restart or a rebalance) and not started twice."},
		{&s.messages, "cdcflow.starter.messages", "{message}", "Messages in batches started or found existing."},
		{&s.redelivered, "cdcflow.starter.messages.redelivered", "{message}", "Messages in batches whose workflow existed already."},
		{&s.poison, "cdcflow.starter.messages.poison", "{message}", "Messages that are not change events, passed on to be parked."},
	} {
		if *c.c, err = m.Int64Counter(c.name, metric.WithUnit(c.unit), metric.WithDescription(c.description)); err != nil {
			return nil, err
		}
		(*c.c).Add(context.Background(), 0)
	}
	if s.start, err = m.Float64Histogram("cdcflow.starter.start.duration", metric.WithUnit("s"),
		metric.WithExplicitBucketBoundaries(DurationBuckets...),
		metric.WithDescription("Time to start a batch's workflow: from the first start request until Temporal accepted it or answered that it exists, retries included.")); err != nil {
		return nil, err
	}
	lag, err := m.Int64ObservableGauge("cdcflow.starter.consumer.lag", metric.WithUnit("{message}"),
		metric.WithDescription("Messages of a partition not yet read by this starter: the high watermark minus the next offset to read, by partition."))
	if err != nil {
		return nil, err
	}
	inFlight, err := m.Int64ObservableGauge("cdcflow.starter.batches.in_flight", metric.WithUnit("{batch}"),
		metric.WithDescription("Batch workflows of a partition started and not yet closed, by partition."))
	if err != nil {
		return nil, err
	}
	s.reg, err = m.RegisterCallback(func(ctx context.Context, o metric.Observer) error {
		partitions(ctx, func(partition int, l, n int64) {
			attr := s.partition(partition)
			o.ObserveInt64(lag, l, attr)
			o.ObserveInt64(inFlight, n, attr)
		})
		return nil
	}, lag, inFlight)
	if err != nil {
		return nil, err
	}
	return s, nil
}

func (s *Starter) partition(p int) metric.ObserveOption {
	s.mu.Lock()
	defer s.mu.Unlock()
	o, ok := s.partitions[p]
	if !ok {
		o = metric.WithAttributeSet(attribute.NewSet(attribute.String("partition", strconv.Itoa(p))))
		s.partitions[p] = o
	}
	return o
}

// Started counts a batch of messages (poison among them) whose workflow
// was started (existed false) or existed already, and records how long
// the start took.
func (s *Starter) Started(ctx context.Context, existed bool, messages, poison int, took time.Duration) {
	if s == nil {
		return
	}
	s.start.Record(ctx, took.Seconds())
	s.messages.Add(ctx, int64(messages))
	if poison > 0 {
		s.poison.Add(ctx, int64(poison))
	}
	if existed {
		s.existing.Add(ctx, 1)
		s.redelivered.Add(ctx, int64(messages))
		return
	}
	s.started.Add(ctx, 1)
}

// Skipped counts messages passed over without a workflow (chunks of
// abandoned runs).
func (s *Starter) Skipped(ctx context.Context, messages int) {
	if s != nil && messages > 0 {
		s.messages.Add(ctx, int64(messages))
	}
}
