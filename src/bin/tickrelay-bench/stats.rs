//! Counters and the latency histogram the clients fill, and how they merge across threads.
//!
//! The histogram is log-linear like HdrHistogram: values (microseconds) below 256 get a bucket
//! each; above that every power of two is split into 128 buckets, so a bucket is never wider than
//! 1/128 (< 0.8 %) of its values. Recording is an index computation and an increment.

/// Exact buckets below this; also the number of sub-buckets per power of two, doubled.
const SUB_BITS: u32 = 8;
const SUB: u64 = 1 << SUB_BITS;
const HALF: u64 = SUB / 2;
/// Buckets for every `u64`: the exact range plus `HALF` for each power of two above it.
const BUCKETS: usize = (SUB + (64 - SUB_BITS as u64) * HALF) as usize;

/// Latency distribution in microseconds.
#[derive(Clone, Debug)]
pub struct Histogram {
    counts: Vec<u64>,
    total: u64,
    max: u64,
}

impl Default for Histogram {
    fn default() -> Self {
        Histogram {
            counts: vec![0; BUCKETS],
            total: 0,
            max: 0,
        }
    }
}

impl Histogram {
    pub fn record(&mut self, micros: u64) {
        self.counts[bucket_index(micros)] += 1;
        self.total += 1;
        self.max = self.max.max(micros);
    }

    pub fn merge(&mut self, other: &Histogram) {
        for (mine, theirs) in self.counts.iter_mut().zip(&other.counts) {
            *mine += theirs;
        }
        self.total += other.total;
        self.max = self.max.max(other.max);
    }

    pub fn count(&self) -> u64 {
        self.total
    }

    pub fn max(&self) -> u64 {
        self.max
    }

    /// The value at quantile `q` (0..=1): the middle of the bucket holding that rank, never more
    /// than the largest value recorded. `None` when empty.
    pub fn quantile(&self, q: f64) -> Option<u64> {
        if self.total == 0 {
            return None;
        }
        let rank = ((q * self.total as f64).ceil() as u64).clamp(1, self.total);
        let mut seen = 0;
        for (index, count) in self.counts.iter().enumerate() {
            seen += count;
            if seen >= rank {
                let (low, width) = bucket_range(index);
                return Some((low + (width - 1) / 2).min(self.max));
            }
        }
        Some(self.max)
    }
}

fn bucket_index(v: u64) -> usize {
    if v < SUB {
        return v as usize;
    }
    let msb = 63 - v.leading_zeros();
    let shift = msb - (SUB_BITS - 1);
    (SUB + u64::from(shift - 1) * HALF + ((v >> shift) - HALF)) as usize
}

/// The lowest value of a bucket and its width.
fn bucket_range(index: usize) -> (u64, u64) {
    let i = index as u64;
    if i < SUB {
        return (i, 1);
    }
    let j = i - SUB;
    let shift = j / HALF + 1;
    ((j % HALF + HALF) << shift, 1 << shift)
}

/// What the clients of one thread saw during the measurement window.
#[derive(Clone, Debug, Default)]
pub struct ClientStats {
    /// Per update: receive time − the update's exchange timestamp (throttle hold included).
    pub latency: Histogram,
    /// Per price frame: receive time − the frame's own timestamp (when the daemon wrote it), so
    /// fan-out, queueing and socket time without the throttle's hold.
    pub delivery: Histogram,
    /// WebSocket messages received (any type).
    pub frames: u64,
    /// Price updates received (a batch counts each update in it).
    pub updates: u64,
    /// Snapshot updates: counted in `updates` but not in the latency.
    pub snapshots: u64,
    /// Updates without a parseable exchange timestamp.
    pub untimed: u64,
    /// Timestamps that lie in the future (clock oddities); recorded as 0 µs.
    pub negative_latency: u64,
    /// Price frames the cheap scan could not read and serde_json had to.
    pub parse_fallbacks: u64,
    /// Updates per subscribed client, one slot per client (for fairness: min and max).
    pub client_updates: Vec<u64>,
}

impl ClientStats {
    pub fn merge(&mut self, other: &ClientStats) {
        self.latency.merge(&other.latency);
        self.delivery.merge(&other.delivery);
        self.frames += other.frames;
        self.updates += other.updates;
        self.snapshots += other.snapshots;
        self.untimed += other.untimed;
        self.negative_latency += other.negative_latency;
        self.parse_fallbacks += other.parse_fallbacks;
        self.client_updates.extend_from_slice(&other.client_updates);
    }

    /// Records one update's latency from its exchange timestamp and the receive time.
    pub fn record_latency(&mut self, received_nanos: i64, exchange_nanos: i64) {
        let micros = self.micros_since(received_nanos, exchange_nanos);
        self.latency.record(micros);
    }

    /// Records one frame's delivery time from its own timestamp and the receive time.
    pub fn record_delivery(&mut self, received_nanos: i64, written_nanos: i64) {
        let micros = self.micros_since(received_nanos, written_nanos);
        self.delivery.record(micros);
    }

    /// Microseconds from `then` to `now`; a negative span (clock oddities) counts as 0.
    fn micros_since(&mut self, now: i64, then: i64) -> u64 {
        let nanos = now - then;
        if nanos < 0 {
            self.negative_latency += 1;
        }
        nanos.max(0) as u64 / 1000
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buckets_are_contiguous_and_tight() {
        let mut expected_low = 0;
        for index in 0..BUCKETS {
            let (low, width) = bucket_range(index);
            assert_eq!(low, expected_low, "bucket {index}");
            assert_eq!(bucket_index(low), index);
            assert_eq!(bucket_index(low + (width - 1)), index);
            assert!(width == 1 || width * 128 <= low, "bucket {index} too wide");
            expected_low = low.wrapping_add(width);
        }
        assert_eq!(bucket_index(u64::MAX), BUCKETS - 1);
    }

    #[test]
    fn quantiles_are_within_one_percent() {
        let mut h = Histogram::default();
        for v in 1..=100_000 {
            h.record(v);
        }
        for (q, exact) in [(0.5, 50_000.0), (0.99, 99_000.0), (0.999, 99_900.0)] {
            let got = h.quantile(q).unwrap() as f64;
            assert!((got - exact).abs() / exact < 0.01, "q{q}: {got} vs {exact}");
        }
        assert_eq!(h.quantile(1.0), Some(100_000));
        assert_eq!(Histogram::default().quantile(0.5), None);
    }

    #[test]
    fn merging_adds_counts() {
        let mut a = Histogram::default();
        let mut b = Histogram::default();
        a.record(10);
        b.record(1_000_000);
        a.merge(&b);
        assert_eq!(a.count(), 2);
        assert_eq!(a.max(), 1_000_000);
        assert_eq!(a.quantile(0.5), Some(10));
    }
}
