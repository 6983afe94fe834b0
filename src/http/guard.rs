//! Which requests a browser may make: the Host a request names, the Origin a page sends, the
//! content type of a state-changing call. Decisions only, in a plain struct ([`RequestGuard`]);
//! the WebSocket upgrade hook and the REST middleware ([`check`]) apply them.
//!
//! - **Host** (every request, every path): a loopback name, an IP address, the bind address or one
//!   of `[http] allowed_hosts`. A DNS-rebinding page reaches the daemon under the attacker's own
//!   name, which is none of these.
//! - **Origin** (WebSocket upgrades and POST/PUT/PATCH/DELETE): absent (programs, curl), the
//!   request's own Host (the dashboard), or one of `[http] allowed_origins`. Another site's page
//!   cannot open `/ws` or the SDK paths, nor move subscriptions.
//! - **Content type** (POST/PUT/PATCH/DELETE): `application/json`. A cross-site form or `text/plain`
//!   request (which browsers send without a preflight) is refused.
//!
//! Refusals are HTTP 403 with the reason, before any work.

use actix_web::body::{BoxBody, EitherBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::{header, Method};
use actix_web::middleware::Next;
use actix_web::{web, HttpResponse};

use super::{ApiError, AppState};
use crate::settings::HttpSettings;

/// The Host and Origin policy.
#[derive(Debug, Clone, Default)]
pub struct RequestGuard {
    /// Host names (lower case, no port) besides loopback names and IP addresses.
    hosts: Vec<String>,
    /// Origins (`scheme://host[:port]`, lower case) besides the request's own.
    origins: Vec<String>,
}

/// Why a request is refused.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Refusal(pub String);

impl RequestGuard {
    pub fn from_settings(http: &HttpSettings) -> RequestGuard {
        let mut hosts: Vec<String> = http
            .allowed_hosts
            .iter()
            .map(|h| h.trim().to_ascii_lowercase())
            .collect();
        let bind = http.host.trim().to_ascii_lowercase();
        if !bind.is_empty() {
            hosts.push(bind);
        }
        RequestGuard {
            hosts,
            origins: http
                .allowed_origins
                .iter()
                .map(|o| o.trim().trim_end_matches('/').to_ascii_lowercase())
                .collect(),
        }
    }

    /// The Host header (`name[:port]`, `[v6][:port]`) must name this daemon.
    pub fn host(&self, host: Option<&str>) -> Result<(), Refusal> {
        let Some(host) = host.map(str::trim).filter(|h| !h.is_empty()) else {
            return Err(Refusal("the request has no Host header".into()));
        };
        let name = host_name(host).to_ascii_lowercase();
        let ok = matches!(name.as_str(), "localhost" | "localhost.")
            || name.ends_with(".localhost")
            || name.parse::<std::net::IpAddr>().is_ok()
            || self.hosts.contains(&name);
        if ok {
            Ok(())
        } else {
            Err(Refusal(format!(
                "Host {host:?} is not one this daemon serves; add it to [http] allowed_hosts"
            )))
        }
    }

    /// A browser's Origin must be the request's own Host or an allowed origin.
    pub fn origin(&self, origin: Option<&str>, host: Option<&str>) -> Result<(), Refusal> {
        let Some(origin) = origin.map(str::trim) else {
            return Ok(()); // not a browser
        };
        let origin = origin.trim_end_matches('/').to_ascii_lowercase();
        let same = origin
            .split_once("://")
            .zip(host)
            .is_some_and(|((_, authority), host)| authority == host.trim().to_ascii_lowercase());
        if same || self.origins.contains(&origin) {
            Ok(())
        } else {
            Err(Refusal(format!(
                "Origin {origin:?} may not use this daemon; add it to [http] allowed_origins"
            )))
        }
    }

    /// A state-changing call must carry JSON.
    pub fn content_type(&self, method: &Method, content_type: Option<&str>) -> Result<(), Refusal> {
        if !changes_state(method) {
            return Ok(());
        }
        let json = content_type
            .and_then(|c| c.split(';').next())
            .is_some_and(|c| c.trim().eq_ignore_ascii_case("application/json"));
        if json {
            Ok(())
        } else {
            Err(Refusal(format!(
                "{method} needs Content-Type: application/json"
            )))
        }
    }
}

fn changes_state(method: &Method) -> bool {
    matches!(
        *method,
        Method::POST | Method::PUT | Method::PATCH | Method::DELETE
    )
}

/// `name` of `name:port`, `v6` of `[v6]:port`.
pub(crate) fn host_name(host: &str) -> &str {
    if let Some(rest) = host.strip_prefix('[') {
        return rest.split(']').next().unwrap_or_default();
    }
    match host.rsplit_once(':') {
        Some((name, port)) if port.bytes().all(|b| b.is_ascii_digit()) => name,
        _ => host,
    }
}

/// The 403 answer.
pub fn refused(refusal: &Refusal) -> HttpResponse {
    HttpResponse::Forbidden().json(ApiError {
        error: "forbidden",
        message: refusal.0.clone(),
    })
}

/// Applies the guard to every REST request (WebSocket upgrades are checked in their hook).
pub async fn check(
    req: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<EitherBody<impl MessageBody, BoxBody>>, actix_web::Error> {
    let verdict = match req.app_data::<web::Data<AppState>>() {
        Some(state) => {
            let headers = req.headers();
            let get = |name| headers.get(name).and_then(|v| v.to_str().ok());
            // HTTP/2 carries the host as `:authority`, which becomes the URI's authority; an
            // HTTP/1.1 request carries a Host header.
            let host = get(header::HOST).or_else(|| req.uri().authority().map(|a| a.as_str()));
            let guard = &state.guard;
            guard.host(host).and_then(|()| {
                if changes_state(req.method()) {
                    guard.origin(get(header::ORIGIN), host)?;
                }
                guard.content_type(req.method(), get(header::CONTENT_TYPE))
            })
        }
        None => Ok(()),
    };
    match verdict {
        Ok(()) => next
            .call(req)
            .await
            .map(ServiceResponse::map_into_left_body),
        Err(refusal) => {
            log::debug!("refused {} {}: {}", req.method(), req.path(), refusal.0);
            Ok(req.into_response(refused(&refusal)).map_into_right_body())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn guard() -> RequestGuard {
        RequestGuard::from_settings(&HttpSettings {
            allowed_hosts: vec!["Prices.Example.com".into()],
            allowed_origins: vec!["https://app.example.com/".into()],
            ..HttpSettings::default()
        })
    }

    #[test]
    fn hosts_the_daemon_serves() {
        let g = guard();
        for ok in [
            "127.0.0.1:8080",
            "localhost:8080",
            "localhost",
            "[::1]:8080",
            "10.0.0.5:8080",
            "prices.example.com",
            "dash.localhost:3000",
        ] {
            assert!(g.host(Some(ok)).is_ok(), "{ok}");
        }
        for bad in [
            "evil.example:8080",
            "127.0.0.1.evil.example",
            "",
            "localhost.evil",
        ] {
            assert!(g.host(Some(bad)).is_err(), "{bad}");
        }
        assert!(g.host(None).is_err());
    }

    #[test]
    fn origins_the_daemon_accepts() {
        let g = guard();
        let host = Some("127.0.0.1:8080");
        assert!(g.origin(None, host).is_ok(), "no Origin: not a browser");
        assert!(g.origin(Some("http://127.0.0.1:8080"), host).is_ok());
        assert!(g.origin(Some("https://app.example.com"), host).is_ok());
        let refused = g.origin(Some("https://evil.example"), host).unwrap_err();
        assert!(refused.0.contains("allowed_origins"), "{refused:?}");
        assert!(g.origin(Some("http://127.0.0.1:9999"), host).is_err());
        assert!(g.origin(Some("null"), host).is_err());
    }

    #[test]
    fn state_changing_calls_carry_json() {
        let g = guard();
        assert!(g.content_type(&Method::GET, None).is_ok());
        assert!(g
            .content_type(&Method::POST, Some("application/json; charset=utf-8"))
            .is_ok());
        assert!(g.content_type(&Method::POST, Some("text/plain")).is_err());
        assert!(g.content_type(&Method::DELETE, None).is_err());
    }
}
