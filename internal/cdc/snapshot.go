package cdc

import "fmt"

// Registered name of the workflow that copies the rows a table held when
// its log-based capture began.
const WorkflowSnapshot = "Snapshot"

// SnapshotWorkflowID is the ID of the Snapshot workflow of table in an
// epoch of a source: one per request, whoever starts it.
func SnapshotWorkflowID(table, source string, epoch int64) string {
	return fmt.Sprintf("snapshot-%s-%s-%d", table, source, epoch)
}

// SnapshotInput is a snapshot capture asked for (the source's
// cdcflow.snapshots): copy the rows of Table to the destination with the
// version (Epoch, ActionID), which capture keeps below every change it
// reads from the log in that epoch.
type SnapshotInput struct {
	Table    string `json:"table"`
	Source   string `json:"source"`
	Epoch    int64  `json:"epoch"`
	ActionID int64  `json:"action_id"`
	// ChunkPages is how many of a table's pages one chunk copies (0:
	// DefaultSnapshotChunkPages); Parallel how many chunks are copied at
	// once (0: DefaultSnapshotParallel).
	ChunkPages int64 `json:"chunk_pages,omitempty"`
	Parallel   int   `json:"parallel,omitempty"`

	// Carried to the next run when the workflow continues as new.
	Chunks   []SnapshotChunk   `json:"chunks,omitempty"`
	Progress *SnapshotProgress `json:"progress,omitempty"`
}

// Defaults of SnapshotInput.
const (
	DefaultSnapshotChunkPages = 1024 // 8 MiB of table with 8 kB pages
	DefaultSnapshotParallel   = 2
)

// SnapshotChunk is a range of pages of one table (a leaf partition of a
// partitioned one): pages FirstPage up to EndPage, or to the table's end
// when EndPage is 0.
type SnapshotChunk struct {
	Schema    string `json:"schema"`
	Name      string `json:"name"`
	FirstPage int64  `json:"first_page"`
	EndPage   int64  `json:"end_page,omitempty"`
	// The table (a leaf partition) and the root it belongs to, by OID, so
	// that a rename does not lose them; and the table's file when the
	// chunks were cut: a table rewritten since (VACUUM FULL, CLUSTER) has
	// its rows on other pages, and is cut again.
	OID      uint32 `json:"oid,omitempty"`
	Root     uint32 `json:"root,omitempty"`
	Filenode uint32 `json:"filenode,omitempty"`
}

// ErrorSnapshotRewritten is the error type of a chunk whose table was
// rewritten after the chunks were cut: the snapshot cuts it again.
const ErrorSnapshotRewritten = "SnapshotTableRewritten"

func (c SnapshotChunk) String() string {
	end := "end"
	if c.EndPage > 0 {
		end = fmt.Sprint(c.EndPage)
	}
	return fmt.Sprintf("%s.%s pages %d-%s", c.Schema, c.Name, c.FirstPage, end)
}

// SnapshotCopy is one chunk of a snapshot to copy.
type SnapshotCopy struct {
	Table    string        `json:"table"`
	Epoch    int64         `json:"epoch"`
	ActionID int64         `json:"action_id"`
	Chunk    SnapshotChunk `json:"chunk"`
}

// SnapshotCopied is what copying one chunk did: Read rows read from the
// source, Written rows written to the destination (the others had a newer
// change there already).
type SnapshotCopied struct {
	Read    int64 `json:"read"`
	Written int64 `json:"written"`
}

// SnapshotProgress is the Snapshot workflow's result, and the answer to its
// "progress" query.
type SnapshotProgress struct {
	Table   string `json:"table"`
	Chunks  int    `json:"chunks"`
	Copied  int    `json:"copied"`
	Rows    int64  `json:"rows"`
	Written int64  `json:"written"`
}
