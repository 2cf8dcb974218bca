package main

import (
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.URL.Path {
		case "/healthz":
			io.WriteString(w, "ok")
		case "/slow":
			time.Sleep(time.Second)
		default:
			http.Error(w, "kafka: not answering", http.StatusServiceUnavailable)
		}
	}))
	defer srv.Close()

	if err := run([]string{srv.URL + "/healthz"}, io.Discard); err != nil {
		t.Errorf("healthy: %v", err)
	}
	if err := run([]string{srv.URL + "/readyz"}, io.Discard); err == nil || !strings.Contains(err.Error(), "503") ||
		!strings.Contains(err.Error(), "kafka: not answering") {
		t.Errorf("unready: got %v, want the status and the body", err)
	}
	if err := run([]string{"-timeout", "100ms", srv.URL + "/slow"}, io.Discard); err == nil {
		t.Error("slow: want an error after the timeout")
	}
	if err := run([]string{"http://127.0.0.1:1/healthz"}, io.Discard); err == nil {
		t.Error("nothing listening: want an error")
	}
	if err := run(nil, io.Discard); err == nil {
		t.Error("no URL: want an error")
	}
}
