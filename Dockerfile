# syntax=docker/dockerfile:1
# deputy-idp: a static binary on a distroless base, running as a non-root user.

FROM golang:1.26 AS build
WORKDIR /src
# Dependencies first, so that a source change does not re-download them.
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# CGO off: the SQLite driver is pure Go, so the binary needs no libc.
RUN CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags="-s -w" -o /out/deputy-idp ./cmd/deputy-idp \
 && mkdir -p /out/data

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/deputy-idp /usr/local/bin/deputy-idp
# A writable working directory for the embedded SQLite default (and its
# generated system secret) when no DATABASE_URL is given.
COPY --from=build --chown=65532:65532 /out/data /data
WORKDIR /data
USER 65532:65532
ENV DEPUTY_LISTEN=0.0.0.0:8080
EXPOSE 8080
# The image has no shell or curl; the binary checks its own /healthz.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["/usr/local/bin/deputy-idp", "healthcheck"]
ENTRYPOINT ["/usr/local/bin/deputy-idp"]
CMD ["serve"]
