//! `tickrelay record cat FILE… [--feed F] [--symbol S] [--from T] [--to T]`: the records of
//! segment files as JSON lines — `{"t":…,"t_ns":…,"source":…,"kind":"frame","frame":[…]}` for
//! a frame (msgpack ones written as JSON, `"encoding":"msgpack"` saying so), `"lost":N` for a
//! gap, `"data":{…}` for a header or an accounts snapshot. Plain functions over a reader and a
//! writer; `main` wires them to the files and stdout.

use std::io::Write;

use serde_json::{json, Value};

use super::format::{Kind, Reader, Record};
use crate::time::Timestamp;

/// Which records to print.
#[derive(Debug, Default, Clone)]
pub struct Filter {
    /// `stocks`, …, or `trading:<account>` (`trading` matches every account).
    pub feed: Option<String>,
    /// Frames with a message of this symbol (news: among its symbols).
    pub symbol: Option<String>,
    pub from_ns: Option<u64>,
    pub to_ns: Option<u64>,
}

impl Filter {
    fn keeps(&self, r: &Record, frame: Option<&Value>) -> bool {
        if self.from_ns.is_some_and(|from| r.received_ns < from)
            || self.to_ns.is_some_and(|to| r.received_ns > to)
        {
            return false;
        }
        if r.kind == Kind::Gap {
            // Lost frames may have been any feed's or symbol's: a gap is never filtered away.
            return true;
        }
        if let Some(feed) = &self.feed {
            let matches =
                r.source == *feed || (feed == "trading" && r.source.starts_with("trading:"));
            if !matches {
                return false;
            }
        }
        match (&self.symbol, frame) {
            (None, _) => true,
            (Some(symbol), Some(Value::Array(messages))) => messages.iter().any(|m| {
                m["S"] == symbol.as_str()
                    || m["symbols"]
                        .as_array()
                        .is_some_and(|list| list.iter().any(|s| s == symbol.as_str()))
            }),
            (Some(_), _) => false,
        }
    }
}

fn time_of(ns: u64) -> Value {
    let secs = (ns / 1_000_000_000) as i64;
    let nanos = (ns % 1_000_000_000) as u32;
    Timestamp::new(secs, nanos).map_or(Value::Null, |t| json!(t))
}

/// The JSON line of one record, if the filter keeps it.
pub fn line(r: &Record, filter: &Filter) -> Option<Value> {
    let mut out = json!({
        "t": time_of(r.received_ns),
        "t_ns": r.received_ns,
        "source": r.source,
        "kind": r.kind.name(),
    });
    // A binary frame is msgpack, or JSON (the trading stream sends JSON in binary frames).
    let json_bytes = matches!(r.payload.first(), Some(b'{' | b'['));
    let msgpack = r.kind == Kind::Binary && !json_bytes;
    let frame = match r.kind {
        Kind::Text | Kind::Binary if !msgpack => serde_json::from_slice::<Value>(&r.payload).ok(),
        Kind::Binary => {
            let mut text = String::new();
            crate::upstream::protocol::raw::msgpack_to_json(&r.payload, &mut text)
                .and_then(|_| serde_json::from_str(&text).ok())
        }
        _ => None,
    };
    if !filter.keeps(r, frame.as_ref()) {
        return None;
    }
    match r.kind {
        Kind::Text | Kind::Binary => {
            out["encoding"] = json!(if msgpack { "msgpack" } else { "json" });
            out["binary"] = json!(r.kind == Kind::Binary);
            out["frame"] = frame.unwrap_or_else(|| json!(String::from_utf8_lossy(&r.payload)));
        }
        Kind::Gap => {
            let lost = r
                .payload
                .get(..8)
                .and_then(|b| b.try_into().ok())
                .map(u64::from_le_bytes);
            out["lost"] = json!(lost);
        }
        Kind::Header | Kind::Snapshot => {
            out["data"] = serde_json::from_slice(&r.payload).unwrap_or(Value::Null);
        }
    }
    Some(out)
}

/// Prints the records of `files` that `filter` keeps; a file cut short is read up to its last
/// complete record and said so on `notes`. Answers the records printed.
pub fn cat(
    files: &[std::path::PathBuf],
    filter: &Filter,
    out: &mut impl Write,
    notes: &mut impl Write,
) -> std::io::Result<usize> {
    let mut printed = 0;
    for path in files {
        let file = std::fs::File::open(path)
            .map_err(|e| std::io::Error::new(e.kind(), format!("{}: {e}", path.display())))?;
        let named =
            |e: std::io::Error| std::io::Error::new(e.kind(), format!("{}: {e}", path.display()));
        let mut reader = Reader::new(file).map_err(named)?;
        let mut read = 0;
        for r in reader.by_ref() {
            let r = r.map_err(named)?;
            read += 1;
            if let Some(l) = line(&r, filter) {
                writeln!(out, "{l}")?;
                printed += 1;
            }
        }
        if reader.truncated() {
            writeln!(
                notes,
                "{}: cut short after {read} records (a crash or a stop mid-write); those are printed",
                path.display(),
            )?;
        }
    }
    Ok(printed)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(kind: Kind, ns: u64, source: &str, payload: &[u8]) -> Record {
        Record {
            kind,
            received_ns: ns,
            source: source.into(),
            payload: payload.to_vec(),
        }
    }

    #[test]
    fn frames_print_as_json_and_filters_pick_them() {
        let aapl = record(
            Kind::Text,
            2_000_000_000,
            "stocks",
            br#"[{"T":"q","S":"AAPL","bp":1}]"#,
        );
        let l = line(&aapl, &Filter::default()).unwrap();
        assert_eq!(l["frame"][0]["S"], "AAPL");
        assert_eq!(l["encoding"], "json");
        assert_eq!(l["t"], "1970-01-01T00:00:02Z");
        let packed = record(
            Kind::Binary,
            3,
            "options",
            &[0x91, 0x81, 0xa1, b'S', 0xa3, b'S', b'P', b'Y'],
        );
        assert_eq!(
            line(&packed, &Filter::default()).unwrap()["frame"],
            json!([{"S": "SPY"}])
        );
        let gap = record(Kind::Gap, 4, "", &9u64.to_le_bytes());
        assert_eq!(line(&gap, &Filter::default()).unwrap()["lost"], 9);

        let only = |f: Filter| {
            [&aapl, &packed, &gap]
                .iter()
                .filter(|r| line(r, &f).is_some())
                .count()
        };
        assert_eq!(
            only(Filter {
                symbol: Some("AAPL".into()),
                ..Filter::default()
            }),
            2,
            "the frame, and the gap: the lost frames could have been AAPL's"
        );
        assert_eq!(
            only(Filter {
                feed: Some("options".into()),
                ..Filter::default()
            }),
            2
        );
        assert_eq!(
            only(Filter {
                from_ns: Some(3),
                to_ns: Some(4),
                ..Filter::default()
            }),
            2
        );
    }
}
