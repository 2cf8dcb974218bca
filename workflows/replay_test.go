package workflows

import (
	"path/filepath"
	"testing"

	"go.temporal.io/sdk/worker"

	"github.com/cdcflow/cdcflow/internal/temporalx"
)

// TestReplayRecordedHistories replays histories recorded from a real server
// (go test ./internal/e2e -run TestDeadLetters -update-histories rewrites the
// current ones; the v0 ones are from before dead letters and stay as they are).
// A change to ApplyBatch that alters its commands for these inputs fails
// here: put such changes behind workflow.GetVersion.
func TestReplayRecordedHistories(t *testing.T) {
	files, err := filepath.Glob("testdata/*.json")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 2 {
		t.Fatalf("found %d recorded histories, want at least 2", len(files))
	}
	for _, file := range files {
		t.Run(filepath.Base(file), func(t *testing.T) {
			r, err := worker.NewWorkflowReplayerWithOptions(worker.WorkflowReplayerOptions{DataConverter: temporalx.DataConverter()})
			if err != nil {
				t.Fatal(err)
			}
			Register(r)
			if err := r.ReplayWorkflowHistoryFromJSONFile(nil, file); err != nil {
				t.Fatal(err)
			}
		})
	}
}
