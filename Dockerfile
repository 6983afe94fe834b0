# syntax=docker/dockerfile:1
# tickrelay: multi-stage build, non-root runtime.
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
COPY . .
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin tickrelay \
    && cp target/release/tickrelay /tickrelay \
    && strip /tickrelay

FROM debian:bookworm-slim
RUN useradd --system --uid 10001 --no-create-home --shell /usr/sbin/nologin tickrelay
COPY --from=build /tickrelay /usr/local/bin/tickrelay
COPY settings.toml /etc/tickrelay/settings.toml
USER tickrelay
# Listen on all interfaces inside the container; everything else comes from settings.toml.
ENV TICKRELAY__HTTP__HOST=0.0.0.0 \
    RUST_LOG=info
EXPOSE 8080
STOPSIGNAL SIGTERM
HEALTHCHECK --interval=10s --timeout=3s --start-period=5s \
    CMD ["tickrelay", "--config", "/etc/tickrelay/settings.toml", "healthcheck"]
ENTRYPOINT ["tickrelay", "--config", "/etc/tickrelay/settings.toml"]
