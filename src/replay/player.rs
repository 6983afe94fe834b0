//! The player: plays the records in order, each data frame to the ready connections of its
//! source, at the pace the [`Clock`] sets.
//!
//! Owns: the round (the reader's channel), the clock, which sources have streamed. Talks to: the
//! stage (targets, kicks, snapshots) and the control (state, position, counts). A frame is sent
//! to each connection's writer and awaited: a slow consumer slows the replay (at `max` that is
//! the pace; the SDK programs' outboxes too, through the control's backlog), and one that takes
//! nothing for [`SEND_LIMIT`] is closed rather than allowed to stop the replay. A pause stops the
//! clock where it stands, even between frames. The protocol's own recorded frames are not played
//! (the server answers those itself), but a recorded `connected` after data means the original
//! connection was lost there — so is a gap record (the recorder fell behind), and the end of a
//! round before the next: the player then closes the connections concerned, as a lost upstream
//! would be, and waits (the clock stopped) until the daemon has reconnected them.

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use log::{info, warn};
use tokio::sync::mpsc;

use super::clock::Clock;
use super::server::ws_frame;
use super::source::{classify, spawn_reader, Meaning};
use super::stage::{Shared, Source};
use super::ReplayState;
use crate::recorder::format::{Kind, Record};

/// How long the player waits for the connections it closed to come back.
const RETURN_LIMIT: Duration = Duration::from_secs(30);
/// How long one connection may take to accept a frame before it is closed.
const SEND_LIMIT: Duration = Duration::from_secs(10);
/// How often a replay at `max` held back by a program's backlog looks again.
const BACKLOG_CHECK: Duration = Duration::from_millis(1);
/// How often a looping replay nobody listens to looks again.
const IDLE_CHECK: Duration = Duration::from_secs(60);

/// Everything a replay needs.
pub struct Player {
    pub files: Vec<PathBuf>,
    pub window: (Option<u64>, Option<u64>),
    pub factor: Option<f64>,
    pub repeat: bool,
    pub shared: Arc<Shared>,
}

impl Player {
    pub async fn run(self) {
        let control = self.shared.control.clone();
        let mut round = Round {
            clock: Clock::new(self.factor),
            position: 0,
            streamed: BTreeSet::new(),
            played: BTreeSet::new(),
            delivered: 0,
        };
        loop {
            let mut rx = match spawn_reader(self.files.clone(), self.window) {
                Ok(rx) => rx,
                Err(e) => {
                    warn!("replay: cannot start reading: {e}");
                    control.set_state(ReplayState::Finished);
                    return;
                }
            };
            let mut first = true;
            while let Some(batch) = rx.recv().await {
                for record in batch {
                    if std::mem::take(&mut first) {
                        // A round starts where its record starts (or `from`: account snapshots
                        // from before it come first).
                        let start = self
                            .window
                            .0
                            .map_or(record.received_ns, |from| from.max(record.received_ns));
                        round.clock.resume(Some(start));
                        round.position = start;
                    }
                    self.play(record, &mut round).await;
                }
            }
            if round.played.is_empty() {
                warn!("replay: the record holds no market data or trade update in its window: nothing to play");
                break;
            }
            if !self.repeat {
                break;
            }
            control.round();
            info!("replay: the end of the record; playing it again");
            self.shared.stage().forget_accounts();
            self.lose(None).await;
            round.streamed.clear();
            if std::mem::take(&mut round.delivered) == 0 {
                // Nobody took a frame: wait for someone who would rather than loop on an empty
                // stage.
                let played = std::mem::take(&mut round.played);
                while !self
                    .shared
                    .wait_for(IDLE_CHECK, |stage| {
                        !stage.ready_sources(None).is_disjoint(&played)
                    })
                    .await
                {}
            }
            round.played.clear();
        }
        info!("replay: the end of the record");
        control.set_state(ReplayState::Finished);
    }

    async fn play(&self, record: Record, round: &mut Round) {
        match record.kind {
            Kind::Header => {}
            Kind::Snapshot => {
                self.shared
                    .stage()
                    .snapshot(&record.source, &record.payload);
                self.shared.touch();
            }
            Kind::Gap => {
                self.pace(record.received_ns, round).await;
                warn!("replay: the record has a gap here (the recorder fell behind)");
                self.lose(None).await;
                round.clock.resume(Some(record.received_ns));
                round.streamed.clear();
            }
            Kind::Text | Kind::Binary => {
                let Some(source) = Source::parse(&record.source) else {
                    return;
                };
                let binary = record.kind == Kind::Binary;
                match classify(&record.source, &record.payload, binary) {
                    Meaning::Protocol { fresh } => {
                        if fresh && round.streamed.contains(&source) {
                            // The recorded connection was lost before this one began.
                            self.pace(record.received_ns, round).await;
                            round.streamed.remove(&source);
                            self.lose(Some(&source)).await;
                            round.clock.resume(Some(record.received_ns));
                        }
                    }
                    meaning @ (Meaning::Data | Meaning::Fill) => {
                        self.pace(record.received_ns, round).await;
                        if self.factor.is_none() {
                            // As fast as the consumers read: the SDK programs too, not only the
                            // daemon's feed.
                            while self.shared.control.backlog.over() {
                                tokio::time::sleep(BACKLOG_CHECK).await;
                            }
                        }
                        let frame = ws_frame(binary, &record.payload);
                        let targets = self.shared.stage().targets(&source);
                        round.delivered += targets.len();
                        for (id, out) in targets {
                            // Mostly there is room: no timer then.
                            let frame = match out.try_send(frame.clone()) {
                                Err(mpsc::error::TrySendError::Full(frame)) => frame,
                                _ => continue,
                            };
                            let sent = tokio::time::timeout(SEND_LIMIT, out.send(frame));
                            if sent.await.is_err() {
                                warn!(
                                    "replay: a {} connection took no frame for {SEND_LIMIT:?}: closing it",
                                    record.source
                                );
                                if let Some(kick) = self.shared.stage().kick_one(id) {
                                    kick.notify_one();
                                }
                                self.shared.touch();
                            }
                        }
                        if let (Source::Account(account), Meaning::Fill) = (&source, meaning) {
                            // After a fill the original daemon reloaded the account.
                            self.shared.stage().updated(account);
                        }
                        round.streamed.insert(source.clone());
                        round.played.insert(source);
                        self.shared.control.played(record.received_ns);
                    }
                }
            }
        }
    }

    /// Waits until the replay plays and the record's time `t_ns` is due. A pause stops the clock
    /// where it stands, even between frames.
    async fn pace(&self, t_ns: u64, round: &mut Round) {
        let control = &self.shared.control;
        loop {
            if control.wait_until_playing().await {
                round.clock.resume(Some(round.position));
            }
            let Some(at) = round.clock.due(t_ns, Instant::now()) else {
                break;
            };
            let wake = control.wake.notified();
            tokio::pin!(wake);
            wake.as_mut().enable();
            if control.state() == ReplayState::Playing {
                tokio::select! {
                    _ = tokio::time::sleep_until(at.into()) => break,
                    _ = wake => {}
                }
            }
            // Paused before the frame was due: the clock stands where it got to.
            if let Some(now) = round.clock.recorded_at(Instant::now()) {
                round.position = now.clamp(round.position, t_ns);
            }
        }
        round.position = t_ns;
    }

    /// The connections of `which` (every one when `None`) lose their upstream: they are
    /// closed, and the player waits until the daemon has them back (or [`RETURN_LIMIT`]).
    async fn lose(&self, which: Option<&Source>) {
        self.shared.control.gap();
        let (kicks, wanted) = {
            let mut stage = self.shared.stage();
            let wanted = stage.ready_sources(which);
            (stage.kick(which), wanted)
        };
        for kick in kicks {
            kick.notify_one();
        }
        self.shared.touch();
        if wanted.is_empty() {
            return;
        }
        let back = self
            .shared
            .wait_for(RETURN_LIMIT, |stage| stage.all_ready(&wanted))
            .await;
        if !back {
            warn!("replay: not every connection came back after a gap; playing on");
        }
    }
}

/// Where a round is.
struct Round {
    clock: Clock,
    /// The recorded time the replay has reached.
    position: u64,
    /// Sources that have played data since their last loss.
    streamed: BTreeSet<Source>,
    /// Sources that have played data this round.
    played: BTreeSet<Source>,
    /// Frames handed to connections this round.
    delivered: usize,
}
