//! Symbols: normalisation, validation and routing by shape.
//!
//! Browsers and REST callers send symbols in any case with stray spaces. [`Symbol::parse`] trims and
//! upper-cases them, then decides what they are from their shape alone — an OCC option symbol
//! (`SPY260117C00688000`), a crypto pair (`BTC/USD`) or a stock (`AAPL`, `BRK.B`) — because that is
//! what picks the upstream feed. Anything else is rejected with a reason a person can act on.

use std::borrow::Borrow;
use std::fmt;
use std::sync::Arc;

use serde::{Serialize, Serializer};

/// What a symbol names, decided by its shape; each class has its own upstream feed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AssetClass {
    Stock,
    Crypto,
    Option,
}

/// A validated, upper-case symbol. Cheap to clone (shared string).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Symbol(Arc<str>);

/// Why a symbol was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SymbolError {
    #[error("symbol is empty")]
    Empty,
    #[error("symbol {0:?} is too long")]
    TooLong(String),
    #[error("{0:?} is not a stock (AAPL, BRK.B), crypto pair (BTC/USD) or OCC option symbol (SPY260117C00688000)")]
    Malformed(String),
}

/// Longest text accepted before any parsing (OCC symbols are at most 21 characters).
const MAX_LEN: usize = 24;
/// The news wildcard.
pub const WILDCARD: &str = "*";

impl Symbol {
    /// Normalises (trim, upper-case) and validates `raw`.
    pub fn parse(raw: &str) -> Result<Symbol, SymbolError> {
        let text = raw.trim();
        if text.is_empty() {
            return Err(SymbolError::Empty);
        }
        if text.len() > MAX_LEN {
            let shown: String = text.chars().take(MAX_LEN).collect();
            return Err(SymbolError::TooLong(format!("{shown}…")));
        }
        let text = text.to_ascii_uppercase();
        if classify(&text).is_some() {
            Ok(Symbol(text.into()))
        } else {
            Err(SymbolError::Malformed(text))
        }
    }

    /// `*`: every symbol. Valid only for news subscriptions and never parsed from client text by
    /// [`Symbol::parse`]; callers route it explicitly.
    pub fn wildcard() -> Symbol {
        Symbol(Arc::from(WILDCARD))
    }

    pub fn is_wildcard(&self) -> bool {
        &*self.0 == WILDCARD
    }

    /// The asset class, from the symbol's shape (the wildcard reports `Stock`; route it first).
    pub fn class(&self) -> AssetClass {
        // Invariant: a Symbol is only built from text `classify` accepted.
        classify(&self.0).unwrap_or(AssetClass::Stock)
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// A symbol as Alpaca's trading API writes it in orders and positions: crypto pairs come
    /// without their slash there (`SOLUSD` for `SOL/USD`, with `asset_class` `crypto`), which maps
    /// back to the pair the market data streams use.
    pub fn from_trading(raw: &str, asset_class: Option<&str>) -> Result<Symbol, SymbolError> {
        let text = raw.trim().to_ascii_uppercase();
        if asset_class == Some("crypto") && !text.contains('/') {
            // Longest quote currency first: SOLUSDT is SOL/USDT, not SOLUSD/T.
            for quote in ["USDT", "USDC", "USD", "BTC", "ETH"] {
                if let Some(base) = text.strip_suffix(quote) {
                    if !base.is_empty() {
                        return Symbol::parse(&format!("{base}/{quote}"));
                    }
                }
            }
        }
        Symbol::parse(&text)
    }
}

/// Decides the class of an upper-case symbol, or `None` when it fits no known shape.
pub fn classify(s: &str) -> Option<AssetClass> {
    if let Some((base, quote)) = s.split_once('/') {
        return (is_crypto_leg(base) && is_crypto_leg(quote)).then_some(AssetClass::Crypto);
    }
    if is_occ_option(s) {
        return Some(AssetClass::Option);
    }
    is_stock(s).then_some(AssetClass::Stock)
}

fn is_crypto_leg(s: &str) -> bool {
    (2..=10).contains(&s.len())
        && s.bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
}

/// `ROOT` (1–6 letters/digits, starting with a letter) + `YYMMDD` + `C|P` + 8-digit strike.
fn is_occ_option(s: &str) -> bool {
    let b = s.as_bytes();
    if !(16..=21).contains(&b.len()) {
        return false;
    }
    let root_len = b.len() - 15;
    let (root, tail) = b.split_at(root_len);
    let (date, rest) = tail.split_at(6);
    let (right, strike) = rest.split_at(1);
    if !date.iter().all(u8::is_ascii_digit) {
        return false;
    }
    let month = (date[2] - b'0') * 10 + (date[3] - b'0');
    let day = (date[4] - b'0') * 10 + (date[5] - b'0');
    root[0].is_ascii_uppercase()
        && root
            .iter()
            .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit())
        && (1..=12).contains(&month)
        && (1..=31).contains(&day)
        && matches!(right[0], b'C' | b'P')
        && strike.iter().all(u8::is_ascii_digit)
}

/// 1–10 letters/digits starting with a letter, optionally `.` and a 1–4 character class suffix.
fn is_stock(s: &str) -> bool {
    let (head, suffix) = match s.split_once('.') {
        Some((h, t)) => (h, Some(t)),
        None => (s, None),
    };
    let head_ok = (1..=10).contains(&head.len())
        && head.as_bytes()[0].is_ascii_uppercase()
        && head
            .bytes()
            .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit());
    let suffix_ok = suffix.is_none_or(|t| {
        (1..=4).contains(&t.len())
            && t.bytes()
                .all(|b| b.is_ascii_uppercase() || b.is_ascii_digit())
    });
    head_ok && suffix_ok
}

impl fmt::Display for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for Symbol {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Debug::fmt(&*self.0, f)
    }
}

impl Borrow<str> for Symbol {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl AsRef<str> for Symbol {
    fn as_ref(&self) -> &str {
        &self.0
    }
}

impl Serialize for Symbol {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trading_api_crypto_symbols_map_to_pairs() {
        let pair = |raw, class| Symbol::from_trading(raw, class).unwrap().to_string();
        assert_eq!(pair("SOLUSD", Some("crypto")), "SOL/USD");
        assert_eq!(pair("BTCUSDT", Some("crypto")), "BTC/USDT");
        assert_eq!(pair("ETH/USD", Some("crypto")), "ETH/USD");
        assert_eq!(pair("AAPL", Some("us_equity")), "AAPL");
        assert_eq!(pair("AAPL", None), "AAPL");
    }

    #[test]
    fn normalises_and_classifies() {
        let cases = [
            (" aapl ", "AAPL", AssetClass::Stock),
            ("brk.b", "BRK.B", AssetClass::Stock),
            ("FAKEPACA", "FAKEPACA", AssetClass::Stock),
            ("btc/usd", "BTC/USD", AssetClass::Crypto),
            (
                "SPY260117C00688000",
                "SPY260117C00688000",
                AssetClass::Option,
            ),
            (
                "spxw240327p04925000",
                "SPXW240327P04925000",
                AssetClass::Option,
            ),
            (
                "AAPL1260117C00100000",
                "AAPL1260117C00100000",
                AssetClass::Option,
            ),
        ];
        for (raw, text, class) in cases {
            let s = Symbol::parse(raw).unwrap();
            assert_eq!(s.as_str(), text);
            assert_eq!(s.class(), class, "{raw}");
        }
    }

    #[test]
    fn rejects_malformed() {
        for raw in [
            "",
            "   ",
            "??",
            "1ABC",
            "AAPL.",
            "AAPL.TOOLONG",
            "A B",
            "BTC/",
            "/USD",
            "B/USD",
            "SPY261317C00688000",
            "SPY260117X00688000",
            "ABCDEFGHIJK",
            "*",
            "<script>",
        ] {
            assert!(Symbol::parse(raw).is_err(), "{raw:?} should be rejected");
        }
        assert!(matches!(
            Symbol::parse(&"A".repeat(100)),
            Err(SymbolError::TooLong(_))
        ));
    }
}
