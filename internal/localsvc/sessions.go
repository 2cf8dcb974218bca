package localsvc

import (
	"context"
	"sync"
	"time"

	"github.com/segmentio/kafka-go"
	"github.com/twmb/franz-go/pkg/kfake"
	"github.com/twmb/franz-go/pkg/kmsg"
)

// sessions ends the sessions of consumer group members that the
// in-process broker keeps past their timeout. The broker arms a member's
// session timer when it writes the member's join response, and drops that
// response (and the timer with it) when the member's connection has
// closed: a consumer that dies while its JoinGroup waits for a rebalance
// can stay in the group, holding its partitions, until the next rebalance,
// which may never come. A real broker starts every member's session when
// the join completes, whether or not the response arrives.
//
// sessions watches the group requests (each is a sign of life, as a
// heartbeat is) and makes every member of a stable group not heard from
// for the group's session timeout leave, which rebalances the group as the
// broker's own expiry would. A rebalance restarts every member's session,
// as on a real broker: a member counts as heard from at the latest
// JoinGroup or SyncGroup of its group, or when sessions first saw it.
type sessions struct {
	mu     sync.Mutex
	groups map[string]*groupSessions
}

type groupSessions struct {
	timeout time.Duration        // the longest session timeout its members asked for
	settled time.Time            // its latest JoinGroup or SyncGroup
	heard   map[string]time.Time // member ID -> when it was last heard from
}

func newSessions() *sessions { return &sessions{groups: map[string]*groupSessions{}} }

// watch has the cluster report its group requests to s.
func (s *sessions) watch(c *kfake.Cluster) {
	for _, key := range []kmsg.Key{kmsg.JoinGroup, kmsg.SyncGroup, kmsg.Heartbeat, kmsg.OffsetCommit} {
		c.ControlKey(key.Int16(), func(r kmsg.Request) (kmsg.Response, error, bool) {
			s.heard(r, time.Now())
			return nil, nil, false // observe only: the broker handles it
		})
	}
}

func (s *sessions) heard(r kmsg.Request, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var g *groupSessions
	var member string
	switch r := r.(type) {
	case *kmsg.JoinGroupRequest:
		g, member = s.group(r.Group), r.MemberID
		g.settled = at
		g.timeout = max(g.timeout, time.Duration(r.SessionTimeoutMillis)*time.Millisecond)
	case *kmsg.SyncGroupRequest:
		g, member = s.group(r.Group), r.MemberID
		g.settled = at
	case *kmsg.HeartbeatRequest:
		g, member = s.group(r.Group), r.MemberID
	case *kmsg.OffsetCommitRequest:
		g, member = s.group(r.Group), r.MemberID
	default:
		return
	}
	if member != "" {
		g.heard[member] = at
	}
}

func (s *sessions) group(name string) *groupSessions {
	g := s.groups[name]
	if g == nil {
		g = &groupSessions{heard: map[string]time.Time{}}
		s.groups[name] = g
	}
	return g
}

// expired returns, by group, the members of stable groups whose session
// has run out, and forgets the members no longer in their group.
func (s *sessions) expired(describe func(group string) *kfake.GroupInfo, now time.Time) map[string][]string {
	s.mu.Lock()
	names := make([]string, 0, len(s.groups))
	for name := range s.groups {
		names = append(names, name)
	}
	s.mu.Unlock()
	out := map[string][]string{}
	for _, name := range names {
		info := describe(name) // outside s.mu: the broker's loop may be reporting a request to s
		s.mu.Lock()
		g := s.groups[name]
		in := map[string]bool{}
		for _, m := range infoMembers(info) {
			in[m.MemberID] = true
			heard, ok := g.heard[m.MemberID]
			if !ok {
				g.heard[m.MemberID] = now // first seen: a join whose request did not name it
				continue
			}
			if g.settled.After(heard) {
				heard = g.settled
			}
			if info.State == "Stable" && g.timeout > 0 && now.Sub(heard) > g.timeout {
				out[name] = append(out[name], m.MemberID)
			}
		}
		for id := range g.heard {
			if !in[id] {
				delete(g.heard, id)
			}
		}
		s.mu.Unlock()
	}
	return out
}

func infoMembers(info *kfake.GroupInfo) []kfake.GroupMember {
	if info == nil {
		return nil
	}
	return info.Members
}

// keep ends expired sessions every interval until ctx is done; describe
// asks the broker running now (a restart replaces it).
func (s *sessions) keep(ctx context.Context, brokers []string, describe func(group string) *kfake.GroupInfo, interval time.Duration) {
	client := &kafka.Client{Addr: kafka.TCP(brokers...), Timeout: 5 * time.Second}
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		for group, ids := range s.expired(describe, time.Now()) {
			req := &kafka.LeaveGroupRequest{GroupID: group}
			for _, id := range ids {
				req.Members = append(req.Members, kafka.LeaveGroupRequestMember{ID: id})
			}
			// A failure (the broker restarting) is tried again at the next tick.
			_, _ = client.LeaveGroup(ctx, req)
		}
	}
}
