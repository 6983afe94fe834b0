//! What a replay plays: the segment files named by `[replay] path`, read in time order on a
//! thread of their own, and what each record means to the player.
//!
//! Owns: the list of files ([`files`]), the reader thread ([`spawn_reader`]) that decodes them
//! record by record into a bounded channel (a day of records is never held at once), the time
//! window (`from`, `to`: account snapshots before `from` still go, so the account starts
//! consistent) and [`classify`], which tells a market frame from the protocol's own frames.

use std::io;
use std::path::{Path, PathBuf};

use log::{info, warn};
use tokio::sync::mpsc;

use crate::accounts::frames::{self as trading, TradingFrame};
use crate::recorder::format::{Kind, Reader, Record};
use crate::recorder::segments::{in_dir, start_of};

/// Records per batch through the channel.
const BATCH: usize = 256;
/// Batches the reader may be ahead of the player.
const AHEAD: usize = 8;

/// The segment files in `paths`: a directory's segments (named as the recorder names them), and
/// files named themselves; ordered by their start time (files of other names keep their place
/// after them).
pub fn files(paths: &[String]) -> io::Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    for path in paths.iter().map(Path::new) {
        if path.is_dir() {
            out.extend(in_dir(path)?.into_iter().map(|(p, _, _)| p));
        } else {
            out.push(path.to_path_buf());
        }
    }
    out.sort_by_key(|p| start_of(p).unwrap_or(u64::MAX));
    Ok(out)
}

/// Reads `files` in order on a thread of its own, sending the records inside the window in
/// batches. The channel closes at the end (or past `to`).
pub fn spawn_reader(
    files: Vec<PathBuf>,
    window: (Option<u64>, Option<u64>),
) -> io::Result<mpsc::Receiver<Vec<Record>>> {
    let (tx, rx) = mpsc::channel(AHEAD);
    std::thread::Builder::new()
        .name("replay-reader".into())
        .spawn(move || read(&files, window, &tx))?;
    Ok(rx)
}

fn read(files: &[PathBuf], (from, to): (Option<u64>, Option<u64>), tx: &mpsc::Sender<Vec<Record>>) {
    let mut batch = Vec::with_capacity(BATCH);
    // A segment whose successor starts by `from` holds nothing to play, and the successor's
    // own snapshot supersedes its accounts: it is not even decompressed.
    let skip = |i: usize| {
        let next = files.get(i + 1).and_then(|p| start_of(p));
        matches!((from, next), (Some(from), Some(next)) if next <= from)
    };
    for (i, path) in files.iter().enumerate() {
        if skip(i) {
            continue;
        }
        let reader = std::fs::File::open(path).and_then(Reader::new);
        let mut reader = match reader {
            Ok(r) => r,
            Err(e) => {
                warn!("replay: cannot read {}: {e}; skipped", path.display());
                continue;
            }
        };
        for record in reader.by_ref() {
            let record = match record {
                Ok(r) => r,
                Err(e) => {
                    warn!("replay: {}: {e}; the rest of it is skipped", path.display());
                    break;
                }
            };
            if to.is_some_and(|to| record.received_ns > to) {
                send(tx, &mut batch);
                return;
            }
            let before = from.is_some_and(|from| record.received_ns < from);
            if before && record.kind != Kind::Snapshot {
                continue;
            }
            batch.push(record);
            if batch.len() == BATCH && !send(tx, &mut batch) {
                return;
            }
        }
        if reader.truncated() {
            info!(
                "replay: {} ends cut short (a crash while recording); played up to its last whole record",
                path.display()
            );
        }
    }
    send(tx, &mut batch);
}

/// Sends what `batch` holds; `false` when the player has gone.
fn send(tx: &mpsc::Sender<Vec<Record>>, batch: &mut Vec<Record>) -> bool {
    if batch.is_empty() {
        return true;
    }
    tx.blocking_send(std::mem::replace(batch, Vec::with_capacity(BATCH)))
        .is_ok()
}

/// What a recorded frame is to the player.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Meaning {
    /// Market data, news or a trade update: played.
    Data,
    /// A fill (or partial fill) in a trade update: played, and the account's state changes.
    Fill,
    /// The protocol's own frame (greeting, authentication, subscription ack, error): the replay
    /// server answers those itself. `fresh` when it begins a connection (`connected`, or the
    /// trading stream's `authorization`): after data, the recorded connection was lost there.
    Protocol { fresh: bool },
}

/// Whether a frame of `source` is data or the protocol's own. Data frames are told apart without
/// parsing them: a protocol frame's first message names its type first (`"T":"success"`), as
/// Alpaca and the simulator write them; only such frames are parsed to be sure.
pub fn classify(source: &str, payload: &[u8], binary: bool) -> Meaning {
    if source.starts_with("trading:") {
        return trading_meaning(payload);
    }
    let head = &payload[..payload.len().min(512)];
    let markers: [&[u8]; 3] = if binary {
        [
            b"\xa1T\xa7success",
            b"\xa1T\xacsubscription",
            b"\xa1T\xa5error",
        ]
    } else {
        [
            b"\"T\":\"success\"",
            b"\"T\":\"subscription\"",
            b"\"T\":\"error\"",
        ]
    };
    if !markers.iter().any(|m| contains(head, m)) {
        return Meaning::Data;
    }
    let parsed: Option<serde_json::Value> = if binary {
        rmp_serde::from_slice(payload).ok()
    } else {
        serde_json::from_slice(payload).ok()
    };
    let Some(serde_json::Value::Array(messages)) = parsed else {
        return Meaning::Data;
    };
    let control = |m: &serde_json::Value| {
        matches!(m["T"].as_str(), Some("success" | "subscription" | "error"))
    };
    if messages.is_empty() || !messages.iter().all(control) {
        return Meaning::Data;
    }
    Meaning::Protocol {
        fresh: messages.iter().any(|m| m["msg"] == "connected"),
    }
}

/// The trading stream's frames, read as the account's own stream reads them.
fn trading_meaning(payload: &[u8]) -> Meaning {
    match trading::parse(payload) {
        TradingFrame::Authorized | TradingFrame::Unauthorized { .. } => {
            Meaning::Protocol { fresh: true }
        }
        TradingFrame::Listening { .. } => Meaning::Protocol { fresh: false },
        TradingFrame::TradeUpdate(e) if e.is_fill() => Meaning::Fill,
        _ => Meaning::Data,
    }
}

fn contains(haystack: &[u8], needle: &[u8]) -> bool {
    haystack.windows(needle.len()).any(|w| w == needle)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn protocol_frames_are_told_from_data_in_both_encodings() {
        let connected = br#"[{"T":"success","msg":"connected"}]"#;
        let ack = br#"[{"T":"subscription","trades":["AAPL"],"quotes":[]}]"#;
        let quote = br#"[{"T":"q","S":"AAPL","bp":1.5}]"#;
        let status = br#"[{"T":"s","S":"AAPL","sc":"H"}]"#;
        assert_eq!(
            classify("stocks", connected, false),
            Meaning::Protocol { fresh: true }
        );
        assert_eq!(
            classify("stocks", ack, false),
            Meaning::Protocol { fresh: false }
        );
        assert_eq!(classify("stocks", quote, false), Meaning::Data);
        assert_eq!(classify("stocks", status, false), Meaning::Data);
        // A headline quoting a marker is escaped inside its string: still data.
        let news = br#"[{"T":"n","headline":"\"T\":\"error\""}]"#;
        assert_eq!(classify("news", news, false), Meaning::Data);

        let packed = |v: serde_json::Value| rmp_serde::to_vec_named(&v).unwrap();
        let connected = packed(serde_json::json!([{"T":"success","msg":"connected"}]));
        let error =
            packed(serde_json::json!([{"T":"error","code":406,"msg":"connection limit exceeded"}]));
        let trade = packed(serde_json::json!([{"T":"t","S":"SPY260117C00688000","p":1.0}]));
        assert_eq!(
            classify("options", &connected, true),
            Meaning::Protocol { fresh: true }
        );
        assert_eq!(
            classify("options", &error, true),
            Meaning::Protocol { fresh: false }
        );
        assert_eq!(classify("options", &trade, true), Meaning::Data);
    }

    #[test]
    fn the_trading_stream_s_own_frames_are_its_authorization_and_listening() {
        let auth =
            br#"{"stream":"authorization","data":{"status":"authorized","action":"authenticate"}}"#;
        let listening = br#"{"stream":"listening","data":{"streams":["trade_updates"]}}"#;
        let update = br#"{"stream":"trade_updates","data":{"event":"new"}}"#;
        let fill = br#"{"stream":"trade_updates","data":{"event":"partial_fill"}}"#;
        assert_eq!(
            classify("trading:main", auth, true),
            Meaning::Protocol { fresh: true }
        );
        assert_eq!(
            classify("trading:main", listening, true),
            Meaning::Protocol { fresh: false }
        );
        assert_eq!(classify("trading:main", update, true), Meaning::Data);
        assert_eq!(classify("trading:main", fill, true), Meaning::Fill);
    }

    #[test]
    fn the_window_keeps_its_records_and_the_account_snapshots_before_it() {
        use crate::recorder::format::{write_frame, write_record};
        let dir =
            std::env::temp_dir().join(format!("tickrelay-replay-window-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        let mut records = Vec::new();
        write_record(&mut records, Kind::Header, 0, "", b"{}");
        write_record(&mut records, Kind::Snapshot, 0, "", b"{}");
        for t in 1..=5 {
            write_record(&mut records, Kind::Text, t, "stocks", b"[]");
        }
        let mut file = Vec::new();
        write_frame(&mut file, &records, 3).unwrap();
        let path = dir.join(format!("tickrelay-{:020}.rec.zst", 0));
        std::fs::write(&path, file).unwrap();

        let read = |files: Vec<PathBuf>, window| {
            let mut rx = spawn_reader(files, window).unwrap();
            let mut got = Vec::new();
            while let Some(batch) = rx.blocking_recv() {
                got.extend(batch.into_iter().map(|r| (r.kind, r.received_ns)));
            }
            got
        };
        assert_eq!(
            read(vec![path.clone()], (Some(3), Some(4))),
            [(Kind::Snapshot, 0), (Kind::Text, 3), (Kind::Text, 4)]
        );
        // An earlier segment whose successor starts by `from` is passed over: its snapshot
        // would be a second one here.
        let earlier = dir.join(format!("tickrelay-{:020}.rec.zst", 0));
        let later = dir.join(format!("tickrelay-{:020}.rec.zst", 2));
        std::fs::rename(&path, &later).unwrap();
        let mut head = Vec::new();
        write_record(&mut head, Kind::Header, 0, "", b"{}");
        write_record(&mut head, Kind::Snapshot, 0, "", b"{}");
        let mut file = Vec::new();
        write_frame(&mut file, &head, 3).unwrap();
        std::fs::write(&earlier, file).unwrap();
        assert_eq!(
            read(vec![earlier.clone(), later.clone()], (None, Some(0))),
            [
                (Kind::Header, 0),
                (Kind::Snapshot, 0),
                (Kind::Header, 0),
                (Kind::Snapshot, 0)
            ],
            "without from, both are read"
        );
        assert_eq!(
            read(vec![earlier.clone(), later.clone()], (Some(3), None)),
            [
                (Kind::Snapshot, 0),
                (Kind::Text, 3),
                (Kind::Text, 4),
                (Kind::Text, 5)
            ]
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn a_directory_s_segments_come_in_time_order() {
        let dir =
            std::env::temp_dir().join(format!("tickrelay-replay-files-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        for start in [30u64, 10, 20] {
            std::fs::write(dir.join(format!("tickrelay-{start:020}.rec.zst")), b"").unwrap();
        }
        std::fs::write(dir.join("notes.txt"), b"").unwrap();
        let found = files(&[dir.display().to_string()]).unwrap();
        let starts: Vec<_> = found.iter().map(|p| start_of(p).unwrap()).collect();
        assert_eq!(starts, [10, 20, 30]);
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
