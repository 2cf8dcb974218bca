// Package temporalx holds what every cdcflow Temporal client shares.
package temporalx

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"strings"
	"time"

	temporalotel "go.temporal.io/sdk/contrib/opentelemetry"

	"github.com/klauspost/compress/zlib"
	commonpb "go.temporal.io/api/common/v1"
	"go.temporal.io/sdk/client"
	"go.temporal.io/sdk/converter"
	tlog "go.temporal.io/sdk/log"
	"google.golang.org/protobuf/proto"

	"github.com/cdcflow/cdcflow/internal/config"
	"github.com/cdcflow/cdcflow/internal/event"
	"github.com/cdcflow/cdcflow/internal/tracing"
)

// CompressAbove is the payload size from which payloads are compressed.
// Batches of change events are large and repetitive JSON and shrink several
// times over; summaries, signals and query results stay below it and remain
// plain JSON, readable in the Web UI and the temporal CLI.
const CompressAbove = 32 << 10

// DataConverter is the converter of every cdcflow client and worker: JSON,
// with event batches passed through as the JSON they already are, and large
// payloads zlib-compressed in the SDK's "binary/zlib" format.
func DataConverter() converter.DataConverter {
	return converter.NewCodecDataConverter(
		converter.NewCompositeDataConverter(
			converter.NewNilPayloadConverter(),
			converter.NewByteSlicePayloadConverter(),
			converter.NewProtoJSONPayloadConverter(),
			converter.NewProtoPayloadConverter(),
			batchJSON{converter.NewJSONPayloadConverter()},
		),
		largePayloadCodec{})
}

// batchJSON is the JSON payload converter, except that an event.Batch, which
// is JSON already, is stored as is rather than validated and copied again.
type batchJSON struct {
	*converter.JSONPayloadConverter
}

func (c batchJSON) ToPayload(value any) (*commonpb.Payload, error) {
	if b, ok := value.(event.Batch); ok {
		return &commonpb.Payload{
			Metadata: map[string][]byte{converter.MetadataEncoding: []byte(converter.MetadataEncodingJSON)},
			Data:     b,
		}, nil
	}
	return c.JSONPayloadConverter.ToPayload(value)
}

func (c batchJSON) FromPayload(p *commonpb.Payload, valuePtr any) error {
	if b, ok := valuePtr.(*event.Batch); ok {
		*b = p.GetData()
		return nil
	}
	return c.JSONPayloadConverter.FromPayload(p, valuePtr)
}

// largePayloadCodec compresses payloads of CompressAbove bytes or more, at
// zlib's fastest level, in the format of the SDK's zlib codec.
type largePayloadCodec struct{}

func (largePayloadCodec) Encode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		if len(p.GetData()) < CompressAbove {
			out[i] = p
			continue
		}
		raw, err := proto.Marshal(p)
		if err != nil {
			return nil, err
		}
		var buf bytes.Buffer
		buf.Grow(len(raw) / 4)
		w, err := zlib.NewWriterLevel(&buf, zlib.BestSpeed)
		if err != nil {
			return nil, err
		}
		if _, err := w.Write(raw); err != nil {
			return nil, err
		}
		if err := w.Close(); err != nil {
			return nil, err
		}
		out[i] = &commonpb.Payload{
			Metadata: map[string][]byte{converter.MetadataEncoding: []byte("binary/zlib")},
			Data:     buf.Bytes(),
		}
	}
	return out, nil
}

// MaxDecodedPayload bounds what one compressed payload may expand to: far
// above a batch (at most CDCFLOW_BATCH_MAX_BYTES of events, 1.5 MB), and
// low enough that a crafted payload sent to the codec server cannot
// exhaust memory.
const MaxDecodedPayload = 64 << 20

// Decode undoes Encode, in the SDK's "binary/zlib" format; other payloads
// pass unchanged.
func (largePayloadCodec) Decode(payloads []*commonpb.Payload) ([]*commonpb.Payload, error) {
	out := make([]*commonpb.Payload, len(payloads))
	for i, p := range payloads {
		if string(p.GetMetadata()[converter.MetadataEncoding]) != "binary/zlib" {
			out[i] = p
			continue
		}
		r, err := zlib.NewReader(bytes.NewReader(p.GetData()))
		if err != nil {
			return nil, fmt.Errorf("decompress payload: %w", err)
		}
		b, err := io.ReadAll(io.LimitReader(r, MaxDecodedPayload+1))
		r.Close()
		if err != nil {
			return nil, fmt.Errorf("decompress payload: %w", err)
		}
		if len(b) > MaxDecodedPayload {
			return nil, fmt.Errorf("decompress payload: it expands past %d bytes", MaxDecodedPayload)
		}
		out[i] = &commonpb.Payload{}
		if err := proto.Unmarshal(b, out[i]); err != nil {
			return nil, fmt.Errorf("decompressed payload: %w", err)
		}
	}
	return out, nil
}

// Dial connects to Temporal as cfg says (address, namespace, TLS, client
// certificate, API key) with cdcflow's data converter, logging through log.
// When nothing listens at the address it says so at once, rather than after
// the client's health check timed out.
func Dial(ctx context.Context, cfg config.TemporalClient, log *slog.Logger) (client.Client, error) {
	address := cfg.Address
	opts, err := Options(cfg, log)
	if err != nil {
		return nil, err
	}
	probe, err := (&net.Dialer{Timeout: 3 * time.Second}).DialContext(ctx, "tcp", address)
	if err != nil {
		return nil, fmt.Errorf("connect to Temporal at %s (TEMPORAL_ADDRESS): %w; is the server running, and is TEMPORAL_ADDRESS its frontend's host:port?", address, err)
	}
	probe.Close()
	c, err := client.DialContext(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("connect to Temporal at %s%s: %w", address, tlsHint(cfg, err), err)
	}
	return c, nil
}

// Options returns the client options of cfg: TLS when cfg.UsesTLS, the
// API key as credentials.
func Options(cfg config.TemporalClient, log *slog.Logger) (client.Options, error) {
	tlsCfg, err := cfg.TLSConfig()
	if err != nil {
		return client.Options{}, err
	}
	opts := client.Options{
		HostPort:          cfg.Address,
		Namespace:         cfg.Namespace,
		Logger:            tlog.NewStructuredLogger(log),
		DataConverter:     DataConverter(),
		ConnectionOptions: client.ConnectionOptions{TLS: tlsCfg},
	}
	if cfg.APIKey != "" {
		opts.Credentials = client.NewAPIKeyStaticCredentials(cfg.APIKey)
	}
	if tracing.Enabled() {
		// Workflows, activities, signals and updates continue the trace of
		// the context that started them (see internal/tracing).
		ti, err := temporalotel.NewTracingInterceptor(temporalotel.TracerOptions{})
		if err != nil {
			return client.Options{}, err
		}
		opts.Interceptors = append(opts.Interceptors, ti)
	}
	return opts, nil
}

// tlsHint says which settings to look at when the connection failed, as the
// gRPC errors of a TLS mismatch do not.
func tlsHint(cfg config.TemporalClient, err error) string {
	msg := err.Error()
	switch {
	case strings.Contains(msg, "x509:") || strings.Contains(msg, "certificate"):
		return " (TLS: the frontend's certificate is not trusted; check TEMPORAL_TLS_CA_FILE and TEMPORAL_TLS_SERVER_NAME)"
	case strings.Contains(msg, "first record does not look like a TLS handshake"):
		return " (TLS: the frontend does not speak TLS; unset TEMPORAL_TLS)"
	case !cfg.UsesTLS() && (strings.Contains(msg, "connection reset") || strings.Contains(msg, "EOF") || strings.Contains(msg, "http2")):
		return " (does the frontend want TLS? set TEMPORAL_TLS=true)"
	case strings.Contains(msg, "Unauthenticated") || strings.Contains(msg, "PermissionDenied"):
		return " (check TEMPORAL_API_KEY, or the client certificate TEMPORAL_TLS_CERT_FILE)"
	}
	return ""
}
