//! Alpaca's market-data session protocol, server side, as pure functions: authentication,
//! subscriptions and error codes.
//!
//! In: a client message — JSON (text frames, or binary ones that hold JSON) or msgpack (binary) —
//! as a [`ClientMessage`]. Keys come in any order (alpaca-py sends `action` last), lists may be
//! `null` (go-sdk sends every key, unused ones nil) or missing, and keys tickrelay does not know
//! are ignored. Out: the control messages, each alone in a length-1 array, `T` first, in the
//! session's encoding.

use bytes::Bytes;
use serde_json::Value;

use crate::upstream::protocol::error_name;
use crate::vocab::Encoding;
use crate::wire::{json_frame, msgpack_frame, Msg, V};

/// A parsed client message.
#[derive(Debug, Clone, PartialEq)]
pub enum ClientMessage {
    Auth { key: String, secret: String },
    Subscribe(Lists),
    Unsubscribe(Lists),
}

/// The channel lists of a subscribe or unsubscribe: `(key, symbols)` for every key whose value
/// is a non-empty list, in the order received. `null`, empty and non-list values are left out.
pub type Lists = Vec<(String, Vec<String>)>;

/// Why a client message is refused: Alpaca answers every one of these with `400 invalid syntax`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Invalid(pub String);

/// Reads one complete client message.
pub fn parse(data: &[u8], binary: bool) -> Result<ClientMessage, Invalid> {
    let value = decode_value(data, binary)?;
    let Value::Object(map) = value else {
        return Err(Invalid("a message must be a map".into()));
    };
    let action = map
        .get("action")
        .and_then(Value::as_str)
        .ok_or_else(|| Invalid("no action".into()))?;
    match action {
        "auth" => {
            let field = |k: &str| map.get(k).and_then(Value::as_str).map(str::to_owned);
            match (field("key"), field("secret")) {
                (Some(key), Some(secret)) => Ok(ClientMessage::Auth { key, secret }),
                _ => Err(Invalid("auth needs key and secret".into())),
            }
        }
        "subscribe" | "unsubscribe" => {
            let mut lists = Vec::new();
            for (key, value) in &map {
                if key == "action" {
                    continue;
                }
                let Value::Array(items) = value else {
                    continue; // null or a scalar under a key we do not know: ignored
                };
                if items.is_empty() {
                    continue;
                }
                let symbols = items
                    .iter()
                    .map(|s| s.as_str().map(str::to_owned))
                    .collect::<Option<Vec<_>>>()
                    .ok_or_else(|| Invalid(format!("{key}: symbols must be strings")))?;
                lists.push((key.clone(), symbols));
            }
            Ok(if action == "subscribe" {
                ClientMessage::Subscribe(lists)
            } else {
                ClientMessage::Unsubscribe(lists)
            })
        }
        other => Err(Invalid(format!("unknown action {other:?}"))),
    }
}

/// JSON text, JSON in a binary frame (C#'s SDK), or msgpack.
fn decode_value(data: &[u8], binary: bool) -> Result<Value, Invalid> {
    let looks_json = data
        .iter()
        .find(|b| !b.is_ascii_whitespace())
        .is_some_and(|b| *b == b'{');
    if !binary || looks_json {
        serde_json::from_slice(data).map_err(|e| Invalid(format!("not JSON: {e}")))
    } else {
        rmp_serde::from_slice(data).map_err(|e| Invalid(format!("not msgpack: {e}")))
    }
}

/// One control message, alone in its array, in `encoding`.
pub fn control(msg: &Msg, encoding: Encoding) -> Bytes {
    match encoding {
        Encoding::Json => Bytes::from(json_frame(&[&msg.json()])),
        Encoding::Msgpack => Bytes::from(msgpack_frame(&[&msg.msgpack()])),
    }
}

/// `{"T":"success","msg":…}`.
pub fn success(text: &str) -> Msg {
    Msg(vec![("T", "success".into()), ("msg", text.into())])
}

/// `{"T":"error","code":…,"msg":…}` with Alpaca's wording for the code.
pub fn error(code: u16) -> Msg {
    Msg(vec![
        ("T", "error".into()),
        ("code", V::Int(i64::from(code))),
        ("msg", error_name(code).into()),
    ])
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pack(v: &Value) -> Vec<u8> {
        rmp_serde::to_vec_named(v).unwrap()
    }

    #[test]
    fn subscribe_in_any_key_order_with_null_and_empty_lists() {
        // go-sdk: every key, unused ones nil, random order; alpaca-py: action last.
        let go = serde_json::json!({"news": null, "trades": ["AAPL"], "action": "subscribe",
            "quotes": [], "bars": null, "orderbooks": null, "pricing": null});
        let parsed = parse(&pack(&go), true).unwrap();
        assert_eq!(
            parsed,
            ClientMessage::Subscribe(vec![("trades".into(), vec!["AAPL".into()])])
        );
        let text = r#"{"quotes":["AAPL","MSFT"],"action":"unsubscribe"}"#;
        assert_eq!(
            parse(text.as_bytes(), false).unwrap(),
            ClientMessage::Unsubscribe(vec![("quotes".into(), vec!["AAPL".into(), "MSFT".into()])])
        );
    }

    #[test]
    fn auth_in_both_encodings_and_json_in_binary_frames() {
        let auth = serde_json::json!({"action":"auth","key":"k","secret":"s"});
        let expected = ClientMessage::Auth {
            key: "k".into(),
            secret: "s".into(),
        };
        assert_eq!(parse(&pack(&auth), true).unwrap(), expected);
        assert_eq!(parse(auth.to_string().as_bytes(), true).unwrap(), expected);
        assert_eq!(parse(auth.to_string().as_bytes(), false).unwrap(), expected);
    }

    #[test]
    fn garbage_and_unknown_actions_are_invalid() {
        assert!(parse(b"{not json", false).is_err());
        assert!(parse(&[0xc1], true).is_err());
        assert!(parse(br#"{"action":"dance"}"#, false).is_err());
        assert!(parse(br#"{"action":"auth","key":"k"}"#, false).is_err());
        assert!(parse(br#"{"action":"subscribe","trades":[1]}"#, false).is_err());
        assert!(parse(br#"["action"]"#, false).is_err());
    }

    #[test]
    fn control_messages_are_length_one_arrays_with_t_first() {
        let json = control(&success("connected"), Encoding::Json);
        assert_eq!(&json[..], br#"[{"T":"success","msg":"connected"}]"#);
        let packed = control(&success("connected"), Encoding::Msgpack);
        // The exact bytes of Alpaca's documented example.
        let expected = [
            0x91, 0x82, 0xa1, 0x54, 0xa7, 0x73, 0x75, 0x63, 0x63, 0x65, 0x73, 0x73, 0xa3, 0x6d,
            0x73, 0x67, 0xa9, 0x63, 0x6f, 0x6e, 0x6e, 0x65, 0x63, 0x74, 0x65, 0x64,
        ];
        assert_eq!(&packed[..], &expected);
        let err = control(&error(402), Encoding::Json);
        assert_eq!(
            &err[..],
            br#"[{"T":"error","code":402,"msg":"auth failed"}]"#
        );
    }
}
