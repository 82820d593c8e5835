//! The daemon's counters for `kmsfs stats` that are not the DEK cache's: KMS call
//! latency (a log2 histogram), integrity failures by kind, plaintext bytes in and out,
//! uptime. Lock-free: relaxed atomics only, one `fetch_add` per event on the I/O path.

use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use serde::Serialize;

/// Histogram buckets: bucket `i` holds latencies in `[2^i, 2^(i+1))` µs (bucket 0 also
/// 0 µs); the last one everything from 2^31 µs (~36 min) up.
const BUCKETS: usize = 32;

/// KMS call latencies.
#[derive(Debug)]
pub struct Latency {
    count: AtomicU64,
    sum_us: AtomicU64,
    max_us: AtomicU64,
    buckets: [AtomicU64; BUCKETS],
}

impl Default for Latency {
    fn default() -> Self {
        Latency {
            count: AtomicU64::new(0),
            sum_us: AtomicU64::new(0),
            max_us: AtomicU64::new(0),
            buckets: std::array::from_fn(|_| AtomicU64::new(0)),
        }
    }
}

/// A summary of [`Latency`], in milliseconds.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct LatencySnapshot {
    /// Calls timed.
    pub count: u64,
    /// Mean, ms.
    pub mean_ms: f64,
    /// 99th percentile, ms: the upper bound of its histogram bucket (within 2x).
    pub p99_ms: f64,
    /// Slowest call, ms.
    pub max_ms: f64,
}

impl Latency {
    /// Records one call that took `d`.
    pub fn record(&self, d: Duration) {
        let us = u64::try_from(d.as_micros()).unwrap_or(u64::MAX);
        let b = (63 - us.max(1).leading_zeros() as usize).min(BUCKETS - 1);
        self.buckets[b].fetch_add(1, Ordering::Relaxed);
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_us.fetch_add(us, Ordering::Relaxed);
        self.max_us.fetch_max(us, Ordering::Relaxed);
    }

    /// Runs `f`, recording how long it took.
    pub fn time<T>(&self, f: impl FnOnce() -> T) -> T {
        let t = Instant::now();
        let r = f();
        self.record(t.elapsed());
        r
    }

    /// The summary.
    pub fn snapshot(&self) -> LatencySnapshot {
        let count = self.count.load(Ordering::Relaxed);
        let counts: Vec<u64> = self
            .buckets
            .iter()
            .map(|b| b.load(Ordering::Relaxed))
            .collect();
        let total: u64 = counts.iter().sum();
        let want = total - total / 100; // the smallest rank at or above 99 %
        let mut seen = 0;
        let mut p99_us = 0u64;
        for (i, c) in counts.iter().enumerate() {
            seen += c;
            if *c > 0 && seen >= want {
                p99_us = 1u64 << (i + 1);
                break;
            }
        }
        let max_us = self.max_us.load(Ordering::Relaxed);
        let ms = |us: u64| us as f64 / 1000.0;
        LatencySnapshot {
            count,
            mean_ms: if count == 0 {
                0.0
            } else {
                ms(self.sum_us.load(Ordering::Relaxed)) / count as f64
            },
            p99_ms: ms(p99_us.min(max_us)),
            max_ms: ms(max_us),
        }
    }
}

/// The daemon-wide counters.
#[derive(Debug)]
pub struct Metrics {
    started: Instant,
    /// Latency of every KMS call the daemon makes (Decrypt, GenerateDataKey).
    pub kms_latency: Latency,
    /// Blocks that failed authentication (or a torn last block).
    pub bad_blocks: AtomicU64,
    /// File headers that could not be read or parsed.
    pub bad_headers: AtomicU64,
    /// Plaintext bytes returned to readers.
    pub bytes_read: AtomicU64,
    /// Plaintext bytes accepted from writers.
    pub bytes_written: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            started: Instant::now(),
            kms_latency: Latency::default(),
            bad_blocks: AtomicU64::new(0),
            bad_headers: AtomicU64::new(0),
            bytes_read: AtomicU64::new(0),
            bytes_written: AtomicU64::new(0),
        }
    }
}

/// A copy of [`Metrics`] for `kmsfs stats`.
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct MetricsSnapshot {
    /// Seconds since the volume was opened.
    pub uptime_secs: u64,
    /// KMS call latency.
    pub kms_latency: LatencySnapshot,
    /// Blocks that failed authentication.
    pub bad_blocks: u64,
    /// Unreadable file headers.
    pub bad_headers: u64,
    /// Plaintext bytes read.
    pub bytes_read: u64,
    /// Plaintext bytes written.
    pub bytes_written: u64,
}

impl Metrics {
    /// Adds `n` to a counter.
    pub fn add(c: &AtomicU64, n: u64) {
        c.fetch_add(n, Ordering::Relaxed);
    }

    /// The snapshot.
    pub fn snapshot(&self) -> MetricsSnapshot {
        MetricsSnapshot {
            uptime_secs: self.started.elapsed().as_secs(),
            kms_latency: self.kms_latency.snapshot(),
            bad_blocks: self.bad_blocks.load(Ordering::Relaxed),
            bad_headers: self.bad_headers.load(Ordering::Relaxed),
            bytes_read: self.bytes_read.load(Ordering::Relaxed),
            bytes_written: self.bytes_written.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn latency_histogram_mean_p99_max() {
        let l = Latency::default();
        assert_eq!(l.snapshot().count, 0);
        for _ in 0..99 {
            l.record(Duration::from_micros(100)); // bucket [64, 128)
        }
        l.record(Duration::from_millis(50));
        let s = l.snapshot();
        assert_eq!(s.count, 100);
        assert_eq!(s.max_ms, 50.0);
        assert!(
            (s.mean_ms - (99.0 * 0.1 + 50.0) / 100.0).abs() < 1e-9,
            "{s:?}"
        );
        assert_eq!(s.p99_ms, 0.128, "{s:?}");
        l.record(Duration::from_millis(50));
        assert_eq!(l.snapshot().p99_ms, 50.0, "capped by the max");
        l.record(Duration::from_secs(1 << 40));
        assert_eq!(l.snapshot().count, 102);
    }
}
