# Keyper in a container: a multi-stage build (the Swift toolchain only in the first stage) and a
# small runtime image that runs as an unprivileged user.
#
#   docker build -t keyper .
#   docker run -p 8080:8080 -v keyper-data:/var/lib/keyper keyper
#   # a cluster member: docker run ... keyper serve --data-dir /var/lib/keyper --node-id node2 \
#   #   --http-addr :8080 --enable-raft --raft-addr <reachable ip>:12000 --join http://node1:8080
#
# SWIFT_IMAGE: a Swift 6.1 or later image; RUNTIME_IMAGE: the same distribution, without Swift.
ARG SWIFT_IMAGE=swift:6.1-noble
ARG RUNTIME_IMAGE=ubuntu:24.04

FROM ${SWIFT_IMAGE} AS build
RUN apt-get update && apt-get install -y --no-install-recommends libsqlite3-dev && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY . .
RUN swift build -c release --product keyper --static-swift-stdlib \
    && install -D -m 0755 "$(swift build -c release --show-bin-path)/keyper" /out/keyper

FROM ${RUNTIME_IMAGE}
RUN apt-get update && apt-get install -y --no-install-recommends libsqlite3-0 ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --system --uid 10001 --home /var/lib/keyper --shell /usr/sbin/nologin keyper \
    && install -d -o keyper -g keyper -m 0750 /var/lib/keyper
COPY --from=build /out/keyper /usr/local/bin/keyper
USER keyper
WORKDIR /var/lib/keyper
VOLUME /var/lib/keyper
EXPOSE 8080 12000
HEALTHCHECK --interval=10s --timeout=5s CMD ["keyper", "status", "--endpoints", "http://127.0.0.1:8080"]
ENTRYPOINT ["keyper"]
CMD ["serve", "--data-dir", "/var/lib/keyper", "--http-addr", ":8080"]
