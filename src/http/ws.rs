//! WebSocket upgrades: `GET /ws` becomes a browser [`ClientSession`], Alpaca's stream paths an
//! [`SdkSession`] (market data) or [`SdkTradingSession`] (`/stream`), on this worker's thread.
//!
//! The upgrade leaves the HTTP/1 dispatcher: once the handshake is answered, the session owns the
//! socket through the [socket layer](crate::downstream::socket): the same reader, limits, outbox
//! budget and writer for every kind of session, which differ only in their protocol and in the
//! limits their settings section gives. No per-connection HTTP buffers stay behind, so an idle
//! browser costs little more than its session.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::h1::{Codec, Message};
use actix_http::{header, HttpMessage, Request, Response, StatusCode};
use actix_web::web;
use bytes::Bytes;
use futures_util::SinkExt;
use log::debug;

use super::limits::Slot;
use super::AppState;
use crate::browser::session::ClientSession;
use crate::downstream::delivery::SessionStats;
use crate::downstream::hub::LocalHub;
use crate::downstream::outbox::{Outbox, OutboxBody, OutboxLimits};
use crate::downstream::peer::{ConnectionLost, InputLimits, Peer};
use crate::downstream::socket::{spawn_writer, Connection, InboundLimits, IncomingFrames};
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
        return respond(&mut framed, StatusCode::FORBIDDEN, refusal.0).await;
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
            return respond(&mut framed, StatusCode::NOT_FOUND, reason).await;
        }
    };
    // A place among the open connections, held until the connection is gone.
    let ip = framed.io_ref().peer_ip();
    let slot = match state.connections.acquire(ip) {
        Ok(slot) => slot,
        Err(reason) => {
            debug!("refused a WebSocket upgrade on {path}: {reason}");
            return respond(&mut framed, StatusCode::TOO_MANY_REQUESTS, reason).await;
        }
    };
    let res = match actix_http::ws::handshake(req.head()) {
        Ok(mut builder) => builder.finish().drop_body(),
        Err(e) => {
            debug!("refused a WebSocket upgrade: {e}");
            let res = Response::from(&e).drop_body();
            framed
                .send(Message::Item((res, BodySize::Sized(0))))
                .await?;
            return Ok(());
        }
    };
    framed.send(Message::Item((res, BodySize::None))).await?;
    let parts = framed.into_parts();
    match stream {
        None => start_session(parts.io, parts.read_buf, &state, hub, slot),
        Some(stream) => {
            start_sdk_session(&req, stream, parts.io, parts.read_buf, &state, hub, slot)
        }
    }
    Ok(())
}

/// Answers an upgrade request with `status` and a plain-text reason instead of upgrading.
async fn respond<Io: Connection>(
    framed: &mut Framed<Io, Codec>,
    status: StatusCode,
    reason: String,
) -> Result<(), actix_web::Error> {
    let body = Bytes::from(reason);
    let mut res = Response::new(status);
    res.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    framed
        .send(Message::Item((
            res.drop_body(),
            BodySize::Sized(body.len() as u64),
        )))
        .await?;
    framed.send(Message::Chunk(Some(body))).await?;
    Ok(())
}

/// Which encoding an SDK program asked for (`Content-Type: application/msgpack`); options always
/// use msgpack, as Alpaca's do.
fn sdk_encoding(req: &Request, stream: Stream) -> Encoding {
    let msgpack = req
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.to_ascii_lowercase().contains("msgpack"));
    if msgpack || stream == Stream::Market(FeedKind::Options) {
        Encoding::Msgpack
    } else {
        Encoding::Json
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

/// One connection's limits, from its settings section.
struct Limits {
    inbound: InboundLimits,
    input: InputLimits,
    outbox: OutboxLimits,
}

impl Limits {
    fn browser(s: &SessionSettings) -> Limits {
        Limits {
            inbound: InboundLimits {
                max_message_bytes: s.max_frame_bytes,
                max_fragments: max_fragments(s.max_frame_bytes),
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

    fn sdk(s: &SdkSettings) -> Limits {
        Limits {
            inbound: InboundLimits {
                max_message_bytes: s.max_message_bytes,
                max_fragments: max_fragments(s.max_message_bytes),
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
}

/// Most frames one fragmented message may take: enough for fragments of 64 bytes, at least 64.
fn max_fragments(max_message_bytes: usize) -> usize {
    (max_message_bytes / 64).max(64)
}

/// A new session's connection: its peer core and the reader of its socket. The writer is
/// started by [`start`] once the session's actor exists.
fn connect<Io: Connection>(
    io: Io,
    early: bytes::BytesMut,
    state: &AppState,
    hub: LocalHub,
    (kind, limits): (&'static str, Limits),
) -> (Peer, IncomingFrames<Io::Reader>, Io::Writer) {
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let stats = Arc::new(SessionStats::of_kind(id, kind, io.peer()));
    let outbox = Outbox::new(limits.outbox, stats.clone()).shared();
    let (reader, writer) = io.split_io();
    let frames = IncomingFrames::new(reader, early, limits.inbound);
    (
        Peer::new(id, hub, outbox, stats, limits.input),
        frames,
        writer,
    )
}

/// Starts the actor made by `make` reading `frames`, and the task that writes its outbox out.
fn start<A, W>(
    peer: Peer,
    frames: IncomingFrames<impl tokio::io::AsyncRead + Unpin + 'static>,
    writer: W,
    slot: Slot,
    make: impl FnOnce(Peer) -> A,
) where
    A: Actor<Context = actix::Context<A>>
        + actix::StreamHandler<Result<actix_http::ws::Frame, crate::downstream::socket::ReadError>>
        + actix::Handler<ConnectionLost>,
    W: tokio::io::AsyncWrite + Unpin + 'static,
{
    let (id, outbox) = (peer.id, peer.outbox.clone());
    let session = make(peer);
    let addr = A::create(move |ctx| {
        ctx.add_stream(frames);
        session
    });
    let body = OutboxBody::new(outbox, Box::new(move || addr.do_send(ConnectionLost)));
    spawn_writer(id, writer, body, slot);
}

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
    let limits = Limits::sdk(&sdk.settings);
    let (peer, frames, writer) = connect(io, early, state, hub, (kind, limits));
    let registry = state.registry.clone();
    match stream {
        Stream::Market(feed) => {
            let encoding = sdk_encoding(req, stream);
            let auth = header_auth(req);
            start(peer, frames, writer, slot, |peer| {
                SdkSession::new(peer, (feed, encoding), sdk, registry, auth)
            });
        }
        Stream::Trading => {
            let account = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("account="))
                    .map(str::to_owned)
            });
            start(peer, frames, writer, slot, |peer| {
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
    let limits = Limits::browser(&state.sessions.settings);
    let (peer, frames, writer) = connect(io, early, state, hub, ("browser", limits));
    let (config, registry, book) = (
        state.sessions.clone(),
        state.registry.clone(),
        state.book.clone(),
    );
    start(peer, frames, writer, slot, |peer| {
        ClientSession::new(peer, config, registry, book)
    });
}
