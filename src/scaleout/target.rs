//! How to reach Redis: the `[redis]` URL (`redis://` or `rediss://` for TLS), the ACL user
//! and its password (`TICKRELAY_REDIS_PASSWORD`, never a file), and for TLS the CA and client
//! certificate files. Built once at start-up — a file that cannot be read is a start-up error —
//! and cloned into every Redis link: the price sink, the lease, the relay and the edge feeds.
//! Shown ([`RedisTarget::server`]) without user or password.

use redis::{IntoConnectionInfo, TlsCertificates};

use crate::credentials::Secret;
use crate::settings::RedisSettings;

/// Where Redis is and how to sign in.
#[derive(Clone)]
pub struct RedisTarget {
    url: String,
    username: Option<String>,
    password: Option<Secret>,
    /// PEM bytes: the CA that signed the server's certificate, and the client's certificate and
    /// key (`tls-auth-clients`).
    ca: Option<Vec<u8>>,
    client_cert: Option<(Vec<u8>, Vec<u8>)>,
}

impl std::fmt::Debug for RedisTarget {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisTarget")
            .field("server", &self.server())
            .field("username", &self.username)
            .finish_non_exhaustive()
    }
}

impl RedisTarget {
    /// The target `[redis]` describes; an error names the file that cannot be read.
    pub fn from_settings(redis: &RedisSettings) -> Result<RedisTarget, String> {
        let read = |key: &str, path: &str| -> Result<Option<Vec<u8>>, String> {
            if path.is_empty() {
                return Ok(None);
            }
            std::fs::read(path)
                .map(Some)
                .map_err(|e| format!("redis.{key}: cannot read {path:?}: {e}"))
        };
        let client_cert = match (
            read("cert_file", &redis.cert_file)?,
            read("key_file", &redis.key_file)?,
        ) {
            (Some(cert), Some(key)) => Some((cert, key)),
            _ => None,
        };
        Ok(RedisTarget {
            url: redis.url.clone(),
            username: Some(redis.username.clone()).filter(|u| !u.is_empty()),
            password: redis.password.clone(),
            ca: read("ca_file", &redis.ca_file)?,
            client_cert,
        })
    }

    /// A target at `url` with nothing else (tests and tools).
    pub fn url(url: &str) -> RedisTarget {
        RedisTarget {
            url: url.to_owned(),
            username: None,
            password: None,
            ca: None,
            client_cert: None,
        }
    }

    /// `host:port/db`, for logs and status: never the user or password.
    pub fn server(&self) -> String {
        super::server_of(&self.url)
    }

    /// The URL without user or password: `rediss://host:port/db`.
    pub fn shown(&self) -> String {
        let scheme = self.url.split_once("://").map_or("redis", |(s, _)| s);
        format!("{scheme}://{}", self.server())
    }

    /// A client for it (connections are opened by the caller).
    pub fn client(&self) -> redis::RedisResult<redis::Client> {
        let mut info = self.url.as_str().into_connection_info()?;
        let mut settings = info.redis_settings().clone();
        if let Some(user) = &self.username {
            settings = settings.set_username(user);
        }
        if let Some(password) = &self.password {
            settings = settings.set_password(password.expose());
        }
        info = info.set_redis_settings(settings);
        if self.ca.is_none() && self.client_cert.is_none() {
            return redis::Client::open(info);
        }
        redis::Client::build_with_tls(
            info,
            TlsCertificates {
                client_tls: self.client_cert.clone().map(|(client_cert, client_key)| {
                    redis::ClientTlsConfig {
                        client_cert,
                        client_key,
                    }
                }),
                root_cert: self.ca.clone(),
            },
        )
    }
}
