package cdc

import (
	"encoding/json"
	"time"
)

// Signals, the update and the query of the DeadLetter workflow: how a person
// decides what becomes of a parked change.
const (
	// SignalReplay re-applies the parked change; its optional payload is a
	// ReplayRequest.
	SignalReplay = "replay"
	// SignalDiscard gives the change up; its payload is a DiscardRequest.
	SignalDiscard = "discard"
	// UpdateReplayCorrected replays with a corrected row image (a
	// ReplayRequest with After), validated before it is accepted, and
	// returns the DeadLetterStatus after the attempt.
	UpdateReplayCorrected = "replay-corrected"
	// QueryStatus returns the DeadLetterStatus.
	QueryStatus = "status"
)

// ReplayRequest is the payload of a replay: empty to apply the change as it
// was, or with After, a complete corrected row image.
type ReplayRequest struct {
	After json.RawMessage `json:"after,omitempty"`
}

// DiscardRequest is the payload of a discard.
type DiscardRequest struct {
	Reason string `json:"reason"`
}

// DeadLetterInput starts a DeadLetter workflow.
type DeadLetterInput struct {
	Record DeadLetterRecord `json:"record"`
}

// State is where a parked change stands.
type State string

const (
	StateParked    State = "parked"
	StateReplayed  State = "replayed"
	StateDiscarded State = "discarded"
)

// Action is what a person asked of a parked change.
type Action string

const (
	ActionReplay  Action = "replay"
	ActionDiscard Action = "discard"
	// ActionRejected records a request that could not be used (a malformed
	// payload), with why in Decision.Error.
	ActionRejected Action = "rejected"
)

// Decision is one thing a person asked of a parked change, and what came of it.
type Decision struct {
	At        time.Time `json:"at"`
	Action    Action    `json:"action"`
	Corrected bool      `json:"corrected,omitempty"`
	Reason    string    `json:"reason,omitempty"`
	Outcome   string    `json:"outcome,omitempty"`
	Error     string    `json:"error,omitempty"`
}

// DeadLetterStatus is the answer to the status query and the DeadLetter
// workflow's result: the parked change as recorded, kept up to date by failed
// replays, with its state and the decisions taken on it.
type DeadLetterStatus struct {
	DeadLetterRecord
	State     State           `json:"state"`
	Event     json.RawMessage `json:"event,omitempty"` // the change, when it is JSON (Message is then empty)
	Decisions []Decision      `json:"decisions"`
}

// ReplayInput is the input of the ReplayChange activity: a parked change's
// message, and a corrected row image when one was given.
type ReplayInput struct {
	Message json.RawMessage `json:"message"`
	After   json.RawMessage `json:"after,omitempty"`
	// Claim locates the full event when Message is the manifest of a large
	// change (DeadLetterRecord.Claim).
	Claim *ClaimCheck `json:"claim,omitempty"`
}

// Settlement is the input of the Settle activity: the decision taken on a
// parked change, recorded in the dead_letters table.
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

// SearchAttributes lists the search attributes cdcflow uses, name -> type.
var SearchAttributes = map[string]string{SearchTable: "Keyword", SearchErrorClass: "Keyword", SearchState: "Keyword"}
