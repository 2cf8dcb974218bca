package workflows

import (
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"go.temporal.io/sdk/temporal"
	"go.temporal.io/sdk/workflow"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/event"
)

// DeadLetter holds one parked change until a person replays or discards it:
// by the replay and discard signals, or the replay-corrected update. It
// answers the status query all along, and returns the final status.
func DeadLetter(ctx workflow.Context, in cdc.DeadLetterInput) (cdc.DeadLetterStatus, error) {
	d := newDeadLetter(ctx, in.Record)
	if err := d.register(ctx); err != nil {
		return d.status, err
	}
	if err := workflow.Await(ctx, d.decided); err != nil {
		return d.status, err
	}
	if err := d.settle(ctx); err != nil {
		return d.status, err
	}
	// Let an update waiting on the decision return before completing.
	if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
		return d.status, err
	}
	return d.status, nil
}

// deadLetter is the state of one DeadLetter run. Every request takes lock
// before it looks at the state, so a replay by signal and one by update, or
// a replay and a discard, never interleave: the second sees what the first
// decided.
type deadLetter struct {
	record  cdc.DeadLetterRecord
	status  cdc.DeadLetterStatus
	outcome string // what Settle records: the discard reason, or what the replay did
	lock    workflow.Mutex
}

func newDeadLetter(ctx workflow.Context, rec cdc.DeadLetterRecord) *deadLetter {
	st := cdc.DeadLetterStatus{DeadLetterRecord: rec, State: cdc.StateParked, Decisions: []cdc.Decision{}}
	if json.Valid(rec.Message) { //workflowcheck:ignore parsing bytes is deterministic
		st.Event, st.Message = json.RawMessage(rec.Message), nil
	}
	return &deadLetter{record: rec, status: st, lock: workflow.NewMutex(ctx)}
}

func (d *deadLetter) decided() bool { return d.status.State != cdc.StateParked }

// register installs the query and update handlers and the signal receivers.
func (d *deadLetter) register(ctx workflow.Context) error {
	if err := workflow.SetQueryHandler(ctx, cdc.QueryStatus, d.query); err != nil {
		return err
	}
	err := workflow.SetUpdateHandlerWithOptions(ctx, cdc.UpdateReplayCorrected, d.replayCorrected,
		workflow.UpdateHandlerOptions{Validator: d.validateReplayCorrected})
	if err != nil {
		return err
	}
	workflow.Go(ctx, func(ctx workflow.Context) { d.receive(ctx, cdc.SignalReplay, d.replaySignal) })
	workflow.Go(ctx, func(ctx workflow.Context) { d.receive(ctx, cdc.SignalDiscard, d.discardSignal) })
	return nil
}

// receive hands every payload of the signal name to handle, in order.
func (d *deadLetter) receive(ctx workflow.Context, name string, handle func(workflow.Context, json.RawMessage)) {
	ch := workflow.GetSignalChannel(ctx, name)
	for {
		var raw json.RawMessage
		ch.Receive(ctx, &raw)
		handle(ctx, raw)
	}
}

func (d *deadLetter) query() (cdc.DeadLetterStatus, error) { return d.status, nil }

// replaySignal replays the change as it was, or with the payload's corrected
// row image.
func (d *deadLetter) replaySignal(ctx workflow.Context, raw json.RawMessage) {
	req, err := parseReplay(raw)
	if err == nil {
		err = d.checkCorrection(req.After)
	}
	d.decide(ctx, err, func() { d.replay(ctx, req) })
}

// discardSignal gives the change up, for the payload's reason.
func (d *deadLetter) discardSignal(ctx workflow.Context, raw json.RawMessage) {
	req, err := parseDiscard(raw)
	d.decide(ctx, err, func() {
		d.status.State, d.outcome = cdc.StateDiscarded, req.Reason
		d.status.Decisions = append(d.status.Decisions, cdc.Decision{At: workflow.Now(ctx), Action: cdc.ActionDiscard, Reason: req.Reason})
	})
}

// decide runs act under the lock, unless the request was malformed (invalid)
// or the change is decided already: such a request is recorded as rejected.
func (d *deadLetter) decide(ctx workflow.Context, invalid error, act func()) {
	if err := d.lock.Lock(ctx); err != nil {
		return
	}
	defer d.lock.Unlock()
	if invalid == nil && d.decided() {
		invalid = d.alreadyDecided()
	}
	if invalid != nil {
		d.reject(ctx, invalid)
		return
	}
	act()
}

// validateReplayCorrected refuses an update before it is accepted: when the
// change is decided already, or the row image is unusable.
func (d *deadLetter) validateReplayCorrected(req cdc.ReplayRequest) error {
	if d.decided() {
		return d.alreadyDecided()
	}
	if err := checkRowImage(req.After); err != nil {
		return err
	}
	return d.checkCorrection(req.After)
}

// checkCorrection refuses a corrected row image of another row than the
// parked change's: a replay may fix a row, not move it to another key.
// (workflowcheck flags encoding/json; parsing bytes is deterministic.)
//
//workflowcheck:ignore
func (d *deadLetter) checkCorrection(after json.RawMessage) error {
	if after == nil {
		return nil
	}
	var parked struct {
		Key json.RawMessage `json:"key"`
	}
	if err := json.Unmarshal(d.record.Message, &parked); err != nil || parked.Key == nil {
		return errors.New("after: the parked message is not a change event; it can be discarded, not corrected")
	}
	if err := event.KeyDisagreement(parked.Key, after); err != nil {
		return fmt.Errorf("after: a replay cannot change the row's key: %v", err)
	}
	return nil
}

// replayCorrected replays with a corrected row image and returns the status
// after the attempt.
func (d *deadLetter) replayCorrected(ctx workflow.Context, req cdc.ReplayRequest) (cdc.DeadLetterStatus, error) {
	if err := d.lock.Lock(ctx); err != nil {
		return d.status, err
	}
	defer d.lock.Unlock()
	// A replay by signal may have decided the change since validation.
	if d.decided() {
		return d.status, d.alreadyDecided()
	}
	d.replay(ctx, req)
	return d.status, nil
}

// replay applies the parked change once more and records what happened: a
// failure keeps it parked, with the new error.
func (d *deadLetter) replay(ctx workflow.Context, req cdc.ReplayRequest) {
	dec := cdc.Decision{At: workflow.Now(ctx), Action: cdc.ActionReplay, Corrected: req.After != nil}
	var counts cdc.Counts
	err := execute(ctx, &counts, apply.ReplayChange, cdc.ReplayInput{Message: d.record.Message, After: req.After})
	if err != nil {
		dec.Error = err.Error()
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) {
			dec.Error = appErr.Message()
			d.status.ErrorClass = cdc.ErrorClass(appErr.Type())
		}
		d.status.Error, d.status.LastFailure = dec.Error, workflow.Now(ctx)
		d.status.Attempts++
		d.status.Decisions = append(d.status.Decisions, dec)
		return
	}
	switch {
	case counts.Applied > 0:
		dec.Outcome = "applied"
	case counts.Superseded > 0:
		dec.Outcome = "superseded: the row already holds a newer change"
	default:
		dec.Outcome = "duplicate: the change was applied before"
	}
	d.status.State, d.outcome = cdc.StateReplayed, dec.Outcome
	d.status.Decisions = append(d.status.Decisions, dec)
}

func (d *deadLetter) reject(ctx workflow.Context, err error) {
	d.status.Decisions = append(d.status.Decisions, cdc.Decision{At: workflow.Now(ctx), Action: cdc.ActionRejected, Error: err.Error()})
}

func (d *deadLetter) alreadyDecided() error {
	return fmt.Errorf("dead letter %s is %s already", d.record.ID, d.status.State)
}

// settle records the decision in the dead_letters table and the search
// attributes.
func (d *deadLetter) settle(ctx workflow.Context) error {
	s := cdc.Settlement{ID: d.record.ID, State: d.status.State, Outcome: d.outcome}
	if err := execute(ctx, nil, deadLetters.Settle, s); err != nil {
		return err
	}
	return workflow.UpsertTypedSearchAttributes(ctx, searchState.ValueSet(string(d.status.State)))
}

func parseReplay(raw json.RawMessage) (cdc.ReplayRequest, error) {
	var req cdc.ReplayRequest
	if len(raw) == 0 || string(raw) == "null" {
		return req, nil
	}
	if err := strictJSON(raw, &req); err != nil {
		return req, fmt.Errorf("replay payload: want {} or {\"after\": {...}}: %v", err)
	}
	return req, checkRowImage(req.After)
}

func parseDiscard(raw json.RawMessage) (cdc.DiscardRequest, error) {
	var req cdc.DiscardRequest
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
