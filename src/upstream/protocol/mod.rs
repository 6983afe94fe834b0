//! Alpaca's market-data stream protocol, as pure decode/encode functions.
//!
//! A server frame is an array of maps, each with a type tag `T` (`success`, `error`,
//! `subscription`, `q`, `t`, `b`, `o`, `n`, …), sent as JSON text or — when the client asks with
//! `Content-Type: application/msgpack`, and always on the options streams — as msgpack binary with
//! timestamps in the msgpack Timestamp extension.
//!
//! - [`decode`] — server frames (JSON and msgpack, one decoder) into [`Inbound`] messages.
//! - [`msgpack`] — walking raw msgpack, to salvage the good elements of a damaged frame.
//! - [`raw`] — market messages as Alpaca sent them, in both encodings, for SDK programs.
//! - [`encode`] — client messages (auth, subscribe) in the stream's encoding.
//!
//! This file holds Alpaca's error names; the stream vocabulary ([`Encoding`](crate::vocab::Encoding),
//! [`Channel`](crate::vocab::Channel)) lives in [`crate::vocab`].

pub mod decode;
pub mod encode;
pub mod msgpack;
pub mod raw;

pub use self::decode::{decode, decode_json, decode_msgpack, DecodeError, Inbound, InfoKind};
pub use self::encode::{auth_message, encode_client, subscription_message, ClientFrame};
pub use self::msgpack::{msgpack_array_elements, msgpack_value_len};

/// The name Alpaca gives an error code, for logs and status (`406` → `connection limit exceeded`).
pub fn error_name(code: u16) -> &'static str {
    match code {
        400 => "invalid syntax",
        401 => "not authenticated",
        402 => "auth failed",
        403 => "already authenticated",
        404 => "auth timeout",
        405 => "symbol limit exceeded",
        406 => "connection limit exceeded",
        407 => "slow client",
        408 => "v2 not enabled",
        409 => "insufficient subscription",
        410 => "invalid subscribe action for this feed",
        411 => "insufficient scope",
        412 => "option messages are only available in MsgPack format",
        413 => "star subscription is not allowed for option quotes",
        // tickrelay's own: Alpaca has no inbound rate limit to name.
        429 => "rate limit exceeded",
        500 => "internal error",
        _ => "unknown error",
    }
}

#[cfg(test)]
mod tests;
