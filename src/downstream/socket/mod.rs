//! The one socket layer: every client connection — a browser on `/ws`, an SDK program on a
//! market-data path or on `/stream` — from the answer to its upgrade request to its last byte.
//!
//! Owns: the connection after the HTTP upgrade. [`accept`] answers the handshake (or [`refuse`]
//! answers with a status and a reason); [`open`] splits the connection into the
//! [`IncomingFrames`] reader, which enforces the inbound limits before buffering, and a writer,
//! and builds the session's [`Peer`] (outbox under its byte budget, stats, input limits); [`run`]
//! starts the session actor on the reader and the writer task that drains the outbox. Which
//! session runs is decided by the caller (`http::ws`), which knows the protocols; this module
//! knows none, so its limits hold for every kind of peer.
//!
//! - [`reader`] — the incremental frame reader and its limits.
//! - [`frame`] — encoding the frames the server sends.

pub mod frame;
pub mod reader;

use std::sync::Arc;

use actix::{Actor, AsyncContext, Handler, StreamHandler};
use actix_codec::Framed;
use actix_http::body::BodySize;
use actix_http::h1::{Codec, Message};
use actix_http::ws::Frame;
use actix_http::{header, Request, Response, StatusCode};
use actix_tls::accept::rustls_0_23::TlsStream;
use bytes::{Bytes, BytesMut};
use futures_util::{SinkExt, StreamExt};
use log::debug;
use tokio::io::{AsyncRead, AsyncWrite, AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::TcpStream;

pub use self::reader::{InboundLimits, IncomingFrames, ReadError};
use super::delivery::{SessionId, SessionStats};
use super::hub::LocalHub;
use super::outbox::{Outbox, OutboxBody, OutboxLimits};
use super::peer::{ConnectionLost, InputLimits, Peer};

/// Everything one connection may make the daemon hold or do.
#[derive(Debug, Clone, Copy)]
pub struct ConnectionLimits {
    /// What the reader accepts before buffering.
    pub inbound: InboundLimits,
    /// Messages per second and invalid messages.
    pub input: InputLimits,
    /// What may wait to be sent.
    pub outbox: OutboxLimits,
}

/// Answers an upgrade request with `status` and a plain-text reason instead of upgrading.
pub async fn refuse<Io: Connection>(
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

/// Answers the WebSocket handshake: the connection and the bytes that came with the request, or
/// `None` when the request is not a valid upgrade (it has been answered with the reason).
pub async fn accept<Io: Connection>(
    req: &Request,
    mut framed: Framed<Io, Codec>,
) -> Result<Option<(Io, BytesMut)>, actix_web::Error> {
    let res = match actix_http::ws::handshake(req.head()) {
        Ok(mut builder) => builder.finish().drop_body(),
        Err(e) => {
            debug!("refused a WebSocket upgrade: {e}");
            let res = Response::from(&e).drop_body();
            framed
                .send(Message::Item((res, BodySize::Sized(0))))
                .await?;
            return Ok(None);
        }
    };
    framed.send(Message::Item((res, BodySize::None))).await?;
    let parts = framed.into_parts();
    Ok(Some((parts.io, parts.read_buf)))
}

/// A new session's connection: its peer core, the reader of its socket and the writer half.
/// `early` holds bytes read together with the upgrade request.
pub fn open<Io: Connection>(
    io: Io,
    early: BytesMut,
    (id, kind): (SessionId, &'static str),
    hub: LocalHub,
    limits: ConnectionLimits,
) -> (Peer, IncomingFrames<Io::Reader>, Io::Writer) {
    let stats = Arc::new(SessionStats::of_kind(id, kind, io.peer()).at(io.peer_ip()));
    let outbox = Outbox::new(limits.outbox, stats.clone()).shared();
    let (reader, writer) = io.split_io();
    let frames = IncomingFrames::new(reader, early, limits.inbound);
    (
        Peer::new(id, hub, outbox, stats, limits.input),
        frames,
        writer,
    )
}

/// Starts the session actor made by `make` on the frames of its socket, and the task that
/// writes its outbox out; the connection's `slot` is held until the writer ends.
pub fn run<A, R, W, S>(
    peer: Peer,
    frames: IncomingFrames<R>,
    writer: W,
    slot: S,
    make: impl FnOnce(Peer) -> A,
) where
    A: Actor<Context = actix::Context<A>>
        + StreamHandler<Result<Frame, ReadError>>
        + Handler<ConnectionLost>,
    R: AsyncRead + Unpin + 'static,
    W: AsyncWrite + Unpin + 'static,
    S: 'static,
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

/// Starts the task that drains a session's outbox into its socket. The connection's `slot`
/// among the open connections is given back when the task ends, with the connection.
fn spawn_writer<W: AsyncWrite + Unpin + 'static, S: 'static>(
    id: u64,
    mut writer: W,
    mut body: OutboxBody,
    slot: S,
) {
    actix_web::rt::spawn(async move {
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

/// A client connection, plain or TLS: split into a reader and a writer once the handshake is done.
pub trait Connection: AsyncRead + AsyncWrite + Unpin + 'static {
    type Reader: AsyncRead + Unpin + 'static;
    type Writer: AsyncWrite + Unpin + 'static;
    fn tcp(&self) -> &TcpStream;
    fn split_io(self) -> (Self::Reader, Self::Writer);

    /// The peer's address, for logs and the session list.
    fn peer(&self) -> String {
        self.tcp()
            .peer_addr()
            .map(|a| a.to_string())
            .unwrap_or_else(|_| "unknown".into())
    }

    /// The peer's IP address, for the limits that count per address.
    fn peer_ip(&self) -> Option<std::net::IpAddr> {
        self.tcp().peer_addr().ok().map(|a| a.ip())
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
