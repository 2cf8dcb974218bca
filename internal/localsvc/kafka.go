package localsvc

import (
	"strconv"

	"github.com/twmb/franz-go/pkg/kfake"

	"github.com/cdcflow/cdcflow/internal/kafkax"
)

// Kafka is an in-process broker speaking the Kafka protocol.
type Kafka struct {
	Brokers []string
	cluster *kfake.Cluster
}

// KafkaOptions tunes the in-process broker.
type KafkaOptions struct {
	Port   int              // 0 picks a free one
	Topics map[string]int32 // topics to create, name -> partitions
}

// StartKafka starts a one-broker in-process cluster on 127.0.0.1.
func StartKafka(opts KafkaOptions) (*Kafka, error) {
	kopts := []kfake.Opt{kfake.NumBrokers(1), kfake.AllowAutoTopicCreation(), kfake.DefaultNumPartitions(4),
		kfake.BrokerConfigs(map[string]string{"message.max.bytes": strconv.Itoa(kafkax.MaxMessageBytes)})}
	if opts.Port != 0 {
		kopts = append(kopts, kfake.Ports(opts.Port))
	}
	for name, parts := range opts.Topics {
		kopts = append(kopts, kfake.SeedTopics(parts, name))
	}
	c, err := kfake.NewCluster(kopts...)
	if err != nil {
		return nil, err
	}
	return &Kafka{Brokers: c.ListenAddrs(), cluster: c}, nil
}

// Close stops the broker.
func (k *Kafka) Close() { k.cluster.Close() }

// Cluster returns the in-process broker, for tests that intercept requests.
func (k *Kafka) Cluster() *kfake.Cluster { return k.cluster }
