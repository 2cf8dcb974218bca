// Package e2e holds end-to-end tests and benchmarks: cdcflow's programs
// (capture, starter, worker, dlq, devstack) run as they do in production,
// against real PostgreSQL, a real Temporal server and a Kafka-protocol broker.
package e2e
