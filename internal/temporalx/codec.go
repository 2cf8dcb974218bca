package temporalx

import (
	"net/http"
	"slices"
	"strings"

	"go.temporal.io/sdk/converter"
)

// MaxCodecRequest bounds the body of one codec request: a batch's payload
// is at most 2 MB (Temporal's limit), and the Web UI asks for a few at once.
const MaxCodecRequest = 32 << 20

// CodecHandler serves cdcflow's payload codec by Temporal's remote-codec
// convention (POST .../decode and .../encode with a JSON Payloads body), so
// that the Web UI and the temporal CLI show compressed payloads, such as the
// events of a large batch, as the JSON they are. Browsers may call it from
// the given origins (the Web UI's), which are sent the CORS headers.
//
// It decodes what a person allowed to read the workflows could decompress
// anyway (the codec compresses, it does not encrypt); serve it where the
// Web UI's users reach it.
func CodecHandler(origins []string) http.Handler {
	codec := converter.NewPayloadCodecHTTPHandler(largePayloadCodec{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if origin := r.Header.Get("Origin"); origin != "" && slices.Contains(origins, strings.TrimSuffix(origin, "/")) {
			h := w.Header()
			h.Set("Access-Control-Allow-Origin", origin)
			h.Set("Access-Control-Allow-Credentials", "true")
			h.Set("Access-Control-Allow-Methods", "POST, OPTIONS")
			h.Set("Access-Control-Allow-Headers", "Content-Type, X-Namespace, Authorization")
			h.Add("Vary", "Origin")
		}
		if r.Method == http.MethodOptions {
			w.WriteHeader(http.StatusNoContent)
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, MaxCodecRequest)
		codec.ServeHTTP(w, r)
	})
}
