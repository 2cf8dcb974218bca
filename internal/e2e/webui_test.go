package e2e

import (
	"context"
	"fmt"
	"html"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.temporal.io/api/workflowservice/v1"

	"github.com/cdcflow/cdcflow/internal/cdc"
	"github.com/cdcflow/cdcflow/internal/localsvc"
	"github.com/cdcflow/cdcflow/internal/testenv"
)

// TestWebUIExplainsBatches runs the pipeline against a dev server with its
// Web UI, pointed at cdcflow's codec, and loads the UI's pages in headless
// Chromium: the batch list filtered by a search attribute shows the
// batches of that table and no others, and a batch's page shows its summary
// and its events decoded by the codec (the batch is large enough to travel
// compressed), not a blob.
//
// With CDCFLOW_SCREENSHOTS=dir it also writes screenshots of both pages
// there (docs/images holds the ones in the docs).
func TestWebUIExplainsBatches(t *testing.T) {
	chromium, err := exec.LookPath("chromium")
	if err != nil {
		t.Skip("chromium not found: apt-get install chromium (CI installs it)")
	}
	ctx := context.Background()
	codecPort, err := localsvc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	uiPort, err := localsvc.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	codec := fmt.Sprintf("http://127.0.0.1:%d", codecPort)
	tmp, err := localsvc.StartTemporal(ctx, localsvc.TemporalOptions{UI: true, UIPort: uiPort, UICodecEndpoint: codec,
		SearchAttributes: cdc.SearchAttributes})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { tmp.Close() })

	p := newPipeline(t)
	p.env["TEMPORAL_ADDRESS"] = tmp.Address
	p.temporal = testenv.Dial(t, tmp)
	p.start("codec", fmt.Sprintf("CDCFLOW_CODEC_ADDR=127.0.0.1:%d", codecPort), "CDCFLOW_CODEC_ORIGINS="+tmp.UIAddress)
	p.start("worker")
	p.start("starter", "CDCFLOW_BATCH_MAX_EVENTS=2000", "CDCFLOW_BATCH_MAX_WAIT=1s", "CDCFLOW_ORDERING_WINDOW=1s")

	// 2,000 employees in one batch (about 400 kB of events: compressed),
	// then changes to payroll, a table the worker does not write: parked.
	values := make([]string, 2000)
	for i := range values {
		values[i] = insertEvent(i+1, i+1, 1000+i, "public.employees")
	}
	p.produceRaw(values...)
	p.waitApplied(2000)
	p.produceRaw(insertEvent(3001, 3001, 1, "public.payroll"), insertEvent(3002, 3002, 2, "public.payroll"))

	batches := func(query string) []string {
		var ids []string
		eventually(t, time.Minute, "batches matching "+query, func() (bool, string) {
			resp, err := p.temporal.ListWorkflow(ctx, &workflowservice.ListWorkflowExecutionsRequest{Query: query})
			if err != nil {
				return false, err.Error()
			}
			ids = ids[:0]
			for _, ex := range resp.Executions {
				ids = append(ids, ex.Execution.WorkflowId)
			}
			return len(ids) > 0, fmt.Sprint(ids)
		})
		return ids
	}
	employees := batches(fmt.Sprintf("WorkflowType = 'ApplyBatch' AND %s = 'public.employees' AND %s = 'applied'", cdc.SearchTables, cdc.SearchOutcome))
	payroll := batches(fmt.Sprintf("WorkflowType = 'ApplyBatch' AND %s = 'public.payroll' AND %s = 'parked'", cdc.SearchTables, cdc.SearchOutcome))

	// The list filtered by CdcTables, as a person types it in the UI.
	list := tmp.UIAddress + "/namespaces/default/workflows?query=" +
		url.QueryEscape(fmt.Sprintf("WorkflowType=\"ApplyBatch\" AND %s=\"public.payroll\"", cdc.SearchTables))
	shots := os.Getenv("CDCFLOW_SCREENSHOTS")
	page := loadPage(t, chromium, list, payroll[0], filepath.Join(shots, "webui-batches-by-table.png"), shots != "")
	for _, id := range payroll {
		if !strings.Contains(page, id) {
			t.Errorf("the list filtered by table lacks payroll batch %s", id)
		}
	}
	for _, id := range employees {
		if strings.Contains(page, id) {
			t.Errorf("the list filtered by payroll shows employees batch %s", id)
		}
	}
	// A batch's page: its summary, and its events decoded by the codec.
	batch := tmp.UIAddress + "/namespaces/default/workflows/" + url.PathEscape(employees[0])
	page = loadPage(t, chromium, batch, `public.employees`, filepath.Join(shots, "webui-batch.png"), shots != "")
	if shots != "" {
		if err := os.WriteFile(filepath.Join(shots, "webui-batch.html"), []byte(page), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	// The events render as highlighted JSON: compare the text.
	text := html.UnescapeString(regexp.MustCompile(`<[^>]*>`).ReplaceAllString(page, ""))
	for _, want := range []string{"2000 changes to public.employees · partition 0 · offsets 0-1999", `"offsets": "0-1999"`,
		`"table": "public.employees"`, `"op": "insert"`, `"first_name": "E1"`} {
		if !strings.Contains(text, want) {
			t.Errorf("the batch's page lacks %s", want)
		}
	}
	if strings.Contains(text, "binary/zlib") {
		t.Errorf("the batch's page shows its events compressed: the codec was not used")
	}
}

// loadPage loads url in headless Chromium until its DOM holds want (the
// Web UI renders after its API calls), and returns the DOM; with shoot it
// also saves a screenshot to png.
func loadPage(t *testing.T, chromium, url, want, png string, shoot bool) string {
	t.Helper()
	args := []string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
		"--window-size=1600,1000", "--hide-scrollbars", "--virtual-time-budget=20000"}
	var dom string
	eventually(t, 2*time.Minute, "the page "+url+" to show "+want, func() (bool, string) {
		out, err := exec.Command(chromium, append(args, "--dump-dom", url)...).Output()
		dom = string(out)
		return err == nil && strings.Contains(dom, want), fmt.Sprintf("%v; %d bytes of DOM", err, len(out))
	})
	if shoot {
		if out, err := exec.Command(chromium, append(args, "--screenshot="+png, url)...).CombinedOutput(); err != nil {
			t.Fatalf("screenshot of %s: %v\n%s", url, err, out)
		}
	}
	return dom
}
