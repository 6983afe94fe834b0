//! Browser WebSocket upgrades: `GET /ws` becomes a [`ClientSession`] on this worker's thread.
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
use actix_http::{Request, Response, StatusCode};
use actix_web::web;
use futures_util::{SinkExt, StreamExt};
use log::debug;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use super::AppState;
use crate::delivery::SessionStats;
use crate::hub::LocalHub;
use crate::outbox::{Outbox, OutboxBody};
use crate::session::incoming::IncomingFrames;
use crate::session::{ClientSession, ConnectionLost};

/// The path of the browser protocol.
pub const PATH: &str = "/ws";

/// `GET /ws` without an upgrade: the browser protocol needs a WebSocket.
pub async fn not_upgraded() -> actix_web::HttpResponse {
    actix_web::HttpResponse::BadRequest().json(super::ApiError {
        error: "websocket_required",
        message: format!("{PATH} speaks the browser protocol over a WebSocket upgrade"),
    })
}

/// Answers an upgrade request (any path) and, for `/ws`, starts the session.
pub async fn upgrade(
    req: Request,
    mut framed: Framed<TcpStream, Codec>,
    state: web::Data<AppState>,
    hub: LocalHub,
) -> Result<(), actix_web::Error> {
    if req.path() != PATH {
        let res = Response::new(StatusCode::NOT_FOUND);
        framed
            .send(Message::Item((res.drop_body(), BodySize::Sized(0))))
            .await?;
        return Ok(());
    }
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
    start_session(parts.io, parts.read_buf, &state, hub);
    Ok(())
}

/// Starts the session actor on its socket and the task that writes its outbox out.
fn start_session(io: TcpStream, early: bytes::BytesMut, state: &AppState, hub: LocalHub) {
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let peer = io
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|_| "unknown".into());
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
    let (reader, mut writer) = io.into_split();
    let frames = IncomingFrames::new(reader, early, settings.max_frame_bytes);
    let addr = ClientSession::create(move |ctx| {
        ctx.add_stream(frames);
        session
    });
    let mut body = OutboxBody::new(outbox, Box::new(move || addr.do_send(ConnectionLost)));
    actix_web::rt::spawn(async move {
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
