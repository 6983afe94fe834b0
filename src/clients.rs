//! Who may use the Alpaca-compatible endpoint: the key pairs configured for tickrelay's own
//! clients (`[clients.<id>]`), never the upstream Alpaca keys.
//!
//! Built from the settings at start-up and read by the endpoint's sessions when a program sends
//! `auth`. A leaf module. Secrets are compared in constant time and never logged; with no client
//! configured every authentication is refused.

use std::sync::Arc;

use crate::credentials::Secret;
use crate::settings::ClientSettings;

/// One configured client.
#[derive(Debug)]
pub struct Client {
    /// Its id in the settings (`[clients.<id>]`), for logs and status.
    pub id: Arc<str>,
    pub key_id: String,
    secret: Secret,
    /// Accounts whose trade updates it may see.
    pub accounts: Vec<String>,
}

/// Every configured client.
#[derive(Debug, Default)]
pub struct Clients {
    clients: Vec<Client>,
}

impl Clients {
    /// The clients of the settings (validation has made sure each has a key id and a secret).
    pub fn from_settings<'a>(
        settings: impl IntoIterator<Item = (&'a String, &'a ClientSettings)>,
    ) -> Clients {
        let clients = settings
            .into_iter()
            .filter_map(|(id, c)| {
                Some(Client {
                    id: Arc::from(id.as_str()),
                    key_id: c.key_id.clone(),
                    secret: c.secret.clone()?,
                    accounts: c.accounts.clone(),
                })
            })
            .collect();
        Clients { clients }
    }

    pub fn is_empty(&self) -> bool {
        self.clients.is_empty()
    }

    /// The client whose key pair this is, if any. Every client's secret is compared, in constant
    /// time, so neither which key ids exist nor how much of a secret matched shows in the timing.
    pub fn authenticate(&self, key_id: &str, secret: &str) -> Option<&Client> {
        let mut found = None;
        for client in &self.clients {
            let key_ok = constant_time_eq(client.key_id.as_bytes(), key_id.as_bytes());
            let secret_ok = constant_time_eq(client.secret.expose().as_bytes(), secret.as_bytes());
            if key_ok & secret_ok {
                found = Some(client);
            }
        }
        found
    }
}

/// Whether `a == b`, taking the same time whatever their contents (the time depends only on the
/// longer length).
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    let len = a.len().max(b.len());
    let mut diff = u8::from(a.len() != b.len());
    for i in 0..len {
        let x = a.get(i).copied().unwrap_or(0);
        let y = b.get(i).copied().unwrap_or(0);
        diff |= x ^ y;
    }
    std::hint::black_box(diff) == 0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn clients() -> Clients {
        let mut settings = std::collections::BTreeMap::new();
        for (id, key, secret, accounts) in [
            (
                "algo",
                "algo-key",
                Some("algo-secret"),
                vec!["main".to_owned()],
            ),
            ("notebook", "nb-key", Some("nb-secret"), vec![]),
            ("unset", "unset-key", None, vec![]),
        ] {
            settings.insert(
                id.to_owned(),
                ClientSettings {
                    key_id: key.into(),
                    secret_env: None,
                    accounts,
                    secret: secret.map(Secret::new),
                },
            );
        }
        Clients::from_settings(&settings)
    }

    #[test]
    fn the_right_pair_finds_its_client_and_nothing_else_does() {
        let c = clients();
        let algo = c.authenticate("algo-key", "algo-secret").unwrap();
        assert_eq!(&*algo.id, "algo");
        assert_eq!(algo.accounts, ["main"]);
        assert_eq!(
            &*c.authenticate("nb-key", "nb-secret").unwrap().id,
            "notebook"
        );
        assert!(
            c.authenticate("algo-key", "nb-secret").is_none(),
            "another's secret"
        );
        assert!(
            c.authenticate("algo-key", "algo-secre").is_none(),
            "a prefix"
        );
        assert!(
            c.authenticate("algo-key", "algo-secret ").is_none(),
            "longer"
        );
        assert!(c.authenticate("", "").is_none());
        assert!(
            c.authenticate("unset-key", "").is_none(),
            "no secret, no entry"
        );
    }

    #[test]
    fn with_no_client_configured_everything_is_refused() {
        let none = Clients::default();
        assert!(none.is_empty());
        assert!(none.authenticate("any", "thing").is_none());
    }

    #[test]
    fn constant_time_eq_is_equality() {
        assert!(constant_time_eq(b"abc", b"abc"));
        assert!(constant_time_eq(b"", b""));
        assert!(!constant_time_eq(b"abc", b"abd"));
        assert!(!constant_time_eq(b"abc", b"ab"));
        assert!(
            !constant_time_eq(b"ab\0", b"ab"),
            "padding does not make them equal"
        );
    }
}
