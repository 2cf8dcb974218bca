// Package e2e holds end-to-end tests: the worker and starter binaries run as
// they do in production, against real PostgreSQL, a real Temporal server and
// a Kafka-protocol broker.
package e2e
