//! WebSocket upgrades: `GET /ws` becomes a browser [`ClientSession`], Alpaca's stream paths an
//! [`SdkSession`] (market data) or [`SdkTradingSession`] (`/stream`), on this worker's thread.
//!
//! The upgrade leaves the HTTP/1 dispatcher: once the handshake is answered, the session owns the
//! socket through the [socket layer](crate::downstream::socket): the same reader, limits, outbox
//! budget and writer for every kind of session, which differ only in their protocol and in the
//! limits their settings section gives. No per-connection HTTP buffers stay behind, so an idle
//! browser costs little more than its session.

use std::sync::atomic::Ordering;

use actix_codec::Framed;
use actix_http::h1::Codec;
use actix_http::{header, HttpMessage, Request, StatusCode};
use actix_web::web;
use log::debug;

use super::limits::Slot;
use super::AppState;
use crate::browser::session::ClientSession;
use crate::downstream::hub::LocalHub;
use crate::downstream::outbox::OutboxLimits;
use crate::downstream::peer::InputLimits;
use crate::downstream::socket::{
    self, accept, refuse, Connection, ConnectionLimits, InboundLimits,
};
use crate::sdk::session::{HeaderAuth, SdkSession};
use crate::sdk::trading::SdkTradingSession;
use crate::sdk::{Routes, Stream};
use crate::settings::{ms, SdkSettings, SessionSettings};
use crate::vocab::Encoding;
use crate::vocab::FeedKind;

/// The path of the browser protocol.
pub const PATH: &str = "/ws";

/// `GET /ws` without an upgrade: the browser protocol needs a WebSocket.
pub async fn not_upgraded() -> actix_web::HttpResponse {
    actix_web::HttpResponse::BadRequest().json(super::ApiError {
        error: "websocket_required",
        message: format!("{PATH} speaks the browser protocol over a WebSocket upgrade"),
    })
}

/// Answers an upgrade request (any path): `/ws` starts a browser session, Alpaca's stream paths
/// an SDK session; any other path, or a feed this daemon does not carry, gets a 404 with the
/// reason.
pub async fn upgrade<Io: Connection>(
    req: Request,
    mut framed: Framed<Io, Codec>,
    state: web::Data<AppState>,
    hub: LocalHub,
) -> Result<(), actix_web::Error> {
    let path = req.path().to_owned();
    let header = |name| req.headers().get(name).and_then(|v| v.to_str().ok());
    let host = header(header::HOST);
    let allowed = state
        .guard
        .host(host)
        .and_then(|()| state.guard.origin(header(header::ORIGIN), host));
    if let Err(refusal) = allowed {
        debug!("refused a WebSocket upgrade on {path}: {}", refusal.0);
        return refuse(&mut framed, StatusCode::FORBIDDEN, refusal.0).await;
    }
    let target = if path == PATH {
        Ok(None)
    } else if Routes::claims(&path) {
        state.sdk.routes.route(&path).map(Some)
    } else {
        Err(format!("{path} is not a WebSocket endpoint of tickrelay"))
    };
    let stream = match target {
        Ok(stream) => stream,
        Err(reason) => {
            debug!("refused a WebSocket upgrade: {reason}");
            return refuse(&mut framed, StatusCode::NOT_FOUND, reason).await;
        }
    };
    // A place among the open connections, held until the connection is gone.
    let ip = framed.io_ref().peer_ip();
    let slot = match state.connections.acquire(ip) {
        Ok(slot) => slot,
        Err(reason) => {
            debug!("refused a WebSocket upgrade on {path}: {reason}");
            return refuse(&mut framed, StatusCode::TOO_MANY_REQUESTS, reason).await;
        }
    };
    let Some((io, early)) = accept(&req, framed).await? else {
        return Ok(());
    };
    match stream {
        None => start_session(io, early, &state, hub, slot),
        Some(stream) => start_sdk_session(&req, stream, io, early, &state, hub, slot),
    }
    Ok(())
}

/// Which encoding an SDK program asked for (`Content-Type: application/msgpack`), and whether it
/// asked: options always use msgpack, as Alpaca's do (a client that did not ask is told 412 if it
/// then speaks JSON).
fn sdk_encoding(req: &Request, stream: Stream) -> (Encoding, bool) {
    let msgpack = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("msgpack"));
    if msgpack || stream == Stream::Market(FeedKind::Options) {
        (Encoding::Msgpack, msgpack)
    } else {
        (Encoding::Json, false)
    }
}

/// Alpaca's header authentication on the upgrade.
fn header_auth(req: &Request) -> Option<HeaderAuth> {
    let get = |name: &str| {
        req.headers()
            .get(name)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    };
    Some(HeaderAuth {
        key: get("apca-api-key-id")?,
        secret: get("apca-api-secret-key")?,
    })
}

/// A browser's limits, from `[session]`.
fn browser_limits(s: &SessionSettings) -> ConnectionLimits {
    ConnectionLimits {
        inbound: InboundLimits {
            max_message_bytes: s.max_frame_bytes,
            max_fragments: MAX_FRAGMENTS,
            message_timeout: ms(s.message_timeout_ms),
        },
        input: InputLimits {
            max_message_bytes: s.max_frame_bytes,
            max_messages_per_second: s.max_messages_per_second,
            max_invalid_messages: s.max_invalid_messages,
        },
        outbox: OutboxLimits {
            max_bytes: s.max_queued_bytes,
            max_events: s.max_queued_events,
        },
    }
}

/// An SDK program's limits, from `[sdk]`.
fn sdk_limits(s: &SdkSettings) -> ConnectionLimits {
    ConnectionLimits {
        inbound: InboundLimits {
            max_message_bytes: s.max_message_bytes,
            max_fragments: MAX_FRAGMENTS,
            message_timeout: ms(s.message_timeout_ms),
        },
        input: InputLimits {
            max_message_bytes: s.max_message_bytes,
            max_messages_per_second: s.max_messages_per_second,
            max_invalid_messages: s.max_invalid_messages,
        },
        // SDK programs get no droppable events: only data and replies, under the budget.
        outbox: OutboxLimits {
            max_bytes: s.max_queued_bytes,
            max_events: 16,
        },
    }
}

/// Most frames one fragmented message may take: room for what clients do (alpaca-py sends a
/// subscribe in a few fragments), not for floods of tiny fragments.
const MAX_FRAGMENTS: usize = 256;

/// Starts an SDK session (market data or trading) on its socket.
fn start_sdk_session<Io: Connection>(
    req: &Request,
    stream: Stream,
    io: Io,
    early: bytes::BytesMut,
    state: &AppState,
    hub: LocalHub,
    slot: Slot,
) {
    let sdk = state.sdk.clone();
    let kind = match stream {
        Stream::Market(FeedKind::Stocks) => "sdk:stocks",
        Stream::Market(FeedKind::Crypto) => "sdk:crypto",
        Stream::Market(FeedKind::Options) => "sdk:options",
        Stream::Market(FeedKind::News) => "sdk:news",
        Stream::Trading => "sdk:trading",
    };
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let limits = sdk_limits(&sdk.settings);
    let (peer, frames, writer) = socket::open(io, early, (id, kind), hub, limits);
    let registry = state.registry.clone();
    match stream {
        Stream::Market(feed) => {
            let (encoding, asked) = sdk_encoding(req, stream);
            let auth = header_auth(req);
            socket::run(peer, frames, writer, slot, |peer| {
                SdkSession::new(peer, (feed, encoding), sdk, registry, auth).msgpack_asked(asked)
            });
        }
        Stream::Trading => {
            let account = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("account="))
                    .map(str::to_owned)
            });
            socket::run(peer, frames, writer, slot, |peer| {
                SdkTradingSession::new(peer, sdk, registry, account)
            });
        }
    }
}

/// Starts a browser session on its socket.
fn start_session<Io: Connection>(
    io: Io,
    early: bytes::BytesMut,
    state: &AppState,
    hub: LocalHub,
    slot: Slot,
) {
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let limits = browser_limits(&state.sessions.settings);
    let (peer, frames, writer) = socket::open(io, early, (id, "browser"), hub, limits);
    let (config, registry, book) = (
        state.sessions.clone(),
        state.registry.clone(),
        state.book.clone(),
    );
    socket::run(peer, frames, writer, slot, |peer| {
        ClientSession::new(peer, config, registry, book)
    });
}
