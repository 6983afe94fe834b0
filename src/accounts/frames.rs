//! The trading stream's frames (Alpaca's `/stream`: `authorization`, `listening`, `trade_updates`) read into what an account's stream acts
//! on. Plain functions: the [`TradingStream`](super::stream::TradingStream) actor calls them, unit
//! tests and the fuzzer drive them without a connection. Nothing here panics on any input.

use serde_json::Value;

use crate::symbol::Symbol;

/// Order statuses that keep an order open.
pub const OPEN_STATUSES: &[&str] = &[
    "new",
    "partially_filled",
    "accepted",
    "pending_new",
    "accepted_for_bidding",
    "pending_cancel",
    "pending_replace",
    "calculated",
    "held",
    "stopped",
    "suspended",
];

/// One frame of the trading stream.
#[derive(Debug, PartialEq)]
pub enum TradingFrame {
    /// `authorization` with status `authorized`.
    Authorized,
    /// `authorization` with any other status, and Alpaca's message.
    Unauthorized {
        message: String,
    },
    /// `listening`, and whether `trade_updates` is among the streams.
    Listening {
        trade_updates: bool,
    },
    TradeUpdate(OrderEvent),
    /// A stream tickrelay does not use (its name, when it has one).
    Other(Option<String>),
    /// Not JSON.
    Malformed,
}

/// A `trade_updates` message.
#[derive(Debug, PartialEq)]
pub struct OrderEvent {
    /// `new`, `fill`, `partial_fill`, `canceled`, … (`unknown` when missing).
    pub event: String,
    /// The order id (empty when missing).
    pub order_id: String,
    /// The order stays open after this event.
    pub open: bool,
    /// The order's symbol, `*` when it has none tickrelay can read.
    pub symbol: Symbol,
    /// The whole `data` object (the order and the execution).
    pub data: Value,
}

impl OrderEvent {
    /// The order object.
    pub fn order(&self) -> &Value {
        &self.data["order"]
    }

    /// A fill changes the position and the cash.
    pub fn is_fill(&self) -> bool {
        matches!(self.event.as_str(), "fill" | "partial_fill")
    }
}

/// Reads one frame.
pub fn parse(raw: &[u8]) -> TradingFrame {
    let Ok(mut msg) = serde_json::from_slice::<Value>(raw) else {
        return TradingFrame::Malformed;
    };
    let data = msg.get_mut("data").map(Value::take).unwrap_or(Value::Null);
    match msg.get("stream").and_then(Value::as_str) {
        Some("authorization") => match data["status"].as_str() {
            Some("authorized") => TradingFrame::Authorized,
            _ => TradingFrame::Unauthorized {
                message: data["message"]
                    .as_str()
                    .unwrap_or("unauthorized")
                    .to_owned(),
            },
        },
        Some("listening") => TradingFrame::Listening {
            trade_updates: data["streams"]
                .as_array()
                .is_some_and(|s| s.iter().any(|v| v == "trade_updates")),
        },
        Some("trade_updates") => TradingFrame::TradeUpdate(order_event(data)),
        other => TradingFrame::Other(other.map(str::to_owned)),
    }
}

fn order_event(data: Value) -> OrderEvent {
    let order = &data["order"];
    let text = |v: &Value| v.as_str().unwrap_or_default().to_owned();
    OrderEvent {
        event: data["event"].as_str().unwrap_or("unknown").to_owned(),
        order_id: text(&order["id"]),
        open: order["status"]
            .as_str()
            .is_some_and(|s| OPEN_STATUSES.contains(&s)),
        symbol: Symbol::from_trading(
            order["symbol"].as_str().unwrap_or_default(),
            order["asset_class"].as_str(),
        )
        .unwrap_or_else(|_| Symbol::wildcard()),
        data,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_of_frame_is_read() {
        assert_eq!(
            parse(br#"{"stream":"authorization","data":{"action":"authenticate","status":"authorized"}}"#),
            TradingFrame::Authorized
        );
        assert_eq!(
            parse(br#"{"stream":"authorization","data":{"status":"unauthorized","message":"bad key"}}"#),
            TradingFrame::Unauthorized {
                message: "bad key".into()
            }
        );
        assert_eq!(
            parse(br#"{"stream":"listening","data":{"streams":["trade_updates"]}}"#),
            TradingFrame::Listening {
                trade_updates: true
            }
        );
        assert_eq!(
            parse(br#"{"stream":"listening","data":{"streams":"trade_updates"}}"#),
            TradingFrame::Listening {
                trade_updates: false
            }
        );
        let TradingFrame::TradeUpdate(e) = parse(
            br#"{"stream":"trade_updates","data":{"event":"partial_fill","qty":"1","order":{"id":"o1","symbol":"SOLUSD","asset_class":"crypto","status":"partially_filled"}}}"#,
        ) else {
            panic!("a trade update");
        };
        assert_eq!(
            (e.event.as_str(), e.order_id.as_str()),
            ("partial_fill", "o1")
        );
        assert!(e.open && e.is_fill());
        assert_eq!(e.symbol.as_str(), "SOL/USD");
        assert_eq!(e.order()["id"], "o1");
        assert_eq!(parse(b"{\"stream\":7}"), TradingFrame::Other(None));
        assert_eq!(parse(b"not json"), TradingFrame::Malformed);
    }

    #[test]
    fn odd_trade_updates_still_read() {
        for raw in [
            r#"{"stream":"trade_updates"}"#,
            r#"{"stream":"trade_updates","data":[]}"#,
            r#"{"stream":"trade_updates","data":{"order":{"symbol":"??","status":5}}}"#,
            r#"[1,2]"#,
        ] {
            if let TradingFrame::TradeUpdate(e) = parse(raw.as_bytes()) {
                assert_eq!(e.event, "unknown");
                assert!(!e.open);
                assert!(e.symbol.is_wildcard());
            }
        }
    }
}
