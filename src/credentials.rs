//! Key pairs and secrets: values that must reach the one place that sends them and never a log.
//!
//! Read from the environment by [`settings`](crate::settings); sent in auth messages by the
//! upstream connections and the trading REST client. A leaf module.

use std::fmt;

/// A string that never prints: `Debug` and `Display` show `[redacted]`.
#[derive(Clone, PartialEq, Eq)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Self(value.into())
    }

    /// The secret itself, for the one place that must send it (the auth message).
    pub fn expose(&self) -> &str {
        &self.0
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("[redacted]")
    }
}

/// An Alpaca key pair. The key id is not secret by itself but is still kept out of logs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Credentials {
    pub key_id: Secret,
    pub secret_key: Secret,
}
