//! The recorder (`[recorder]`): every upstream frame exactly as received — market feeds and each
//! account's `trade_updates` — with its receive time and source, appended to segment files.
//!
//! Owns: a bounded queue and the writer thread behind it. The feeds and trading streams hand it
//! each frame ([`Recorder::frame`], a `try_send` of a shared buffer: ingest never waits); when
//! the queue is full the frame is dropped and counted, and the record gets a gap record with the
//! count where the frames went missing. The writer batches records into zstd frames (at least
//! every `recorder.flush_ms`, 200 ms), so a crash loses at most the last moment and every segment stays
//! readable ([`format`](mod@format)). Segments rotate by size and age, start with a header and the accounts'
//! REST state, and the oldest go first past `max_bytes` or `max_age_hours`. A write that fails
//! (a full disk) stops the recorder, with the reason in the status; the daemon serves on.
//!
//! - [`format`](mod@format) — the record layout, the writer's and reader's halves.
//! - [`cat`] — `tickrelay record cat`: records as JSON lines, filtered.
//! - [`segments`] — naming, rotation and retention, a plain struct over a directory.

pub mod cat;
pub mod format;
pub mod segments;

use std::fs::File;
use std::io::Write;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::mpsc::{sync_channel, Receiver, SyncSender, TryRecvError, TrySendError};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use log::{error, info, warn};
use serde::Serialize;

use self::format::{write_frame, write_record, Kind};
use self::segments::Segments;
use crate::accounts::AccountStore;
use crate::time::Timestamp;

/// Records are written when this many bytes of them wait (or the flush interval passed).
const FLUSH_BYTES: usize = 256 * 1024;
/// The writer's nap when nothing waits (the queue holds what arrives meanwhile).
const NAP: Duration = Duration::from_millis(10);
/// Bytes of frames that may wait for the writer, whatever their number.
pub const MAX_QUEUED_BYTES: u64 = 64 << 20;
/// zstd's level: fast, and most of the ratio on these frames.
const LEVEL: i32 = 3;

/// What the writer is told.
enum Item {
    Frame {
        received_ns: u64,
        source: Arc<str>,
        /// Text, binary, or an account's snapshot.
        kind: Kind,
        data: Bytes,
    },
    Gap {
        received_ns: u64,
        lost: u64,
    },
    /// The daemon stops: write what waits, then say so.
    Finish(SyncSender<()>),
}

/// `[recorder]`, as the writer needs it.
#[derive(Clone, Debug)]
pub struct RecorderConfig {
    pub dir: PathBuf,
    /// Records are written at least this often (a crash loses at most this much).
    pub flush_every: Duration,
    pub segment_bytes: u64,
    pub segment_age: Duration,
    pub max_bytes: u64,
    pub max_age: Duration,
    pub queue: usize,
}

/// What the status shows.
#[derive(Debug, Default)]
pub struct RecorderStats {
    pub frames: AtomicU64,
    pub dropped: AtomicU64,
    pub gaps: AtomicU64,
    pub bytes: AtomicU64,
    pub segments: AtomicU64,
    pub stopped: AtomicBool,
    pub last_error: Mutex<Option<String>>,
}

/// The status, as `/api/v1/status` shows it.
#[derive(Clone, Debug, Serialize)]
pub struct RecorderStatus {
    /// `recording`, or `stopped` after a write failed (`last_error` says why).
    pub state: &'static str,
    pub dir: String,
    pub frames: u64,
    /// Frames lost because the disk fell behind (each loss is a gap record).
    pub dropped: u64,
    pub gaps: u64,
    /// Compressed bytes written.
    pub bytes: u64,
    /// Segments started.
    pub segments: u64,
    pub last_error: Option<String>,
}

/// The handle the feeds hold.
pub struct Recorder {
    tx: SyncSender<Item>,
    /// Frames lost since the last gap record was queued.
    lost: AtomicU64,
    /// Bytes of the frames in the queue (the writer takes them off).
    queued_bytes: Arc<AtomicU64>,
    stats: Arc<RecorderStats>,
    dir: PathBuf,
}

fn now_ns() -> u64 {
    u64::try_from(Timestamp::now().unix_nanos()).unwrap_or_default()
}

impl Recorder {
    /// Starts the writer thread; `accounts` is snapshotted at each segment's start.
    pub fn start(config: RecorderConfig, accounts: AccountStore) -> std::io::Result<Arc<Recorder>> {
        std::fs::create_dir_all(&config.dir)?;
        let (tx, rx) = sync_channel(config.queue.max(1));
        let stats = Arc::new(RecorderStats::default());
        let queued_bytes = Arc::new(AtomicU64::new(0));
        let recorder = Arc::new(Recorder {
            tx,
            lost: AtomicU64::new(0),
            queued_bytes: queued_bytes.clone(),
            stats: stats.clone(),
            dir: config.dir.clone(),
        });
        info!(
            "recorder: every upstream frame goes to {} (segments of {} MB or {:?}, keeping {} MB and {:?})",
            config.dir.display(),
            config.segment_bytes >> 20,
            config.segment_age,
            config.max_bytes >> 20,
            config.max_age
        );
        std::thread::Builder::new()
            .name("recorder".into())
            .spawn(move || Writer::new(config, accounts, stats, queued_bytes).run(rx))?;
        Ok(recorder)
    }

    /// A frame from `source`, as received. Never waits: with the queue full it is dropped and
    /// counted, and the next frame that fits is preceded by a gap record.
    pub fn frame(&self, source: &Arc<str>, data: &Bytes, binary: bool) {
        let kind = if binary { Kind::Binary } else { Kind::Text };
        self.push(source, kind, data);
    }

    /// One account's REST state after the trading stream (re)loaded it, as [`account_snapshot`]
    /// writes it; `source` is the account's trading source. Queued like a frame.
    pub fn snapshot(&self, source: &Arc<str>, state: &crate::accounts::AccountState) {
        let data = Bytes::from(account_snapshot(state).to_string());
        self.push(source, Kind::Snapshot, &data);
    }

    fn push(&self, source: &Arc<str>, kind: Kind, data: &Bytes) {
        if self.stats.stopped.load(Ordering::Relaxed) {
            self.stats.dropped.fetch_add(1, Ordering::Relaxed);
            return;
        }
        // Past the byte budget (a stalled disk) the frame is dropped too: the count bounds the
        // queue's frames, this its bytes.
        let size = data.len() as u64;
        if self.queued_bytes.fetch_add(size, Ordering::Relaxed) + size > MAX_QUEUED_BYTES {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return self.drop_one();
        }
        let received_ns = now_ns();
        // Taken whole (feeds call this from their own threads): one gap record per loss.
        let lost = self.lost.swap(0, Ordering::Relaxed);
        if lost > 0 && self.tx.try_send(Item::Gap { received_ns, lost }).is_err() {
            self.lost.fetch_add(lost, Ordering::Relaxed);
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            return self.drop_one();
        }
        let item = Item::Frame {
            received_ns,
            source: source.clone(),
            kind,
            data: data.clone(),
        };
        if let Err(TrySendError::Full(_) | TrySendError::Disconnected(_)) = self.tx.try_send(item) {
            self.queued_bytes.fetch_sub(size, Ordering::Relaxed);
            self.drop_one();
        }
    }

    /// The daemon stops: what waits is written before this returns (or `limit` has passed).
    pub fn finish(&self, limit: Duration) {
        let (done, finished) = sync_channel(1);
        let deadline = Instant::now() + limit;
        let mut item = Item::Finish(done);
        loop {
            match self.tx.try_send(item) {
                Ok(()) => break,
                Err(TrySendError::Full(back)) if Instant::now() < deadline => {
                    item = back;
                    std::thread::sleep(Duration::from_millis(5));
                }
                Err(_) => return,
            }
        }
        let _ = finished.recv_timeout(deadline.saturating_duration_since(Instant::now()));
    }

    fn drop_one(&self) {
        self.lost.fetch_add(1, Ordering::Relaxed);
        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
    }

    pub fn status(&self) -> RecorderStatus {
        let s = &self.stats;
        RecorderStatus {
            state: if s.stopped.load(Ordering::Relaxed) {
                "stopped"
            } else {
                "recording"
            },
            dir: self.dir.display().to_string(),
            frames: s.frames.load(Ordering::Relaxed),
            dropped: s.dropped.load(Ordering::Relaxed),
            gaps: s.gaps.load(Ordering::Relaxed),
            bytes: s.bytes.load(Ordering::Relaxed),
            segments: s.segments.load(Ordering::Relaxed),
            last_error: s.last_error.lock().ok().and_then(|e| e.clone()),
        }
    }
}

/// An account's REST state as a snapshot record holds it: `{"account":…,"positions":[…],
/// "orders":[…]}` (the open orders).
pub fn account_snapshot(a: &crate::accounts::AccountState) -> serde_json::Value {
    serde_json::json!({
        "account": a.account,
        "positions": a.positions.values().collect::<Vec<_>>(),
        "orders": a.orders.values().collect::<Vec<_>>(),
    })
}

/// A recorder as one upstream connection holds it: its source name goes with every frame.
#[derive(Clone)]
pub struct Tape {
    recorder: Arc<Recorder>,
    source: Arc<str>,
}

impl Tape {
    pub fn new(recorder: &Arc<Recorder>, source: &str) -> Tape {
        Tape {
            recorder: recorder.clone(),
            source: Arc::from(source),
        }
    }

    /// A frame as received.
    pub fn frame(&self, data: &Bytes, binary: bool) {
        self.recorder.frame(&self.source, data, binary);
    }

    /// The account's REST state, just loaded (trading tapes only).
    pub fn snapshot(&self, state: &crate::accounts::AccountState) {
        self.recorder.snapshot(&self.source, state);
    }
}

impl std::fmt::Debug for Tape {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Tape({})", self.source)
    }
}

/// The writer thread's state.
struct Writer {
    config: RecorderConfig,
    accounts: AccountStore,
    stats: Arc<RecorderStats>,
    segments: Segments,
    file: Option<File>,
    written: u64,
    opened: Instant,
    batch: Vec<u8>,
    /// The handle's count of queued bytes: lowered as frames are taken.
    queued_bytes: Arc<AtomicU64>,
}

impl Writer {
    fn new(
        config: RecorderConfig,
        accounts: AccountStore,
        stats: Arc<RecorderStats>,
        queued_bytes: Arc<AtomicU64>,
    ) -> Writer {
        Writer {
            segments: Segments::new(config.dir.clone(), config.max_bytes, config.max_age),
            config,
            accounts,
            stats,
            queued_bytes,
            file: None,
            written: 0,
            opened: Instant::now(),
            batch: Vec::with_capacity(FLUSH_BYTES * 2),
        }
    }

    /// Takes what waits, writes a frame when enough waits or the flush interval has passed, and
    /// naps when the queue is empty: the writer never waits *on* the queue, so a sender's
    /// `try_send` never has a sleeping thread to wake (a wake per frame cost the feed a syscall).
    fn run(mut self, rx: Receiver<Item>) {
        let mut last_flush = Instant::now();
        loop {
            let mut taken = 0usize;
            loop {
                match rx.try_recv() {
                    Ok(item) => {
                        self.add(item);
                        taken += 1;
                        if self.batch.len() >= FLUSH_BYTES {
                            break;
                        }
                    }
                    Err(TryRecvError::Empty) => break,
                    Err(TryRecvError::Disconnected) => {
                        let _ = self.flush();
                        return;
                    }
                }
            }
            if self.batch.len() >= FLUSH_BYTES || last_flush.elapsed() >= self.config.flush_every {
                if let Err(e) = self.flush() {
                    self.stop(e);
                    // Nothing more is written; the queue is still drained so senders never
                    // find it full for long, and what arrives is counted as dropped.
                    for _ in rx.iter() {
                        self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                    }
                    return;
                }
                last_flush = Instant::now();
            }
            if self.stats.stopped.load(Ordering::Relaxed) {
                // A write failed (on a `Finish`): terminal, as above.
                for _ in rx.iter() {
                    self.stats.dropped.fetch_add(1, Ordering::Relaxed);
                }
                return;
            }
            if taken == 0 {
                std::thread::sleep(NAP);
            }
        }
    }

    fn add(&mut self, item: Item) {
        match item {
            Item::Frame {
                received_ns,
                source,
                kind,
                data,
            } => {
                self.queued_bytes
                    .fetch_sub(data.len() as u64, Ordering::Relaxed);
                write_record(&mut self.batch, kind, received_ns, &source, &data);
                if kind != Kind::Snapshot {
                    self.stats.frames.fetch_add(1, Ordering::Relaxed);
                }
            }
            Item::Gap { received_ns, lost } => {
                write_record(
                    &mut self.batch,
                    Kind::Gap,
                    received_ns,
                    "",
                    &lost.to_le_bytes(),
                );
                self.stats.gaps.fetch_add(1, Ordering::Relaxed);
            }
            Item::Finish(done) => {
                if let Err(e) = self.flush() {
                    self.stop(e);
                }
                let _ = done.try_send(());
            }
        }
    }

    /// Writes the waiting records as one zstd frame, rotating first when the segment is full or
    /// old.
    fn flush(&mut self) -> std::io::Result<()> {
        if self.batch.is_empty() {
            return Ok(());
        }
        let rotate = self.file.is_none()
            || self.written >= self.config.segment_bytes
            || self.opened.elapsed() >= self.config.segment_age;
        if rotate {
            self.open_segment()?;
        }
        let file = self.file.as_mut().expect("a segment is open");
        let n = write_frame(file, &self.batch, LEVEL)?;
        file.flush()?;
        self.batch.clear();
        self.written += n as u64;
        self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        Ok(())
    }

    /// A new segment: its header and the accounts' state first, in a frame of their own; then
    /// retention.
    fn open_segment(&mut self) -> std::io::Result<()> {
        let now = now_ns();
        let (path, file) = self.segments.create(now)?;
        let mut head = Vec::new();
        let header = serde_json::json!({
            "format": "tickrelay-record",
            "version": 1,
            "started": Timestamp::now(),
            "tickrelay": env!("CARGO_PKG_VERSION"),
        });
        write_record(
            &mut head,
            Kind::Header,
            now,
            "",
            header.to_string().as_bytes(),
        );
        let accounts: serde_json::Map<String, serde_json::Value> = self
            .accounts
            .all()
            .into_iter()
            .map(|a| (a.id.clone(), account_snapshot(&a)))
            .collect();
        write_record(
            &mut head,
            Kind::Snapshot,
            now,
            "",
            serde_json::Value::Object(accounts).to_string().as_bytes(),
        );
        let mut file = file;
        let n = write_frame(&mut file, &head, LEVEL)?;
        self.file = Some(file);
        self.written = n as u64;
        self.opened = Instant::now();
        self.stats.bytes.fetch_add(n as u64, Ordering::Relaxed);
        self.stats.segments.fetch_add(1, Ordering::Relaxed);
        info!("recorder: new segment {}", path.display());
        for (gone, why) in self.segments.enforce_retention(now, &path) {
            info!("recorder: removed {} ({why})", gone.display());
        }
        Ok(())
    }

    fn stop(&mut self, e: std::io::Error) {
        error!(
            "recorder: writing to {} failed ({e}); recording stopped, the daemon serves on",
            self.config.dir.display()
        );
        self.stats.stopped.store(true, Ordering::Relaxed);
        if let Ok(mut last) = self.stats.last_error.lock() {
            *last = Some(e.to_string());
        }
        self.file = None;
        warn!("recorder: frames from now on are counted as dropped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn recorder(queue: usize) -> (Recorder, Receiver<Item>) {
        let (tx, rx) = sync_channel(queue);
        let recorder = Recorder {
            tx,
            lost: AtomicU64::new(0),
            queued_bytes: Arc::default(),
            stats: Arc::default(),
            dir: PathBuf::new(),
        };
        (recorder, rx)
    }

    fn what(item: Item) -> String {
        match item {
            Item::Frame { data, .. } => String::from_utf8_lossy(&data).into_owned(),
            Item::Gap { lost, .. } => format!("gap {lost}"),
            Item::Finish(_) => "finish".into(),
        }
    }

    #[test]
    fn finish_writes_what_waits_before_it_returns() {
        let dir = std::env::temp_dir().join(format!("tickrelay-finish-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        let config = RecorderConfig {
            dir: dir.clone(),
            segment_bytes: 1 << 20,
            segment_age: Duration::from_secs(3600),
            flush_every: Duration::from_secs(3600),
            max_bytes: 1 << 30,
            max_age: Duration::from_secs(3600),
            queue: 1024,
        };
        let r = Recorder::start(config, AccountStore::default()).unwrap();
        let source: Arc<str> = Arc::from("stocks");
        for i in 0..100 {
            r.frame(&source, &Bytes::from(format!("[{{\"i\":{i}}}]")), false);
        }
        // Well inside the hour-long flush interval: only `finish` can have written them.
        r.finish(Duration::from_secs(5));
        let segments = segments::Segments::new(dir.clone(), u64::MAX, Duration::MAX)
            .list()
            .unwrap();
        assert_eq!(segments.len(), 1);
        let file = std::fs::File::open(&segments[0].0).unwrap();
        let (records, truncated) = format::read_segment(file).unwrap();
        assert!(!truncated);
        let frames = records.iter().filter(|r| r.kind == Kind::Text).count();
        assert_eq!(frames, 100);
        std::fs::remove_dir_all(&dir).unwrap();
    }

    #[test]
    fn frames_that_do_not_fit_are_counted_and_marked_where_they_went_missing() {
        let (r, rx) = recorder(2);
        let source: Arc<str> = Arc::from("stocks");
        for i in 1..=4 {
            r.frame(&source, &Bytes::from(format!("f{i}")), false);
        }
        assert_eq!(r.status().dropped, 2);
        assert_eq!(
            [what(rx.recv().unwrap()), what(rx.recv().unwrap())],
            ["f1", "f2"]
        );
        r.frame(&source, &Bytes::from("f5"), false);
        assert_eq!(
            [what(rx.recv().unwrap()), what(rx.recv().unwrap())],
            ["gap 2", "f5"],
            "the gap comes before the next frame that fits"
        );
        assert!(rx.try_recv().is_err());
        assert_eq!(r.lost.load(Ordering::Relaxed), 0);
    }
}
