//! Who a REST request comes from: `Authorization: Bearer <key_id>:<secret>` names a client, no
//! header means the anonymous scopes. Handlers take a [`Principal`] argument and ask [`refusal`]
//! for the scope they need.
//!
//! A malformed or unknown credential is refused with 401 before the handler runs (it never falls
//! back to anonymous, so a typo is not silently a weaker caller); a missing scope is 401 for an
//! anonymous caller (sign in) and 403 for a client (ask for the scope). While the caller's
//! address is delayed for its refused credentials the answer is 429 with `Retry-After`. Every
//! refused credential also closes the connection, so guesses cannot be pipelined on one.

use std::future::{ready, Ready};

use actix_web::dev::Payload;
use actix_web::error::InternalError;
use actix_web::http::header;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse};

use super::{ApiError, AppState};
use crate::auth::{retry_after, Attempt, Principal, Refusal};

fn unauthorized(message: String) -> HttpResponse {
    HttpResponse::Unauthorized()
        .insert_header((header::WWW_AUTHENTICATE, "Bearer realm=\"tickrelay\""))
        .json(ApiError {
            error: "unauthorized",
            message,
        })
}

/// The answer to a refused credential; the connection closes after it.
fn refused(refusal: Refusal) -> HttpResponse {
    let mut response = match refusal {
        Refusal::Delayed(left) => HttpResponse::TooManyRequests()
            .insert_header((header::RETRY_AFTER, retry_after(left).to_string()))
            .json(ApiError {
                error: "too_many_failures",
                message: format!("{refusal}; wait and send the right credential"),
            }),
        _ => unauthorized(format!(
            "{refusal}; send Authorization: Bearer <key_id>:<secret>"
        )),
    };
    response
        .head_mut()
        .set_connection_type(actix_web::http::ConnectionType::Close);
    response
}

impl FromRequest for Principal {
    type Error = actix_web::Error;
    type Future = Ready<Result<Principal, actix_web::Error>>;

    fn from_request(req: &HttpRequest, _: &mut Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<AppState>>() else {
            return ready(Err(actix_web::error::ErrorInternalServerError(
                "no application state",
            )));
        };
        let Some(value) = req.headers().get(header::AUTHORIZATION) else {
            return ready(Ok(state.auth.anonymous()));
        };
        let at = Attempt {
            from: req.peer_addr().map(|a| a.ip()),
            via: "REST",
        };
        let result = match value.to_str() {
            Ok(v) => state.auth.bearer(at, v),
            Err(_) => Err(state.auth.malformed(at)),
        };
        ready(result.map_err(|refusal| {
            // The header may hold a secret pasted in the wrong place: never logged. The auth
            // table logs refusals per address, counted.
            log::debug!(
                "REST {} {}: credential refused ({refusal})",
                req.method(),
                req.path()
            );
            InternalError::from_response(refusal.to_string(), refused(refusal)).into()
        }))
    }
}

/// `None` when `allowed`; otherwise the refusal: 401 for an anonymous caller, 403 for a client.
pub fn refusal(who: &Principal, allowed: bool, scope: &str) -> Option<HttpResponse> {
    if allowed {
        return None;
    }
    Some(match &who.client {
        None => unauthorized(format!(
            "this needs the {scope} scope, which anonymous callers do not have; send Authorization: Bearer <key_id>:<secret>"
        )),
        Some(client) => HttpResponse::Forbidden().json(ApiError {
            error: "forbidden",
            message: format!("client {client} does not have the {scope} scope"),
        }),
    })
}
