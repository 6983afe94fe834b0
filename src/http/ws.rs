//! `GET /ws`: upgrades to the browser protocol and starts a [`ClientSession`].
//!
//! The session's output goes through the [pump](crate::session::pump) so the session keeps running
//! (and can shed load) when the client stops reading.

use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_http::ws::Codec;
use actix_web::{web, HttpRequest, HttpResponse};
use actix_web_actors::ws::{self, WebsocketContext};

use super::AppState;
use crate::session::pump::pump;
use crate::session::{ClientSession, SessionStats};

/// Upgrades the connection and starts the session actor.
pub async fn upgrade(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<AppState>,
) -> actix_web::Result<HttpResponse> {
    let mut response = ws::handshake(&req)?;
    let id = state.next_session.fetch_add(1, Ordering::Relaxed);
    let peer = req
        .peer_addr()
        .map(|a| a.to_string())
        .unwrap_or_else(|| "unknown".into());
    let stats = Arc::new(SessionStats::new(id, peer));
    let session = ClientSession::new(
        id,
        state.sessions.clone(),
        state.registry.clone(),
        stats.clone(),
    );
    let codec = Codec::new().max_size(state.sessions.settings.max_frame_bytes);
    let body = WebsocketContext::with_codec(session, payload, codec);
    Ok(response.streaming(pump(body, stats)))
}
