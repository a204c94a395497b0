# The onceflow processor. Build stage: a static binary of cmd/processor.
# Runtime stage: that binary alone on a distroless base, as a non-root
# user, with the examples under /etc/onceflow and its data (checkpoints,
# state) under /var/lib/onceflow (a volume).
#
#   docker build -t onceflow/processor .
#   docker run --rm onceflow/processor version
#
# The job API listens on all of the container's interfaces (0.0.0.0:8081),
# and its POSTs stop, cancel and savepoint the job. Publish the port on
# loopback only (-p 127.0.0.1:8081:8081) and give the API a token
# (-e ONCEFLOW_HTTP_TOKEN=...: processor savepoint/stop send the same
# variable, or --token); without one the processor warns at start.
FROM golang:1.26 AS build
WORKDIR /src
# Modules first, so that a source change does not fetch them again.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w -X github.com/onceflow/onceflow/runner.version=${VERSION}" -o /out/processor ./cmd/processor \
 && mkdir -p /out/data/checkpoints /out/data/state

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/processor /usr/local/bin/processor
COPY examples/ /etc/onceflow/
# Owned by the nonroot user (65532) so that a fresh volume is writable.
COPY --from=build --chown=65532:65532 /out/data /var/lib/onceflow
WORKDIR /var/lib/onceflow
VOLUME /var/lib/onceflow
ENV ONCEFLOW_CHECKPOINT_DIR=/var/lib/onceflow/checkpoints \
    ONCEFLOW_STATE_DIR=/var/lib/onceflow/state \
    ONCEFLOW_HTTP_LISTEN=0.0.0.0:8081
EXPOSE 8081
# SIGTERM (docker stop) stops the job with a savepoint; give it the time
# (docker stop -t, compose stop_grace_period) of a checkpoint timeout.
STOPSIGNAL SIGTERM
ENTRYPOINT ["/usr/local/bin/processor"]
CMD ["run", "--config", "/etc/onceflow/wordcount.yaml"]
