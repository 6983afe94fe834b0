# syntax=docker/dockerfile:1
# tickrelay: a multi-stage build; the runtime image holds the binary, the settings and a
# non-root user.
#
#   docker build -t tickrelay .
#   docker run --rm -p 8080:8080 tickrelay                       # built-in simulator
#   docker run --rm -p 8080:8080 -e TICKRELAY__UPSTREAM__PROVIDER=alpaca \
#     -e TICKRELAY__AUTH__ANONYMOUS_SCOPES=market \
#     -e TICKRELAY__CLIENTS__OPS__KEY_ID=ops -e TICKRELAY__CLIENTS__OPS__SCOPES=market,account:main \
#     -e TICKRELAY_CLIENT_SECRET_OPS -e APCA_API_KEY_ID -e APCA_API_SECRET_KEY tickrelay  # real Alpaca
#
# With a real account the anonymous scopes must not include it (start-up error otherwise): the
# account is read by a client with its key pair (Authorization: Bearer ops:<secret>).

FROM rust:1-slim-bookworm AS build
WORKDIR /src
# The dependencies first, in their own layer: rebuilt only when Cargo.toml or Cargo.lock change.
# Every target the manifest names gets a placeholder so that cargo accepts it.
COPY Cargo.toml Cargo.lock ./
RUN mkdir -p src/bin/tickrelay-bench benches tests/api \
    && echo 'fn main() {}' > src/main.rs \
    && echo 'fn main() {}' > src/bin/tickrelay-bench/main.rs \
    && touch src/lib.rs \
    && echo 'fn main() {}' > benches/hotpath.rs \
    && echo 'fn main() {}' > benches/fanout.rs \
    && touch tests/api/main.rs \
    && cargo build --release --locked --bin tickrelay \
    && rm -rf src benches tests
# Then tickrelay itself.
COPY . .
RUN touch src/main.rs src/lib.rs \
    && cargo build --release --locked --bin tickrelay \
    && cp target/release/tickrelay /tickrelay \
    && strip /tickrelay

FROM debian:bookworm-slim
# The working directory is the user's: the recorder's segments go to records/ there (a volume).
RUN useradd --system --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin tickrelay \
    && mkdir -p /var/lib/tickrelay \
    && chown 10001:10001 /var/lib/tickrelay
WORKDIR /var/lib/tickrelay
VOLUME ["/var/lib/tickrelay"]
COPY --from=build /tickrelay /usr/local/bin/tickrelay
COPY settings.toml /etc/tickrelay/settings.toml
USER 10001:10001
# Listen on all interfaces inside the container; everything else comes from settings.toml and
# TICKRELAY__ variables.
ENV TICKRELAY__HTTP__HOST=0.0.0.0 \
    RUST_LOG=info
EXPOSE 8080
# SIGTERM closes every browser with 1001, stops the feeds and exits 0 within a few seconds.
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
    CMD ["tickrelay", "--config", "/etc/tickrelay/settings.toml", "healthcheck"]
ENTRYPOINT ["tickrelay", "--config", "/etc/tickrelay/settings.toml"]
