//! WebSocket upgrades: `GET /ws` becomes a browser [`ClientSession`], Alpaca's stream paths an
//! [`SdkSession`] (market data) or [`SdkTradingSession`] (`/stream`), on this worker's thread.
//!
//! The upgrade leaves the HTTP/1 dispatcher: once the handshake is answered, the session owns the
//! socket. It reads frames into a buffer sized to what arrives, and a writer task drains the
//! session's outbox into the socket, one write per batch of waiting frames; while the socket is
//! full the outbox conflates. No per-connection HTTP buffers stay behind, so an idle browser costs
//! little more than its session.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::h1::{Codec, Message};
use actix_http::{header, HttpMessage, Request, Response, StatusCode};
use actix_tls::accept::rustls_0_23::TlsStream;
use actix_web::web;
use bytes::Bytes;
use futures_util::{SinkExt, StreamExt};
use log::debug;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

use super::limits::Slot;
use super::AppState;
use crate::delivery::SessionStats;
use crate::hub::LocalHub;
use crate::outbox::{Outbox, OutboxBody};
use crate::sdk::session::{HeaderAuth, SdkSession};
use crate::sdk::trading::SdkTradingSession;
use crate::sdk::{Routes, Stream};
use crate::session::incoming::IncomingFrames;
use crate::session::{ClientSession, ConnectionLost};
use crate::upstream::protocol::Encoding;
use crate::upstream::FeedKind;

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
    let ip = http_peer_ip(framed.io_ref());
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
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let peer = io.peer();
    let sdk = state.sdk.clone();
    let kind = match stream {
        Stream::Market(FeedKind::Stocks) => "sdk:stocks",
        Stream::Market(FeedKind::Crypto) => "sdk:crypto",
        Stream::Market(FeedKind::Options) => "sdk:options",
        Stream::Market(FeedKind::News) => "sdk:news",
        Stream::Trading => "sdk:trading",
    };
    let stats = Arc::new(SessionStats::of_kind(id, kind, peer));
    let outbox = Outbox::for_sdk(sdk.settings.max_queued_bytes, stats.clone()).shared();
    let (reader, writer) = io.split_io();
    let frames = IncomingFrames::new(reader, early, sdk.max_client_message);
    let lost: Box<dyn FnOnce()> = match stream {
        Stream::Market(feed) => {
            let session = SdkSession::new(
                id,
                feed,
                sdk_encoding(req, stream),
                sdk,
                state.registry.clone(),
                hub,
                outbox.clone(),
                stats,
                header_auth(req),
            );
            let addr = SdkSession::create(move |ctx| {
                ctx.add_stream(frames);
                session
            });
            Box::new(move || addr.do_send(ConnectionLost))
        }
        Stream::Trading => {
            let account = req.uri().query().and_then(|q| {
                q.split('&')
                    .find_map(|kv| kv.strip_prefix("account="))
                    .map(str::to_owned)
            });
            let session = SdkTradingSession::new(
                id,
                sdk,
                state.registry.clone(),
                hub,
                outbox.clone(),
                stats,
                account,
            );
            let addr = SdkTradingSession::create(move |ctx| {
                ctx.add_stream(frames);
                session
            });
            Box::new(move || addr.do_send(ConnectionLost))
        }
    };
    spawn_writer(id, writer, OutboxBody::new(outbox, lost), slot);
}

/// The task that drains a session's outbox into its socket.
fn spawn_writer<W: AsyncWrite + Unpin + 'static>(
    id: u64,
    mut writer: W,
    mut body: OutboxBody,
    slot: Slot,
) {
    actix_web::rt::spawn(async move {
        // The connection's place is given back when this task ends, with the connection.
        let _slot = slot;
        while let Some(Ok(chunk)) = body.next().await {
            if let Err(e) = writer.write_all(&chunk).await {
                debug!("session {id}: write failed: {e}");
                break;
            }
        }
        let _ = writer.shutdown().await;
        // Dropping the body tells the session the connection is over.
    });
}

/// The client's IP address, for the per-address connection limit.
fn http_peer_ip<Io: Connection>(io: &Io) -> Option<std::net::IpAddr> {
    io.tcp().peer_addr().ok().map(|a| a.ip())
}

/// A client connection, plain or TLS: split into a reader and a writer once the handshake is done.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + 'static {
    type Reader: AsyncRead + Unpin + 'static;
    type Writer: AsyncWrite + Unpin + 'static;
    fn tcp(&self) -> &TcpStream;
    fn split_io(self) -> (Self::Reader, Self::Writer);

    fn peer(&self) -> String {
        self.tcp()
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "unknown".into())
    }
}

impl Connection for TcpStream {
    type Reader = OwnedReadHalf;
    type Writer = OwnedWriteHalf;

    fn tcp(&self) -> &TcpStream {
        self
    }

    fn split_io(self) -> (OwnedReadHalf, OwnedWriteHalf) {
        self.into_split()
    }
}

impl Connection for TlsStream<TcpStream> {
    type Reader = ReadHalf<Self>;
    type Writer = WriteHalf<Self>;

    fn tcp(&self) -> &TcpStream {
        self.get_ref().0
    }

    fn split_io(self) -> (ReadHalf<Self>, WriteHalf<Self>) {
        tokio::io::split(self)
    }
}

/// Starts the session actor on its socket and the task that writes its outbox out.
fn start_session<Io: Connection>(
    io: Io,
    early: bytes::BytesMut,
    state: &AppState,
    hub: LocalHub,
    slot: Slot,
) {
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let peer = io.peer();
    let settings = &state.sessions.settings;
    let stats = Arc::new(SessionStats::new(id, peer));
    let outbox = Outbox::new(settings.max_queued_events, stats.clone()).shared();
    let session = ClientSession::new(
        id,
        state.sessions.clone(),
        state.registry.clone(),
        hub,
        state.book.clone(),
        outbox.clone(),
        stats,
    );
    let (reader, writer) = io.split_io();
    let frames = IncomingFrames::new(reader, early, settings.max_frame_bytes);
    let addr = ClientSession::create(move |ctx| {
        ctx.add_stream(frames);
        session
    });
    let body = OutboxBody::new(outbox, Box::new(move || addr.do_send(ConnectionLost)));
    spawn_writer(id, writer, body, slot);
}
