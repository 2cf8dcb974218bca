package localsvc

import (
	"context"
	"errors"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// TestKafkaExpiresMembersThatDiedWhileJoining: a consumer that dies while
// its JoinGroup waits for a rebalance leaves the group after its session
// timeout, as on a real broker, and its partitions go back to the live
// member. The in-process broker on its own drops, about one time in two,
// the session of a member whose join response finds its connection closed,
// and that member then holds its partitions for good; so the test lets a
// member die this way several times over.
func TestKafkaExpiresMembersThatDiedWhileJoining(t *testing.T) {
	const (
		topic, group = "changes", "starters"
		partitions   = 4
		rounds       = 6
		session      = time.Second
	)
	k, err := StartKafka(KafkaOptions{Topics: map[string]int32{topic: partitions}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(k.Close)

	newMember := func(rebalance time.Duration, dialer *kafka.Dialer) *kafka.ConsumerGroup {
		g, err := kafka.NewConsumerGroup(kafka.ConsumerGroupConfig{
			ID: group, Brokers: k.Brokers, Topics: []string{topic}, Dialer: dialer,
			HeartbeatInterval: 100 * time.Millisecond, SessionTimeout: session, RebalanceTimeout: rebalance,
			JoinGroupBackoff: 100 * time.Millisecond,
		})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { g.Close() })
		return g
	}
	live := newMember(10*time.Second, nil)
	holdsAll := func(round int) {
		ctx, cancel := context.WithTimeout(t.Context(), 10*session)
		defer cancel()
		for {
			gen, err := live.Next(ctx)
			if ctx.Err() != nil {
				t.Fatalf("round %d: the live member did not get all %d partitions back; the group: %+v", round, partitions, k.Cluster().GroupInfo(group))
			}
			if err == nil && len(gen.Assignments[topic]) == partitions {
				return
			}
		}
	}
	holdsAll(0)

	// The dying member of each round is told apart by its rebalance
	// timeout; its connections are cut the moment its JoinGroup reaches
	// the broker, so that the join response finds them closed.
	links := make([]*cuttable, rounds)
	for i := range links {
		links[i] = &cuttable{}
	}
	k.Cluster().ControlKey(kmsg.JoinGroup.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
		if i := int(r.(*kmsg.JoinGroupRequest).RebalanceTimeoutMillis) - 2000; i >= 0 && i < rounds {
			links[i].cut()
		}
		return nil, nil, false
	})
	for round := range rounds {
		go newMember(time.Duration(2000+round)*time.Millisecond, &kafka.Dialer{DialFunc: links[round].dial}).Next(t.Context())
		holdsAll(round + 1)
	}
}

// cuttable dials connections until cut, then closes them and refuses more,
// as if the process behind them had died.
type cuttable struct {
	mu    sync.Mutex
	conns []net.Conn
	dead  bool
}

func (c *cuttable) dial(ctx context.Context, network, address string) (net.Conn, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.dead {
		return nil, errors.New("cut")
	}
	conn, err := (&net.Dialer{}).DialContext(ctx, network, address)
	if err == nil {
		c.conns = append(c.conns, conn)
	}
	return conn, err
}

func (c *cuttable) cut() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.dead = true
	for _, conn := range c.conns {
		conn.Close()
	}
}
