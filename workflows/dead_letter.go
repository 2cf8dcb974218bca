package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdcflow/cdcflow/activities"
	"github.com/cdcflow/cdcflow/internal/applier"
)

// DeadLetterName is the registered name of the DeadLetter workflow.
const DeadLetterName = "DeadLetter"

// Signal, update and query names of the DeadLetter workflow.
const (
	// SignalReplay re-applies the parked change; its optional payload is a
	// ReplayRequest.
	SignalReplay = "replay"
	// SignalDiscard gives the change up; its payload is a DiscardRequest.
	SignalDiscard = "discard"
	// UpdateReplay replays with a corrected row image, validated before it is
	// accepted, and returns the status after the attempt.
	UpdateReplay = "replay-corrected"
	// QueryStatus returns a DeadLetterStatus.
	QueryStatus = "status"
)

// States of a parked change.
const (
	StatusParked    = "parked"
	StatusReplayed  = "replayed"
	StatusDiscarded = "discarded"
)

// Search attributes of DeadLetter workflows. The server must know them:
// `temporal operator search-attribute create --name CdcTable --type Keyword`
// and likewise for the other two (the dev server of `make run` and the
// tests registers them).
var (
	SearchTable      = temporal.NewSearchAttributeKeyKeyword("CdcTable")
	SearchErrorClass = temporal.NewSearchAttributeKeyKeyword("CdcErrorClass")
	SearchStatus     = temporal.NewSearchAttributeKeyKeyword("CdcStatus")
)

// SearchAttributes lists the search attributes cdcflow uses, name -> type.
var SearchAttributes = map[string]string{"CdcTable": "Keyword", "CdcErrorClass": "Keyword", "CdcStatus": "Keyword"}

// DeadLetterInput starts a DeadLetter workflow.
type DeadLetterInput struct {
	Record activities.DeadLetter `json:"record"`
}

// ReplayRequest is the payload of a replay: empty to apply the change as it
// was, or with After, a complete corrected row image.
type ReplayRequest struct {
	After json.RawMessage `json:"after,omitempty"`
}

// DiscardRequest is the payload of a discard.
type DiscardRequest struct {
	Reason string `json:"reason"`
}

// Decision is one thing a person asked of a parked change, and what came of it.
type Decision struct {
	At        time.Time `json:"at"`
	Action    string    `json:"action"` // replay, discard, or rejected for an unusable request
	Corrected bool      `json:"corrected,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Outcome   string    `json:"outcome,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// DeadLetterStatus is the answer to the status query and the workflow's
// result: the parked change as recorded, kept up to date by failed replays,
// with its state and the decisions taken on it.
type DeadLetterStatus struct {
	activities.DeadLetter
	State     string          `json:"state"`
	Event     json.RawMessage `json:"event,omitempty"` // the change, when it is JSON (Message is then empty)
	Decisions []Decision      `json:"decisions"`
}

// DeadLetter holds one parked change until a person replays or discards it.
func DeadLetter(ctx workflow.Context, in DeadLetterInput) (DeadLetterStatus, error) {
	ctx = localActivities(ctx)
	rec := in.Record
	st := DeadLetterStatus{DeadLetter: rec, State: StatusParked, Decisions: []Decision{}}
	if json.Valid(rec.Message) { //workflowcheck:ignore parsing bytes is deterministic
		st.Event, st.Message = json.RawMessage(rec.Message), nil
	}
	if err := workflow.SetQueryHandler(ctx, QueryStatus, func() (DeadLetterStatus, error) { return st, nil }); err != nil {
		return st, err
	}

	requests := workflow.NewChannel(ctx) // replays asked for by update
	err := workflow.SetUpdateHandlerWithOptions(ctx, UpdateReplay,
		func(ctx workflow.Context, req ReplayRequest) (DeadLetterStatus, error) {
			n := len(st.Decisions)
			requests.Send(ctx, req)
			if err := workflow.Await(ctx, func() bool { return len(st.Decisions) > n }); err != nil {
				return st, err
			}
			return st, nil
		},
		workflow.UpdateHandlerOptions{Validator: func(req ReplayRequest) error {
			if st.State != StatusParked {
				return fmt.Errorf("dead letter %s is %s already", st.ID, st.State)
			}
			return checkRowImage(req.After)
		}})
	if err != nil {
		return st, err
	}

	replays := workflow.GetSignalChannel(ctx, SignalReplay)
	discards := workflow.GetSignalChannel(ctx, SignalDiscard)
	for st.State == StatusParked {
		var replay *ReplayRequest
		sel := workflow.NewSelector(ctx)
		sel.AddReceive(replays, func(c workflow.ReceiveChannel, _ bool) {
			var raw json.RawMessage
			c.Receive(ctx, &raw)
			req, err := parseReplay(raw)
			if err != nil {
				st.Decisions = append(st.Decisions, Decision{At: workflow.Now(ctx), Action: "rejected", Error: err.Error()})
				return
			}
			replay = &req
		})
		sel.AddReceive(requests, func(c workflow.ReceiveChannel, _ bool) {
			var req ReplayRequest
			c.Receive(ctx, &req)
			replay = &req
		})
		sel.AddReceive(discards, func(c workflow.ReceiveChannel, _ bool) {
			var raw json.RawMessage
			c.Receive(ctx, &raw)
			req, err := parseDiscard(raw)
			if err != nil {
				st.Decisions = append(st.Decisions, Decision{At: workflow.Now(ctx), Action: "rejected", Error: err.Error()})
				return
			}
			st.State = StatusDiscarded
			st.Decisions = append(st.Decisions, Decision{At: workflow.Now(ctx), Action: SignalDiscard, Reason: req.Reason})
		})
		sel.Select(ctx)
		if replay != nil {
			doReplay(ctx, &st, rec, *replay)
		}
	}

	last := st.Decisions[len(st.Decisions)-1]
	decision := last.Reason
	if st.State == StatusReplayed {
		decision = last.Outcome
	}
	if err := workflow.ExecuteLocalActivity(ctx, activities.SettleName, rec.ID, st.State, decision).Get(ctx, nil); err != nil {
		return st, err
	}
	if err := workflow.UpsertTypedSearchAttributes(ctx, SearchStatus.ValueSet(st.State)); err != nil {
		return st, err
	}
	// Let an update that asked for the last replay return before completing.
	if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
		return st, err
	}
	return st, nil
}

// doReplay applies the parked change once more and records what happened.
func doReplay(ctx workflow.Context, st *DeadLetterStatus, rec activities.DeadLetter, req ReplayRequest) {
	d := Decision{At: workflow.Now(ctx), Action: SignalReplay, Corrected: req.After != nil}
	var res applier.Result
	err := workflow.ExecuteLocalActivity(ctx, activities.ReplayEventName,
		activities.ReplayRequest{Message: rec.Message, After: req.After}).Get(ctx, &res)
	if err != nil {
		var appErr *temporal.ApplicationError
		d.Error = err.Error()
		if errors.As(err, &appErr) {
			d.Error = appErr.Message()
			st.ErrorClass = appErr.Type()
		}
		st.Error, st.LastFailure = d.Error, workflow.Now(ctx)
		st.Attempts++
		st.Decisions = append(st.Decisions, d)
		return
	}
	switch {
	case res.Applied > 0:
		d.Outcome = "applied"
	case res.Superseded > 0:
		d.Outcome = "superseded: the row already holds a newer change"
	default:
		d.Outcome = "duplicate: the change was applied before"
	}
	st.State = StatusReplayed
	st.Decisions = append(st.Decisions, d)
}

func parseReplay(raw json.RawMessage) (ReplayRequest, error) {
	var req ReplayRequest
	if len(raw) == 0 || string(raw) == "null" {
		return req, nil
	}
	if err := strictJSON(raw, &req); err != nil {
		return req, fmt.Errorf("replay payload: want {} or {\"after\": {...}}: %v", err)
	}
	return req, checkRowImage(req.After)
}

func parseDiscard(raw json.RawMessage) (DiscardRequest, error) {
	var req DiscardRequest
	if err := strictJSON(raw, &req); err != nil {
		return req, fmt.Errorf("discard payload: want {\"reason\": \"...\"}: %v", err)
	}
	if strings.TrimSpace(req.Reason) == "" {
		return req, errors.New(`discard payload: a reason is required: {"reason": "..."}`)
	}
	return req, nil
}

// checkRowImage accepts no image, or a JSON object with at least one column.
// (workflowcheck flags encoding/json because reflection reaches runtime
// internals; parsing bytes is deterministic.)
//
//workflowcheck:ignore
func checkRowImage(after json.RawMessage) error {
	if after == nil {
		return nil
	}
	var cols map[string]json.RawMessage
	if err := json.Unmarshal(after, &cols); err != nil {
		return fmt.Errorf("after: want a JSON object of column values")
	}
	if len(cols) == 0 {
		return errors.New("after: has no columns")
	}
	return nil
}

// strictJSON decodes raw into v, refusing unknown fields.
//
//workflowcheck:ignore
func strictJSON(raw json.RawMessage, v any) error {
	if len(raw) == 0 {
		return errors.New("no payload")
	}
	dec := json.NewDecoder(strings.NewReader(string(raw)))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}
