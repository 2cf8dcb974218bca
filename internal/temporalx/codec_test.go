package temporalx

import (
	"bytes"
	"compress/zlib"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	commonpb "go.temporal.io/api/common/v1"
	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"

	"github.com/cdcflow/cdcflow/internal/event"
)

// TestCodecServerShowsCompressedBatchesAsJSON: a batch large enough to be
// compressed on its way through Temporal is sent to the codec as the Web UI
// sends it, and comes back as the batch's JSON; a small payload passes
// unchanged; CORS headers go to the Web UI's origin only.
func TestCodecServerShowsCompressedBatchesAsJSON(t *testing.T) {
	var raws [][]byte
	for i := range 2000 {
		raws = append(raws, fmt.Appendf(nil, `{"action_id":%d,"table":"public.employees","op":"insert","key":{"emp_id":%d},"after":{"emp_id":%d,"city":"London"}}`, i, i, i))
	}
	batch := event.NewBatch(raws)
	payloads, err := DataConverter().ToPayloads(batch, "small")
	if err != nil {
		t.Fatal(err)
	}
	if enc := string(payloads.Payloads[0].Metadata["encoding"]); enc != "binary/zlib" {
		t.Fatalf("the batch's payload is %s, want it compressed", enc)
	}
	body, err := protojson.Marshal(payloads)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(CodecHandler([]string{"http://localhost:8233"}))
	defer srv.Close()

	req, _ := http.NewRequest(http.MethodPost, srv.URL+"/default/decode", bytes.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Origin", "http://localhost:8233")
	req.Header.Set("X-Namespace", "default")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK || resp.Header.Get("Access-Control-Allow-Origin") != "http://localhost:8233" {
		t.Fatalf("decode: %s, CORS origin %q", resp.Status, resp.Header.Get("Access-Control-Allow-Origin"))
	}
	var decoded struct {
		Payloads []struct {
			Metadata map[string][]byte `json:"metadata"`
			Data     []byte            `json:"data"`
		} `json:"payloads"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&decoded); err != nil {
		t.Fatal(err)
	}
	if len(decoded.Payloads) != 2 {
		t.Fatalf("%d payloads back, want 2", len(decoded.Payloads))
	}
	if enc := string(decoded.Payloads[0].Metadata["encoding"]); enc != "json/plain" || !bytes.Equal(decoded.Payloads[0].Data, batch) {
		t.Fatalf("decoded batch: encoding %s, %d bytes, want the batch's %d bytes of JSON", enc, len(decoded.Payloads[0].Data), len(batch))
	}
	if string(decoded.Payloads[1].Data) != `"small"` {
		t.Fatalf("small payload came back as %q", decoded.Payloads[1].Data)
	}

	// The Web UI's preflight is answered for its origin, not for others.
	for origin, want := range map[string]string{"http://localhost:8233": "http://localhost:8233", "http://evil.example": ""} {
		req, _ := http.NewRequest(http.MethodOptions, srv.URL+"/default/decode", nil)
		req.Header.Set("Origin", origin)
		req.Header.Set("Access-Control-Request-Method", "POST")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if got := resp.Header.Get("Access-Control-Allow-Origin"); got != want {
			t.Errorf("preflight from %s: allowed origin %q, want %q", origin, got, want)
		}
	}
	// Not a payload list: a clear refusal.
	resp, err = http.Post(srv.URL+"/decode", "application/json", strings.NewReader("not json"))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("malformed body: %s, want 400", resp.Status)
	}
}

// TestCodecRefusesAPayloadThatExpandsWithoutEnd: a small compressed
// payload that would expand past MaxDecodedPayload is refused, not
// decompressed into memory.
func TestCodecRefusesAPayloadThatExpandsWithoutEnd(t *testing.T) {
	var zeros bytes.Buffer
	w := zlib.NewWriter(&zeros)
	inner, err := proto.Marshal(&commonpb.Payload{Data: make([]byte, MaxDecodedPayload+10)})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(inner) //nolint:errcheck // a bytes.Buffer
	w.Close()
	bomb := &commonpb.Payload{Metadata: map[string][]byte{"encoding": []byte("binary/zlib")}, Data: zeros.Bytes()}
	if _, err := (largePayloadCodec{}).Decode([]*commonpb.Payload{bomb}); err == nil || !strings.Contains(err.Error(), "expands past") {
		t.Fatalf("decoding %d bytes that expand to %d: %v", len(bomb.Data), len(inner), err)
	}
}
