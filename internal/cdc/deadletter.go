package cdc

import (
	"encoding/json"
	"fmt"
	"time"
)

// Changes that fail in a batch are parked in groups: the failures of one
// batch on one table with one error class are one DeadLetter workflow, which
// holds them until a person decided each, all at once or some by ID. A storm
// of failures (every change of a busy table, after a destination column was
// dropped) thus costs a workflow per batch, not per change.

// Signals, updates and the query of the DeadLetter workflow: how a person
// decides what becomes of parked changes.
const (
	// SignalReplay re-applies parked changes; its optional payload is a
	// ReplayRequest (none: every change of the group still parked).
	SignalReplay = "replay"
	// SignalDiscard gives changes up; its payload is a DiscardRequest.
	SignalDiscard = "discard"
	// UpdateReplayCorrected replays one change with a corrected row image (a
	// ReplayRequest with After), validated before it is accepted, and
	// returns the DeadLetterStatus after the attempt.
	UpdateReplayCorrected = "replay-corrected"
	// UpdateReplay and UpdateDiscard are the replay and the discard as
	// updates, with the same payloads as the signals: a request that cannot
	// be used is refused before it is accepted (the temporal CLI prints why
	// and exits 1), and the answer is a DecisionResult, what came of it.
	UpdateReplay  = "replay"
	UpdateDiscard = "discard"
	// QueryStatus returns the DeadLetterStatus.
	QueryStatus = "status"
	// SignalAdopt hands a running group more changes to hold ([]
	// DeadLetterRecord): a later run of its batch parked them. It is sent
	// by the batch, not by a person.
	SignalAdopt = "adopt"
)

// ReplayRequest is the payload of a replay. IDs names the changes of the
// group to replay (none: all still parked). After is a complete corrected row
// image for the one change named (it may be left out when one change is
// parked in the group).
type ReplayRequest struct {
	IDs   []string        `json:"ids,omitempty"`
	After json.RawMessage `json:"after,omitempty"`
}

// DiscardRequest is the payload of a discard: why, and which changes (none:
// all still parked).
type DiscardRequest struct {
	Reason string   `json:"reason"`
	IDs    []string `json:"ids,omitempty"`
}

// DeadLetterInput starts a DeadLetter workflow: one group of parked changes.
type DeadLetterInput struct {
	Group      string     `json:"group"` // also the workflow's ID
	Table      string     `json:"table,omitempty"`
	ErrorClass ErrorClass `json:"error_class"`
	// Changes are the group's records, without their messages (those are in
	// the dead_letters table).
	Changes []DeadLetterRecord `json:"changes"`
}

// DeadLetterGroupID is the ID of the group (and DeadLetter workflow) of the
// changes of one batch that failed on table with class.
func DeadLetterGroupID(batchWorkflowID, table string, class ErrorClass) string {
	if table == "" {
		table = "undecodable"
	}
	return fmt.Sprintf("dlq-%s-%s-%s", batchWorkflowID, table, class)
}

// State is where a parked change stands.
type State string

const (
	StateParked    State = "parked"
	StateReplayed  State = "replayed"
	StateDiscarded State = "discarded"
	// StateDecided is the state of a group whose changes were decided
	// differently: some replayed, some discarded.
	StateDecided State = "decided"
)

// Action is what a person asked of parked changes.
type Action string

const (
	ActionReplay  Action = "replay"
	ActionDiscard Action = "discard"
	// ActionRejected records a request that could not be used (a malformed
	// payload, an unknown ID), with why in Decision.Error.
	ActionRejected Action = "rejected"
)

// Decision is one thing a person asked of a group, and what came of it.
type Decision struct {
	At        time.Time `json:"at"`
	Action    Action    `json:"action"`
	IDs       []string  `json:"ids,omitempty"` // the changes it was about
	Corrected bool      `json:"corrected,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Outcome   string    `json:"outcome,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// ChangeStatus is one parked change of a group: its record, kept up to date
// by failed replays, and its state.
type ChangeStatus struct {
	DeadLetterRecord
	State   State  `json:"state"`
	Outcome string `json:"outcome,omitempty"` // the discard reason, or what the replay did
}

// DeadLetterStatus is the answer to the status query and the DeadLetter
// workflow's result.
type DeadLetterStatus struct {
	Group      string         `json:"group"`
	Table      string         `json:"table,omitempty"`
	ErrorClass ErrorClass     `json:"error_class"`
	State      State          `json:"state"` // parked while any change is
	Parked     int            `json:"parked"`
	Changes    []ChangeStatus `json:"changes"`
	Decisions  []Decision     `json:"decisions"`
}

// DecisionResult answers the replay and discard updates: the decision
// taken, and where the group stands after it.
type DecisionResult struct {
	Decision
	Group  string `json:"group"`
	State  State  `json:"state"`  // parked while any change is
	Parked int    `json:"parked"` // changes of the group still parked
	// StillParked are the changes the decision named that are still
	// parked after it: a replay that failed again (their errors are in the
	// status query).
	StillParked []string `json:"still_parked,omitempty"`
}

// Failed reports whether the decision left a change it named parked, or
// could not be recorded.
func (r DecisionResult) Failed() bool { return len(r.StillParked) > 0 || r.Error != "" }

// ReplayInput is the input of the ReplayChanges activity: the changes to
// replay, and a corrected row image for the one change named.
type ReplayInput struct {
	IDs   []string        `json:"ids"`
	After json.RawMessage `json:"after,omitempty"`
}

// ReplayResult is what a replay did to one change: Outcome when it was
// applied (or found applied already), ErrorClass and Error when it failed.
type ReplayResult struct {
	ID         string     `json:"id"`
	Outcome    string     `json:"outcome,omitempty"`
	ErrorClass ErrorClass `json:"error_class,omitempty"`
	Error      string     `json:"error,omitempty"`
}

// Settlement is one decision recorded in the dead_letters table by the
// Settle activity.
type Settlement struct {
	ID      string `json:"id"`
	State   State  `json:"state"`
	Outcome string `json:"outcome"` // the discard reason, or what the replay did
}

// Search attributes of DeadLetter workflows, all of type Keyword. The server
// must know them: `temporal operator search-attribute create --name CdcTable
// --type Keyword` and likewise for the others (make run's dev server and the
// tests register them from SearchAttributes).
const (
	SearchTable      = "CdcTable"
	SearchErrorClass = "CdcErrorClass"
	SearchState      = "CdcState"
)

// Search attributes of ApplyBatch workflows: the tables a batch writes
// (KeywordList), its partition (Int), and once it closed its outcome
// (Keyword: OutcomeApplied or OutcomeParked). The starter sets them only
// when the server has them, so a server without them still runs batches.
const (
	SearchTables    = "CdcTables"
	SearchPartition = "CdcPartition"
	SearchOutcome   = "CdcOutcome"
)

// Batch outcomes, the values of SearchOutcome.
const (
	OutcomeApplied = "applied" // every change applied (or found applied, or superseded)
	OutcomeParked  = "parked"  // some changes were parked as dead letters
)

// SearchAttributes lists the search attributes cdcflow uses, name -> type.
var SearchAttributes = map[string]string{SearchTable: "Keyword", SearchErrorClass: "Keyword", SearchState: "Keyword",
	SearchTables: "KeywordList", SearchPartition: "Int", SearchOutcome: "Keyword"}
