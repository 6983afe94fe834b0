//! `GET /ws`: upgrades to the browser protocol and starts a [`ClientSession`].
//!
//! The session actor runs on this worker's arbiter beside the worker's [hub](crate::hub); the
//! response body drains the session's outbox, so the actor keeps running (and conflating) while the
//! client is not reading, and the body's end tells the session the connection is gone.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix::{Actor, AsyncContext};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws;

use super::AppState;
use crate::delivery::SessionStats;
use crate::hub::LocalHub;
use crate::outbox::{Outbox, OutboxBody};
use crate::session::incoming::IncomingFrames;
use crate::session::{ClientSession, ConnectionLost};

/// Upgrades the connection and starts the session actor.
pub async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let mut response = ws::handshake(&req)?;
    let Some(hub) = req.app_data::<LocalHub>().cloned() else {
        return Err(actix_web::error::ErrorInternalServerError(
            "this worker has no fan-out hub",
        ));
    };
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let peer = req
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into());
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
    let frames = IncomingFrames::new(payload, settings.max_frame_bytes);
    let addr = ClientSession::create(move |ctx| {
        ctx.add_stream(frames);
        session
    });
    let body = OutboxBody::new(outbox, Box::new(move || addr.do_send(ConnectionLost)));
    Ok(response.streaming(body))
}
