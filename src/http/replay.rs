//! `POST /api/v1/replay` `{"action":"play"|"pause"}`: an operator plays or pauses a replay
//! (`admin` scope). Talks to the replay's control only; `/api/v1/status` shows where it is.

use actix_web::{web, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::auth::refusal;
use super::AppState;
use crate::auth::Principal;

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Command {
    action: String,
}

pub async fn command(state: web::Data<AppState>, who: Principal, body: web::Bytes) -> HttpResponse {
    if let Some(refused) = refusal(&who, who.scopes.admin(), "admin") {
        return refused;
    }
    let Some(control) = &state.replay else {
        return HttpResponse::Conflict().json(json!({
            "error": "not_replaying",
            "message": "this daemon is not replaying a record (provider is not \"replay\")",
        }));
    };
    let command: Command = match serde_json::from_slice(&body) {
        Ok(c) => c,
        Err(e) => {
            return HttpResponse::BadRequest().json(json!({
                "error": "bad_request",
                "message": format!("expected {{\"action\":\"play\"|\"pause\"}}: {e}"),
            }))
        }
    };
    if !matches!(command.action.as_str(), "play" | "pause") {
        return HttpResponse::BadRequest().json(json!({
            "error": "bad_request",
            "message": format!("unknown action {:?}: use \"play\" or \"pause\"", command.action),
        }));
    }
    match control.command(&command.action) {
        Ok(_) => HttpResponse::Ok().json(control.status()),
        Err(message) => HttpResponse::Conflict().json(json!({
            "error": "refused",
            "message": message,
        })),
    }
}
