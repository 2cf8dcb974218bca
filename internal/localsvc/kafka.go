package localsvc

import (
	"context"
	"fmt"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cdcflow/cdcflow/internal/kafkax"
)

// Kafka is an in-process broker speaking the Kafka protocol.
type Kafka struct {
	Brokers []string
	opts    KafkaOptions

	mu       sync.Mutex
	cluster  *kfake.Cluster
	sessions *sessions
	stop     context.CancelFunc
	closed   bool
}

// KafkaOptions tunes the in-process broker.
type KafkaOptions struct {
	Port   int              // 0 picks a free one
	Topics map[string]int32 // topics to create, name -> partitions
	// DataDir keeps the broker's log and consumer group offsets on disk, so
	// that Restart brings them back; empty keeps them in memory.
	DataDir string
}

// StartKafka starts a one-broker in-process cluster on 127.0.0.1.
func StartKafka(opts KafkaOptions) (*Kafka, error) {
	k := &Kafka{opts: opts, sessions: newSessions()}
	c, err := k.newCluster(true)
	if err != nil {
		return nil, err
	}
	k.cluster, k.Brokers = c, c.ListenAddrs()
	if k.opts.Port == 0 {
		_, port, err := net.SplitHostPort(k.Brokers[0])
		if err != nil {
			c.Close()
			return nil, err
		}
		k.opts.Port, _ = strconv.Atoi(port)
	}
	ctx, stop := context.WithCancel(context.Background())
	k.stop = stop
	go k.sessions.keep(ctx, k.Brokers, k.groupInfo, 250*time.Millisecond)
	return k, nil
}

func (k *Kafka) newCluster(seed bool) (*kfake.Cluster, error) {
	kopts := []kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4),
		kfake.BrokerConfigs(map[string]string{
			"message.max.bytes": strconv.Itoa(kafkax.MaxMessageBytes),
			// The shortest session timeout cdcflow's configuration accepts.
			"group.min.session.timeout.ms": "1000",
		})}
	if k.opts.Port != 0 {
		kopts = append(kopts, kfake.Ports(k.opts.Port))
	}
	if k.opts.DataDir != "" {
		kopts = append(kopts, kfake.DataDir(k.opts.DataDir))
	}
	if seed {
		for name, parts := range k.opts.Topics {
			kopts = append(kopts, kfake.SeedTopics(parts, name))
		}
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, err
	}
	k.sessions.watch(c)
	return c, nil
}

// Restart stops the broker and starts it again on the same port: with a
// DataDir, with its topics, messages and committed offsets.
func (k *Kafka) Restart() error {
	k.mu.Lock()
	defer k.mu.Unlock()
	k.cluster.Close()
	c, err := k.newCluster(k.opts.DataDir == "")
	if err != nil {
		return fmt.Errorf("restart Kafka on port %d: %w", k.opts.Port, err)
	}
	k.cluster = c
	return nil
}

// Close stops the broker.
func (k *Kafka) Close() {
	k.stop()
	k.mu.Lock()
	defer k.mu.Unlock()
	k.closed = true
	k.cluster.Close()
}

// groupInfo describes a group of the running broker; nil once it is closed
// (a closed broker would never answer).
func (k *Kafka) groupInfo(group string) *kfake.GroupInfo {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.closed {
		return nil
	}
	return k.cluster.GroupInfo(group)
}

// Cluster returns the in-process broker, for tests that intercept requests.
func (k *Kafka) Cluster() *kfake.Cluster {
	k.mu.Lock()
	defer k.mu.Unlock()
	return k.cluster
}
