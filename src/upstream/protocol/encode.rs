//! Client messages (auth, subscribe, unsubscribe) in the stream's encoding.

use crate::credentials::Credentials;
use crate::vocab::{Encoding, SubscriptionSet};

/// A message for the server, in the stream's encoding.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientFrame {
    Text(String),
    Binary(Vec<u8>),
}

/// Encodes a client message (auth, subscribe, …) as the stream expects it.
pub fn encode_client(message: &serde_json::Value, encoding: Encoding) -> ClientFrame {
    match encoding {
        Encoding::Json => ClientFrame::Text(message.to_string()),
        // Maps of strings, lists and numbers always encode.
        Encoding::Msgpack => {
            ClientFrame::Binary(rmp_serde::to_vec_named(message).unwrap_or_default())
        }
    }
}

/// The auth message. It contains the secret: send it, never log it.
pub fn auth_message(credentials: &Credentials) -> serde_json::Value {
    serde_json::json!({
        "action": "auth",
        "key": credentials.key_id.expose(),
        "secret": credentials.secret_key.expose(),
    })
}

/// A `subscribe` or `unsubscribe` message for `set`.
pub fn subscription_message(action: &str, set: &SubscriptionSet) -> serde_json::Value {
    let mut map = serde_json::Map::new();
    map.insert("action".into(), action.into());
    for (channel, symbols) in set.iter() {
        map.insert(
            channel.key().into(),
            symbols
                .iter()
                .map(|s| s.as_str())
                .collect::<Vec<_>>()
                .into(),
        );
    }
    serde_json::Value::Object(map)
}
