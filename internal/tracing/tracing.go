// Package tracing follows a change through cdcflow as one OpenTelemetry
// trace: capture starts it (at the change's source commit) and carries its
// context in the Kafka message's headers (W3C traceparent); the starter
// continues it when it starts the change's batch, and Temporal's tracing
// interceptor carries it into the batch workflow and its activities, down
// to the destination commit. A batch continues the trace of its first
// sampled change and links the others.
//
// Export is OTLP over HTTP, off unless configured with the OpenTelemetry
// environment variables: OTEL_EXPORTER_OTLP_ENDPOINT (or
// OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) turns it on; OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG choose how many changes are traced (the default
// is every one, parentbased_always_on; a busy pipeline wants
// parentbased_traceidratio with, say, 0.01).
package tracing

import (
	"context"
	"fmt"
	"log/slog"
	"os"

	"github.com/segmentio/kafka-go"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.26.0"
	"go.opentelemetry.io/otel/trace"
)

// Tracer is cdcflow's tracer, from the provider Setup installed (a no-op
// one until then).
func Tracer() trace.Tracer { return otel.Tracer("cdcflow") }

var enabled bool

// Enabled reports whether Setup turned export on: without it, cdcflow
// skips the per-change work of tracing altogether.
func Enabled() bool { return enabled }

// Configured reports whether the environment asks for trace export.
func Configured() bool {
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") != ""
}

// Setup installs the tracer provider of program (its service.name is
// cdcflow-<program>) when the environment configures export, and returns
// the function that flushes and stops it. Without configuration it does
// nothing.
func Setup(ctx context.Context, program string, log *slog.Logger) (func(context.Context) error, error) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	if !Configured() {
		return func(context.Context) error { return nil }, nil
	}
	exp, err := otlptracehttp.New(ctx)
	if err != nil {
		return nil, fmt.Errorf("OTLP trace exporter (OTEL_EXPORTER_OTLP_*): %w", err)
	}
	res, err := resource.Merge(resource.Default(), resource.NewSchemaless(semconv.ServiceName("cdcflow-"+program)))
	if err != nil {
		return nil, err
	}
	// The sampler is the SDK's default, or OTEL_TRACES_SAMPLER's.
	tp := sdktrace.NewTracerProvider(sdktrace.WithBatcher(exp), sdktrace.WithResource(res))
	otel.SetTracerProvider(tp)
	enabled = true
	log.Info("exporting traces", "endpoint", endpoint())
	return tp.Shutdown, nil
}

func endpoint() string {
	if e := os.Getenv("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT"); e != "" {
		return e
	}
	return os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT")
}

// headers carries a trace context in Kafka message headers.
type headers struct{ h *[]kafka.Header }

func (c headers) Get(key string) string {
	for _, h := range *c.h {
		if h.Key == key {
			return string(h.Value)
		}
	}
	return ""
}

func (c headers) Set(key, value string) {
	for i, h := range *c.h {
		if h.Key == key {
			(*c.h)[i].Value = []byte(value)
			return
		}
	}
	*c.h = append(*c.h, kafka.Header{Key: key, Value: []byte(value)})
}

func (c headers) Keys() []string {
	keys := make([]string, len(*c.h))
	for i, h := range *c.h {
		keys[i] = h.Key
	}
	return keys
}

// Inject writes the trace context of ctx into the message's headers.
func Inject(ctx context.Context, m *kafka.Message) {
	otel.GetTextMapPropagator().Inject(ctx, headers{&m.Headers})
}

// Extract reads the trace context a message carries; an invalid one when
// it carries none.
func Extract(hs []kafka.Header) trace.SpanContext {
	return trace.SpanContextFromContext(otel.GetTextMapPropagator().Extract(context.Background(), headers{&hs}))
}

// Attributes of cdcflow's spans.
var (
	AttrTable    = attribute.Key("cdcflow.table")
	AttrActionID = attribute.Key("cdcflow.action_id")
	AttrEpoch    = attribute.Key("cdcflow.epoch")
	AttrOp       = attribute.Key("cdcflow.op")
)
