# The caw image: both static binaries and nothing else. Build it once with
#   docker build -t caw .
# and copy caw-init into your agent's image with
#   COPY --from=caw /caw-init /usr/local/bin/caw-init
FROM golang:1.26-bookworm AS build
WORKDIR /src
ENV CGO_ENABLED=0 GOFLAGS=-buildvcs=false
COPY go.mod go.sum ./
RUN go mod download
COPY . .
# caw-init's -E: its entry hook (internal/initbuild), as in the Makefile.
RUN go build -trimpath -ldflags="-s -w" -o /out/caw ./cmd/caw \
 && go build -trimpath -ldflags="-s -w -E=github.com/caw-dev/caw/init/pid1.rt0" -o /out/caw-init ./cmd/caw-init

FROM scratch
COPY --from=build /out/caw /out/caw-init /
ENTRYPOINT ["/caw"]
