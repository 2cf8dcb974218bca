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

// DeadLetter holds a group of parked changes (the failures of one batch on
// one table with one error class) until a person decided each: replayed or
// discarded, all at once or some by ID, by the replay and discard signals or
// updates, or the replay-corrected update. It answers the status query all along, and
// returns the final status.
func DeadLetter(ctx workflow.Context, in cdc.DeadLetterInput) (cdc.DeadLetterStatus, error) {
	d := newDeadLetter(ctx, in)
	if err := d.register(ctx); err != nil {
		return d.status, err
	}
	if err := workflow.Await(ctx, d.decided); err != nil {
		return d.status, err
	}
	// Let an update waiting on the decision return before completing.
	if err := workflow.Await(ctx, func() bool { return workflow.AllHandlersFinished(ctx) }); err != nil {
		return d.status, err
	}
	d.status.State = d.finalState()
	if err := workflow.UpsertTypedSearchAttributes(ctx, searchState.ValueSet(string(d.status.State))); err != nil {
		return d.status, err
	}
	return d.status, nil
}

// deadLetter is the state of one DeadLetter run. Every request takes lock
// before it looks at the state, so a replay by signal and one by update, or
// a replay and a discard, never interleave: the second sees what the first
// decided.
type deadLetter struct {
	status cdc.DeadLetterStatus
	at     map[string]int // index in status.Changes by ID
	lock   workflow.Mutex
}

func newDeadLetter(ctx workflow.Context, in cdc.DeadLetterInput) *deadLetter {
	st := cdc.DeadLetterStatus{Group: in.Group, Table: in.Table, ErrorClass: in.ErrorClass, State: cdc.StateParked,
		Parked: len(in.Changes), Changes: make([]cdc.ChangeStatus, len(in.Changes)), Decisions: []cdc.Decision{}}
	at := make(map[string]int, len(in.Changes))
	st.Changes = st.Changes[:0]
	for _, rec := range in.Changes {
		if _, dup := at[rec.ID]; dup {
			continue // named twice: held once
		}
		at[rec.ID] = len(st.Changes)
		st.Changes = append(st.Changes, cdc.ChangeStatus{DeadLetterRecord: rec, State: cdc.StateParked})
	}
	st.Parked = len(st.Changes)
	return &deadLetter{status: st, at: at, lock: workflow.NewMutex(ctx)}
}

func (d *deadLetter) decided() bool { return d.status.Parked == 0 }

// finalState is the group's state once every change is decided.
func (d *deadLetter) finalState() cdc.State {
	state := cdc.StateParked
	for _, c := range d.status.Changes {
		switch {
		case state == cdc.StateParked:
			state = c.State
		case state != c.State:
			return cdc.StateDecided
		}
	}
	return state
}

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
	err = workflow.SetUpdateHandlerWithOptions(ctx, cdc.UpdateReplay, d.replayUpdate,
		workflow.UpdateHandlerOptions{Validator: d.validateReplay})
	if err != nil {
		return err
	}
	err = workflow.SetUpdateHandlerWithOptions(ctx, cdc.UpdateDiscard, d.discardUpdate,
		workflow.UpdateHandlerOptions{Validator: d.validateDiscard})
	if err != nil {
		return err
	}
	workflow.Go(ctx, func(ctx workflow.Context) { d.receive(ctx, cdc.SignalReplay, d.replaySignal) })
	workflow.Go(ctx, func(ctx workflow.Context) { d.receive(ctx, cdc.SignalDiscard, d.discardSignal) })
	workflow.Go(ctx, func(ctx workflow.Context) {
		ch := workflow.GetSignalChannel(ctx, cdc.SignalAdopt)
		for {
			var recs []cdc.DeadLetterRecord
			ch.Receive(ctx, &recs)
			d.adopt(ctx, recs)
		}
	})
	return nil
}

// adopt holds more changes of the group, parked by a later run of its
// batch; ones it holds already are left as they are.
func (d *deadLetter) adopt(ctx workflow.Context, recs []cdc.DeadLetterRecord) {
	if err := d.lock.Lock(ctx); err != nil {
		return
	}
	defer d.lock.Unlock()
	for _, rec := range recs {
		if _, held := d.at[rec.ID]; held {
			continue
		}
		d.at[rec.ID] = len(d.status.Changes)
		d.status.Changes = append(d.status.Changes, cdc.ChangeStatus{DeadLetterRecord: rec, State: cdc.StateParked})
		d.status.Parked++
	}
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

// replaySignal replays changes as they were, or one with the payload's
// corrected row image.
func (d *deadLetter) replaySignal(ctx workflow.Context, raw json.RawMessage) {
	req, err := parseReplay(raw)
	d.decide(ctx, err, func() error { return d.replayRequest(ctx, req) })
}

// replayRequest replays the changes req names (all still parked when none),
// or refuses the request.
func (d *deadLetter) replayRequest(ctx workflow.Context, req cdc.ReplayRequest) error {
	ids, err := d.replayTargets(req)
	if err != nil {
		return err
	}
	d.replay(ctx, ids, req.After)
	return nil
}

// discardSignal gives changes up, for the payload's reason.
func (d *deadLetter) discardSignal(ctx workflow.Context, raw json.RawMessage) {
	req, err := parseDiscard(raw)
	d.decide(ctx, err, func() error { return d.discard(ctx, req) })
}

// discard gives up the changes req names (all still parked when none), or
// refuses the request.
func (d *deadLetter) discard(ctx workflow.Context, req cdc.DiscardRequest) error {
	ids, err := d.targets(req.IDs)
	if err != nil {
		return err
	}
	settled := make([]cdc.Settlement, len(ids))
	for i, id := range ids {
		settled[i] = cdc.Settlement{ID: id, State: cdc.StateDiscarded, Outcome: req.Reason}
	}
	dec := cdc.Decision{At: workflow.Now(ctx), Action: cdc.ActionDiscard, IDs: ids, Reason: req.Reason,
		Outcome: fmt.Sprintf("%d discarded", len(ids))}
	if err := d.settle(ctx, settled); err != nil {
		dec.Outcome, dec.Error = "", err.Error()
	}
	d.status.Decisions = append(d.status.Decisions, dec)
	return nil
}

// validateReplay refuses a replay update before it is accepted: a
// malformed payload, or changes that are not parked in the group.
func (d *deadLetter) validateReplay(raw json.RawMessage) error {
	req, err := parseReplay(raw)
	if err == nil {
		_, err = d.replayTargets(req)
	}
	return err
}

// replayUpdate is the replay signal as an update: it answers with what came
// of the replay.
func (d *deadLetter) replayUpdate(ctx workflow.Context, raw json.RawMessage) (cdc.DecisionResult, error) {
	req, err := parseReplay(raw)
	if err != nil {
		return cdc.DecisionResult{}, err
	}
	return d.answer(ctx, func() error { return d.replayRequest(ctx, req) })
}

// validateDiscard refuses a discard update before it is accepted.
func (d *deadLetter) validateDiscard(raw json.RawMessage) error {
	req, err := parseDiscard(raw)
	if err == nil {
		_, err = d.targets(req.IDs)
	}
	return err
}

// discardUpdate is the discard signal as an update: it answers with what
// came of the discard.
func (d *deadLetter) discardUpdate(ctx workflow.Context, raw json.RawMessage) (cdc.DecisionResult, error) {
	req, err := parseDiscard(raw)
	if err != nil {
		return cdc.DecisionResult{}, err
	}
	return d.answer(ctx, func() error { return d.discard(ctx, req) })
}

// answer runs act under the lock for an update, and answers with what came
// of it. A decision by signal may have come since the update was
// validated: act checks the request again.
func (d *deadLetter) answer(ctx workflow.Context, act func() error) (cdc.DecisionResult, error) {
	if err := d.lock.Lock(ctx); err != nil {
		return cdc.DecisionResult{}, err
	}
	defer d.lock.Unlock()
	if err := act(); err != nil {
		return cdc.DecisionResult{}, err
	}
	return d.result(), nil
}

// result is what came of the latest decision, for an update's answer.
// The caller holds the lock.
func (d *deadLetter) result() cdc.DecisionResult {
	r := cdc.DecisionResult{Decision: d.status.Decisions[len(d.status.Decisions)-1], Group: d.status.Group,
		State: cdc.StateParked, Parked: d.status.Parked}
	if d.decided() {
		r.State = d.finalState()
	}
	for _, id := range r.IDs {
		if d.status.Changes[d.at[id]].State == cdc.StateParked {
			r.StillParked = append(r.StillParked, id)
		}
	}
	return r
}

// decide runs act under the lock, unless the request was malformed
// (invalid): such a request, or one act refuses, is recorded as rejected.
func (d *deadLetter) decide(ctx workflow.Context, invalid error, act func() error) {
	if err := d.lock.Lock(ctx); err != nil {
		return
	}
	defer d.lock.Unlock()
	if invalid == nil {
		invalid = act()
	}
	if invalid != nil {
		d.status.Decisions = append(d.status.Decisions,
			cdc.Decision{At: workflow.Now(ctx), Action: cdc.ActionRejected, Error: invalid.Error()})
	}
}

// targets returns the changes a request names, or all still parked when it
// names none. It refuses an ID that is not in the group or decided already,
// and a request when nothing is parked.
func (d *deadLetter) targets(ids []string) ([]string, error) {
	if len(ids) == 0 {
		for _, c := range d.status.Changes {
			if c.State == cdc.StateParked {
				ids = append(ids, c.ID)
			}
		}
		if len(ids) == 0 {
			return nil, fmt.Errorf("dead letter group %s is %s already", d.status.Group, d.finalState())
		}
		return ids, nil
	}
	seen := map[string]bool{}
	for _, id := range ids {
		i, ok := d.at[id]
		switch {
		case !ok:
			return nil, fmt.Errorf("ids: %s is not a change of dead letter group %s", id, d.status.Group)
		case seen[id]:
			return nil, fmt.Errorf("ids: %s is named twice", id)
		case d.status.Changes[i].State != cdc.StateParked:
			return nil, fmt.Errorf("ids: %s is %s already", id, d.status.Changes[i].State)
		}
		seen[id] = true
	}
	return ids, nil
}

// replayTargets is targets for a replay: a corrected row image is for one
// change, whose row it may fix but not move to another key. (workflowcheck
// flags the JSON comparison of key and image; comparing bytes is
// deterministic.)
//
//workflowcheck:ignore
func (d *deadLetter) replayTargets(req cdc.ReplayRequest) ([]string, error) {
	ids, err := d.targets(req.IDs)
	if err != nil || req.After == nil {
		return ids, err
	}
	if len(ids) != 1 {
		return nil, fmt.Errorf(`after: a corrected row image is for one change; name it: {"ids": [%q], "after": {...}}`, ids[0])
	}
	c := d.status.Changes[d.at[ids[0]]]
	if c.Key == nil {
		return nil, errors.New("after: the parked message is not a change event; it can be discarded, not corrected")
	}
	if err := event.KeyDisagreement(c.Key, req.After); err != nil {
		return nil, fmt.Errorf("after: a replay cannot change the row's key: %v", err)
	}
	return ids, nil
}

// validateReplayCorrected refuses an update before it is accepted: when the
// change is decided already, or the row image is missing or unusable.
func (d *deadLetter) validateReplayCorrected(req cdc.ReplayRequest) error {
	if req.After == nil {
		return errors.New(`after: replay-corrected needs a corrected row image: {"ids": ["..."], "after": {...}}`)
	}
	if err := checkRowImage(req.After); err != nil {
		return err
	}
	_, err := d.replayTargets(req)
	return err
}

// replayCorrected replays one change with a corrected row image and returns
// the status after the attempt.
func (d *deadLetter) replayCorrected(ctx workflow.Context, req cdc.ReplayRequest) (cdc.DeadLetterStatus, error) {
	if err := d.lock.Lock(ctx); err != nil {
		return d.status, err
	}
	defer d.lock.Unlock()
	// A replay by signal may have decided the change since validation.
	ids, err := d.replayTargets(req)
	if err != nil {
		return d.status, err
	}
	d.replay(ctx, ids, req.After)
	return d.status, nil
}

// replay applies the changes ids once more and records what happened: a
// change that fails again stays parked, with its new error.
func (d *deadLetter) replay(ctx workflow.Context, ids []string, after json.RawMessage) {
	dec := cdc.Decision{At: workflow.Now(ctx), Action: cdc.ActionReplay, IDs: ids, Corrected: after != nil}
	var results []cdc.ReplayResult
	if err := execute(ctx, &results, deadLetters.ReplayChanges, cdc.ReplayInput{IDs: ids, After: after}); err != nil {
		dec.Error = err.Error()
		var appErr *temporal.ApplicationError
		if errors.As(err, &appErr) {
			dec.Error = appErr.Message()
		}
		d.status.Decisions = append(d.status.Decisions, dec)
		return
	}
	var settled []cdc.Settlement
	var failed int
	for _, r := range results {
		i, ok := d.at[r.ID]
		if !ok {
			continue
		}
		c := &d.status.Changes[i]
		if r.Error != "" {
			c.ErrorClass, c.Error, c.LastFailure = r.ErrorClass, r.Error, workflow.Now(ctx)
			c.Attempts++
			failed++
			if len(ids) == 1 {
				dec.Error = r.Error
			}
			continue
		}
		settled = append(settled, cdc.Settlement{ID: r.ID, State: cdc.StateReplayed, Outcome: r.Outcome})
		dec.Outcome = r.Outcome
	}
	if len(ids) > 1 {
		dec.Outcome = fmt.Sprintf("%d replayed, %d failed again", len(settled), failed)
	}
	if err := d.settle(ctx, settled); err != nil {
		dec.Error = err.Error()
	}
	d.status.Decisions = append(d.status.Decisions, dec)
}

// settle records decisions in the dead_letters table, then in the state.
func (d *deadLetter) settle(ctx workflow.Context, settled []cdc.Settlement) error {
	if len(settled) == 0 {
		return nil
	}
	if err := execute(ctx, nil, deadLetters.Settle, settled); err != nil {
		return err
	}
	for _, s := range settled {
		c := &d.status.Changes[d.at[s.ID]]
		c.State, c.Outcome = s.State, s.Outcome
		d.status.Parked--
	}
	return nil
}

func parseReplay(raw json.RawMessage) (cdc.ReplayRequest, error) {
	var req cdc.ReplayRequest
	if len(raw) == 0 || string(raw) == "null" {
		return req, nil
	}
	if err := strictJSON(raw, &req); err != nil {
		return req, fmt.Errorf(`replay payload: want {}, {"ids": [...]} or {"ids": ["..."], "after": {...}}: %v`, err)
	}
	return req, checkRowImage(req.After)
}

func parseDiscard(raw json.RawMessage) (cdc.DiscardRequest, error) {
	var req cdc.DiscardRequest
	if err := strictJSON(raw, &req); err != nil {
		return req, fmt.Errorf(`discard payload: want {"reason": "...", "ids": [...]}: %v`, err)
	}
	if strings.TrimSpace(req.Reason) == "" {
		return req, errors.New(`discard payload: a reason is required: {"reason": "...", "ids": [...]}`)
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
