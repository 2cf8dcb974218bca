// Package kafkax is everything cdcflow's programs share about Kafka: the
// connection settings each program's configuration embeds, the one writer
// constructor, the message key of a change, and the message size limit.
package kafkax

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"strings"
	"time"

	"github.com/segmentio/kafka-go"

	"github.com/cdcflow/cdcflow/internal/event"
)

// Conn locates the Kafka cluster and the change topic, and says how to
// connect (Security). Programs embed it in their configuration.
type Conn struct {
	Brokers []string `envconfig:"KAFKA_BROKERS" default:"127.0.0.1:9092" desc:"comma-separated Kafka bootstrap brokers"`
	Topic   string   `envconfig:"CDCFLOW_TOPIC" default:"cdcflow.changes" desc:"Kafka topic of change events"`
	Security
}

// Validate reports a missing broker list or topic, or a wrong security
// setting (see Security.Validate), naming the variable.
func (c Conn) Validate() (variable string, err error) {
	switch {
	case len(c.Brokers) == 0:
		return "KAFKA_BROKERS", errors.New("want at least one host:port")
	case c.Topic == "":
		return "CDCFLOW_TOPIC", errors.New("want a topic name")
	}
	return c.Security.Validate()
}

// MaxMessageBytes is the size topics must accept (max.message.bytes, and
// the brokers' message.max.bytes): room for the largest change event,
// event.MaxEventBytes, in a record batch with its overhead.
const MaxMessageBytes = 2 << 20

// writerBatchBytes bounds what a writer puts in one record batch: one event
// of the largest size fits, and the batch stays below MaxMessageBytes.
const writerBatchBytes = event.MaxEventBytes + 64<<10

// WriterOptions tunes NewWriter.
type WriterOptions struct {
	// BatchSize is how many messages go in one produce request (default 100).
	BatchSize int
	// AutoCreateTopic lets the first write create the topic where the broker
	// allows it.
	AutoCreateTopic bool
}

// NewWriter returns a writer to topic of the cluster at brokers, reached
// without TLS nor SASL; see Cluster.Writer.
func NewWriter(brokers []string, topic string, opts WriterOptions) *kafka.Writer {
	return Plain(brokers).Writer(topic, opts)
}

// Writer returns a writer to topic that waits for acknowledgements from
// all in-sync replicas, sends what it is given at once rather than lingering,
// and routes messages by key hash so that all changes of a row share a
// partition.
func (c *Cluster) Writer(topic string, opts WriterOptions) *kafka.Writer {
	return &kafka.Writer{
		Addr:                   kafka.TCP(c.Brokers...),
		Transport:              c.Transport,
		Topic:                  topic,
		Balancer:               &kafka.Hash{},
		RequiredAcks:           kafka.RequireAll,
		BatchSize:              opts.BatchSize,
		BatchBytes:             writerBatchBytes,
		BatchTimeout:           time.Millisecond, // callers hand over whole batches
		AllowAutoTopicCreation: opts.AutoCreateTopic,
	}
}

// Key is the message key of a change to the row of table with the given
// primary key (its JSON object): every change of one row gets the same key,
// and so lands in one partition, in order.
func Key(table string, key []byte) []byte {
	k := make([]byte, 0, len(table)+1+len(key))
	k = append(k, table...)
	k = append(k, ':')
	return append(k, key...)
}

// Message returns the Kafka message of an encoded change event.
func Message(ev event.Event, value []byte) kafka.Message {
	return kafka.Message{Key: Key(ev.Table, ev.Key), Value: value}
}

// CreateTopics creates topics (name -> partitions) with replication factor 1
// and room for the largest message, through the controller of the cluster
// at brokers, reached without TLS nor SASL; see Cluster.CreateTopics.
func CreateTopics(ctx context.Context, brokers []string, topics map[string]int32) error {
	return Plain(brokers).CreateTopics(ctx, topics)
}

// CreateTopics creates topics (name -> partitions) with replication factor 1
// and room for the largest message, through the cluster's controller.
func (c *Cluster) CreateTopics(ctx context.Context, topics map[string]int32) error {
	brokers := c.Brokers
	conn, err := c.Dialer.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return fmt.Errorf("connect to Kafka at %s: %w", brokers[0], err)
	}
	defer conn.Close()
	ctrl, err := conn.Controller()
	if err != nil {
		return fmt.Errorf("find the Kafka controller: %w", err)
	}
	cc, err := c.Dialer.DialContext(ctx, "tcp", net.JoinHostPort(ctrl.Host, strconv.Itoa(ctrl.Port)))
	if err != nil {
		return fmt.Errorf("connect to the Kafka controller: %w", err)
	}
	defer cc.Close()
	var cfgs []kafka.TopicConfig
	for name, parts := range topics {
		cfgs = append(cfgs, kafka.TopicConfig{Topic: name, NumPartitions: int(parts), ReplicationFactor: 1,
			ConfigEntries: []kafka.ConfigEntry{{ConfigName: "max.message.bytes", ConfigValue: strconv.Itoa(MaxMessageBytes)}}})
	}
	if err := cc.CreateTopics(cfgs...); err != nil {
		return fmt.Errorf("create topics: %w", err)
	}
	return nil
}

// LastMessages returns up to n of the newest messages of each partition of
// topic of the cluster at brokers, reached without TLS nor SASL; see
// Cluster.LastMessages.
func LastMessages(ctx context.Context, brokers []string, topic string, n int) ([]kafka.Message, error) {
	return Plain(brokers).LastMessages(ctx, topic, n)
}

// LastMessages returns up to n of the newest messages of each partition of
// topic: none when the topic does not exist.
func (c *Cluster) LastMessages(ctx context.Context, topic string, n int) ([]kafka.Message, error) {
	brokers := c.Brokers
	conn, err := c.Dialer.DialContext(ctx, "tcp", brokers[0])
	if err != nil {
		return nil, fmt.Errorf("connect to Kafka at %s: %w", brokers[0], err)
	}
	defer conn.Close()
	parts, err := conn.ReadPartitions(topic)
	if errors.Is(err, kafka.UnknownTopicOrPartition) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("read partitions of %s: %w", topic, err)
	}
	var out []kafka.Message
	for _, p := range parts {
		msgs, err := c.lastOfPartition(ctx, brokers[0], topic, p.ID, n)
		if err != nil {
			return nil, err
		}
		out = append(out, msgs...)
	}
	return out, nil
}

func (c *Cluster) lastOfPartition(ctx context.Context, broker, topic string, partition, n int) ([]kafka.Message, error) {
	conn, err := c.Dialer.DialLeader(ctx, "tcp", broker, topic, partition)
	if err != nil {
		return nil, fmt.Errorf("connect to the leader of %s[%d]: %w", topic, partition, err)
	}
	defer conn.Close()
	if deadline, ok := ctx.Deadline(); ok {
		_ = conn.SetDeadline(deadline)
	}
	first, last, err := conn.ReadOffsets()
	if err != nil {
		return nil, fmt.Errorf("read offsets of %s[%d]: %w", topic, partition, err)
	}
	from := max(first, last-int64(n))
	if from >= last {
		return nil, nil
	}
	if _, err := conn.Seek(from, kafka.SeekAbsolute); err != nil {
		return nil, fmt.Errorf("seek %s[%d] to %d: %w", topic, partition, from, err)
	}
	var out []kafka.Message
	for {
		m, err := conn.ReadMessage(2 * MaxMessageBytes)
		if err != nil {
			return nil, fmt.Errorf("read %s[%d]: %w", topic, partition, err)
		}
		if m.Offset >= from {
			out = append(out, m)
		}
		if m.Offset >= last-1 {
			return out, nil
		}
	}
}

// Ping asks the brokers, reached without TLS nor SASL, for topic's
// metadata; see Cluster.Ping.
func Ping(ctx context.Context, brokers []string, topic string) error {
	return Plain(brokers).Ping(ctx, topic)
}

// Ping asks the brokers for topic's metadata: an error when none answers,
// or the topic is not there.
func (c *Cluster) Ping(ctx context.Context, topic string) error {
	kc := &kafka.Client{Addr: kafka.TCP(c.Brokers...), Timeout: 5 * time.Second, Transport: c.Transport}
	md, err := kc.Metadata(ctx, &kafka.MetadataRequest{Topics: []string{topic}})
	if err != nil {
		return fmt.Errorf("ask Kafka at %s for topic %s: %w", strings.Join(c.Brokers, ","), topic, err)
	}
	for _, t := range md.Topics {
		if t.Name == topic && t.Error != nil {
			return fmt.Errorf("topic %s: %w", topic, t.Error)
		}
	}
	return nil
}
