# cdcflow's programs in one image: capture, starter, worker, dlq, codec and
# healthcheck (the container health probe). A service picks its program by
# its command, e.g. `docker run --rm cdcflow:dev worker -h`.
# deployments/docker-compose.yml builds it; docs/deployment.md has the rest.

# The Go version of go.mod.
FROM golang:1.26.8 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN --mount=type=cache,target=/go/pkg/mod go mod download
COPY . .
RUN --mount=type=cache,target=/go/pkg/mod --mount=type=cache,target=/root/.cache/go-build \
    CGO_ENABLED=0 GOOS=linux go build -trimpath -buildvcs=false -ldflags="-s -w" -o /out/ \
    ./capture ./starter ./worker ./dlq ./codec ./healthcheck

FROM alpine:3.23.3
RUN apk add --no-cache ca-certificates tzdata \
    && addgroup -S -g 10001 cdcflow \
    && adduser -S -D -H -u 10001 -G cdcflow -s /sbin/nologin cdcflow
COPY --from=build /out/ /usr/local/bin/
USER 10001:10001
# CDCFLOW_METRICS_ADDR in the compose file: /metrics, /healthz and /readyz.
EXPOSE 9464
CMD ["worker", "-h"]
