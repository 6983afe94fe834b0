//! The replay's pace: when a record received at a recorded time is due on the wall clock. A plain
//! struct the player asks before each frame; the tests drive it with made-up instants.

use std::time::{Duration, Instant};

/// Recorded time → wall time, at a speed.
#[derive(Debug, Clone)]
pub struct Clock {
    /// Recorded seconds per wall second; `None` plays as fast as the consumers read.
    factor: Option<f64>,
    /// A wall instant and the recorded time it stands for; set by the first frame after a
    /// start, a pause or a gap, so time spent waiting is not made up for by a burst.
    anchor: Option<(Instant, u64)>,
    /// The recorded time the next anchor stands for (where the replay stopped), if not the
    /// next frame's own.
    from: Option<u64>,
}

impl Clock {
    pub fn new(factor: Option<f64>) -> Clock {
        Clock {
            factor,
            anchor: None,
            from: None,
        }
    }

    /// When a record received at `t_ns` is due, if later than `now`.
    pub fn due(&mut self, t_ns: u64, now: Instant) -> Option<Instant> {
        let factor = self.factor?;
        let from = self.from.take().unwrap_or(t_ns);
        let (wall, base) = *self.anchor.get_or_insert((now, from));
        let ahead = t_ns.saturating_sub(base) as f64 / factor;
        let at = wall + Duration::from_nanos(ahead.min(u64::MAX as f64) as u64);
        (at > now).then_some(at)
    }

    /// The recorded time the clock shows at `now` (between frames), if it runs at a speed.
    pub fn recorded_at(&self, now: Instant) -> Option<u64> {
        let factor = self.factor?;
        let (wall, base) = self.anchor?;
        let elapsed = now.saturating_duration_since(wall).as_nanos() as f64 * factor;
        Some(base.saturating_add(elapsed.min(u64::MAX as f64) as u64))
    }

    /// The replay stood still at recorded time `at` (a pause, a gap, a new round): the next
    /// frame is due its recorded distance from `at` after it goes on, or at once without `at`.
    pub fn resume(&mut self, at: Option<u64>) {
        self.anchor = None;
        self.from = at;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const SEC: u64 = 1_000_000_000;

    #[test]
    fn frames_are_due_at_their_recorded_distance_over_the_speed() {
        let now = Instant::now();
        let mut clock = Clock::new(Some(10.0));
        assert_eq!(
            clock.due(100 * SEC, now),
            None,
            "the first frame goes at once"
        );
        assert_eq!(
            clock.due(105 * SEC, now),
            Some(now + Duration::from_millis(500)),
            "5 recorded seconds at 10x"
        );
        // A frame recorded out of order (another feed's, a moment earlier) is simply due now.
        assert_eq!(clock.due(99 * SEC, now), None);
        let later = now + Duration::from_secs(1);
        assert_eq!(clock.due(105 * SEC, later), None, "past due");
    }

    #[test]
    fn after_a_stop_the_pace_goes_on_from_where_it_stood() {
        let now = Instant::now();
        let mut clock = Clock::new(Some(1.0));
        clock.due(0, now);
        // Paused at recorded second 8 for a minute: the frame of second 10 is due 2 s after.
        let after_pause = now + Duration::from_secs(60);
        clock.resume(Some(8 * SEC));
        assert_eq!(
            clock.due(10 * SEC, after_pause),
            Some(after_pause + Duration::from_secs(2))
        );
        assert_eq!(
            clock.due(11 * SEC, after_pause),
            Some(after_pause + Duration::from_secs(3))
        );
        // Without a position, the next frame goes at once and sets the pace.
        clock.resume(None);
        assert_eq!(clock.due(20 * SEC, after_pause), None);
        assert_eq!(
            clock.due(21 * SEC, after_pause),
            Some(after_pause + Duration::from_secs(1))
        );
    }

    #[test]
    fn between_frames_the_clock_shows_the_recorded_time() {
        let now = Instant::now();
        let mut clock = Clock::new(Some(2.0));
        assert_eq!(clock.recorded_at(now), None, "not started");
        clock.due(10 * SEC, now);
        assert_eq!(
            clock.recorded_at(now + Duration::from_millis(1500)),
            Some(13 * SEC)
        );
        assert_eq!(Clock::new(None).recorded_at(now), None, "max has no clock");
    }

    #[test]
    fn at_max_nothing_waits() {
        let mut clock = Clock::new(None);
        let now = Instant::now();
        assert_eq!(clock.due(0, now), None);
        assert_eq!(clock.due(3600 * SEC, now), None);
    }
}
