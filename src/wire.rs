//! Ordered messages in Alpaca's two encodings: built once as key/value lists, written as JSON or msgpack.
//!
//! Used by the simulator (everything it streams) and the Alpaca-compatible endpoint (its control
//! messages).
//!
//! Order matters: go-sdk requires `T` to be the first key of every msgpack map. Integers stay
//! integers and floats stay floats, and times become RFC 3339 strings in JSON and msgpack
//! Timestamp extensions (type −1) in msgpack, as Alpaca sends them.

use std::fmt::Write as _;

use crate::time::Timestamp;

/// A value in a simulator message.
#[derive(Clone, Debug, PartialEq)]
pub enum V {
    Null,
    Bool(bool),
    Int(i64),
    Float(f64),
    Str(String),
    Time(Timestamp),
    List(Vec<V>),
    Map(Vec<(&'static str, V)>),
}

impl From<&str> for V {
    fn from(s: &str) -> V {
        V::Str(s.to_owned())
    }
}

impl From<String> for V {
    fn from(s: String) -> V {
        V::Str(s)
    }
}

impl From<f64> for V {
    fn from(v: f64) -> V {
        V::Float(v)
    }
}

impl From<i64> for V {
    fn from(v: i64) -> V {
        V::Int(v)
    }
}

impl From<Timestamp> for V {
    fn from(t: Timestamp) -> V {
        V::Time(t)
    }
}

/// One message: a map whose keys keep their order.
#[derive(Clone, Debug, PartialEq)]
pub struct Msg(pub Vec<(&'static str, V)>);

impl Msg {
    pub fn json(&self) -> String {
        let mut out = String::with_capacity(160);
        write_json(&V::Map(self.0.clone()), &mut out);
        out
    }

    pub fn msgpack(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(128);
        write_msgpack(&V::Map(self.0.clone()), &mut out);
        out
    }

    /// The value of `key`.
    pub fn get(&self, key: &str) -> Option<&V> {
        self.0.iter().find(|(k, _)| *k == key).map(|(_, v)| v)
    }

    /// As a JSON value (for the control API).
    pub fn to_value(&self) -> serde_json::Value {
        serde_json::from_str(&self.json()).unwrap_or_default()
    }
}

/// A JSON frame: the array of already-encoded messages.
pub fn json_frame(parts: &[&str]) -> String {
    let mut out = String::with_capacity(parts.iter().map(|p| p.len() + 1).sum::<usize>() + 2);
    out.push('[');
    for (i, p) in parts.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(p);
    }
    out.push(']');
    out
}

/// A msgpack frame: an array header and the already-encoded messages.
pub fn msgpack_frame(parts: &[&[u8]]) -> Vec<u8> {
    let mut out = Vec::with_capacity(parts.iter().map(|p| p.len()).sum::<usize>() + 5);
    // Writing to a Vec cannot fail.
    let _ = rmp::encode::write_array_len(&mut out, parts.len() as u32);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

fn write_json(v: &V, out: &mut String) {
    match v {
        V::Null => out.push_str("null"),
        V::Bool(b) => out.push_str(if *b { "true" } else { "false" }),
        V::Int(i) => {
            let _ = write!(out, "{i}");
        }
        V::Float(f) => out.push_str(&serde_json::to_string(f).unwrap_or_else(|_| "null".into())),
        V::Str(s) => out.push_str(&serde_json::to_string(s).unwrap_or_default()),
        V::Time(t) => {
            out.push('"');
            t.write_rfc3339(out);
            out.push('"');
        }
        V::List(items) => {
            out.push('[');
            for (i, item) in items.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                write_json(item, out);
            }
            out.push(']');
        }
        V::Map(fields) => {
            out.push('{');
            for (i, (k, item)) in fields.iter().enumerate() {
                if i > 0 {
                    out.push(',');
                }
                out.push('"');
                out.push_str(k);
                out.push_str("\":");
                write_json(item, out);
            }
            out.push('}');
        }
    }
}

fn write_msgpack(v: &V, out: &mut Vec<u8>) {
    use rmp::encode;
    // Writing to a Vec cannot fail.
    match v {
        V::Null => {
            let _ = encode::write_nil(out);
        }
        V::Bool(b) => {
            let _ = encode::write_bool(out, *b);
        }
        V::Int(i) => {
            let _ = encode::write_sint(out, *i);
        }
        V::Float(f) => {
            let _ = encode::write_f64(out, *f);
        }
        V::Str(s) => {
            let _ = encode::write_str(out, s);
        }
        V::Time(t) => {
            let data = t.to_msgpack_ext();
            let _ = encode::write_ext_meta(out, data.len() as u32, -1);
            out.extend_from_slice(&data);
        }
        V::List(items) => {
            let _ = encode::write_array_len(out, items.len() as u32);
            for item in items {
                write_msgpack(item, out);
            }
        }
        V::Map(fields) => {
            let _ = encode::write_map_len(out, fields.len() as u32);
            for (k, item) in fields {
                let _ = encode::write_str(out, k);
                write_msgpack(item, out);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::upstream::protocol::{decode_msgpack, Inbound};

    #[test]
    fn json_and_msgpack_agree_and_keep_t_first() {
        let t = Timestamp::parse_rfc3339("2021-02-22T15:51:44.208Z").unwrap();
        let m = Msg(vec![
            ("T", "q".into()),
            ("S", "SPY260117C00688000".into()),
            ("bx", "C".into()),
            ("bp", 9.46.into()),
            ("bs", V::Int(53)),
            ("ax", "C".into()),
            ("ap", 9.66.into()),
            ("as", V::Int(38)),
            ("c", "A".into()),
            ("t", t.into()),
        ]);
        assert!(m.json().starts_with(r#"{"T":"q","S":"SPY260117C00688000""#));
        assert!(m.json().contains(r#""t":"2021-02-22T15:51:44.208Z""#));
        // The same bytes msgpack-python produces for this message (see the protocol tests).
        let frame = msgpack_frame(&[&m.msgpack()]);
        let expected: Vec<u8> =
            "91 8a a1 54 a1 71 a1 53 b2 53 50 59 32 36 30 31 31 37 43 30 30 36 38 38 30 30 30 \
             a2 62 78 a1 43 a2 62 70 cb 40 22 eb 85 1e b8 51 ec a2 62 73 35 a2 61 78 a1 43 \
             a2 61 70 cb 40 23 51 eb 85 1e b8 52 a2 61 73 26 a1 63 a1 41 \
             a1 74 d7 ff 31 97 50 00 60 33 d3 10"
                .split_whitespace()
                .map(|b| u8::from_str_radix(b, 16).unwrap())
                .collect();
        assert_eq!(frame, expected);
        assert!(matches!(
            decode_msgpack(&frame).unwrap()[0],
            Inbound::Market { .. }
        ));
    }

    #[test]
    fn json_escapes_strings() {
        let m = Msg(vec![("T", "n".into()), ("headline", "say \"hi\"\n".into())]);
        let v: serde_json::Value = serde_json::from_str(&m.json()).unwrap();
        assert_eq!(v["headline"], "say \"hi\"\n");
        assert_eq!(json_frame(&[&m.json(), "1"]), format!("[{},1]", m.json()));
    }
}
