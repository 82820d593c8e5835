//! The DEK cache: SHA-256(wrapped DEK) → DEK plaintext, LRU with a capacity and a
//! maximum age on the monotonic clock (with jitter), single-flight KMS calls and
//! counters for `kmsfs stats`.

use std::collections::HashMap;
use std::fmt;
use std::num::NonZeroUsize;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use lru::LruCache;
use parking_lot::{Condvar, Mutex};
use serde::Serialize;
use zeroize::Zeroizing;

use crate::backing::error::{FsError, FsResult};
use crate::format::aead;

/// A DEK in plaintext. Zeroized on drop; `Debug` shows nothing.
pub struct Dek(Zeroizing<Vec<u8>>);

impl Dek {
    /// Wraps key bytes.
    pub fn new(bytes: Zeroizing<Vec<u8>>) -> Self {
        Dek(bytes)
    }
    /// The key bytes. **MUST NOT** be logged or written anywhere.
    pub fn expose(&self) -> &[u8] {
        &self.0
    }
}

impl fmt::Debug for Dek {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Dek").finish_non_exhaustive()
    }
}

/// Counters, all monotonic.
#[derive(Debug, Default)]
pub struct Counters {
    /// Lookups served from the cache.
    pub hits: AtomicU64,
    /// Lookups that were not in the cache (or had expired).
    pub misses: AtomicU64,
    /// Calls made to the KMS (Decrypt and GenerateDataKey).
    pub kms_calls: AtomicU64,
    /// KMS calls that failed.
    pub kms_failures: AtomicU64,
    /// Blocks, headers or configs that failed authentication or parsing.
    pub integrity_failures: AtomicU64,
    /// GenerateDataKey calls (new DEKs).
    pub deks_generated: AtomicU64,
    /// Entries pushed out by newer ones (capacity reached).
    pub evictions: AtomicU64,
    /// Entries dropped because their maximum age had passed.
    pub expirations: AtomicU64,
}

/// A point-in-time copy of the counters, for `kmsfs stats`.
#[derive(Debug, Clone, Serialize, serde::Deserialize, PartialEq, Eq)]
pub struct StatsSnapshot {
    /// Cache hits.
    pub hits: u64,
    /// Cache misses.
    pub misses: u64,
    /// KMS calls.
    pub kms_calls: u64,
    /// KMS failures.
    pub kms_failures: u64,
    /// Integrity failures.
    pub integrity_failures: u64,
    /// DEKs generated.
    pub deks_generated: u64,
    /// Entries evicted by capacity.
    pub evictions: u64,
    /// Entries expired by age.
    pub expirations: u64,
    /// Entries in the cache now.
    pub cached_deks: u64,
    /// Cache capacity.
    pub capacity: u64,
    /// Maximum age of a cached DEK, seconds.
    pub max_age_secs: u64,
}

struct Entry {
    dek: Arc<Dek>,
    expires: Instant,
}

type Flight = Arc<(Mutex<Option<Result<Arc<Dek>, String>>>, Condvar)>;

/// The cache.
pub struct DekCache {
    lru: Mutex<LruCache<[u8; 32], Entry>>,
    inflight: Mutex<HashMap<[u8; 32], Flight>>,
    max_age: Duration,
    capacity: usize,
    /// The counters.
    pub counters: Counters,
}

impl fmt::Debug for DekCache {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DekCache")
            .field("capacity", &self.capacity)
            .field("max_age", &self.max_age)
            .finish_non_exhaustive()
    }
}

/// Cache key of a wrapped DEK.
pub fn blob_key(blob: &[u8]) -> [u8; 32] {
    aead::sha256(blob)
}

fn jittered(max_age: Duration) -> Duration {
    // Up to 10 % earlier, so entries unwrapped together do not all expire together.
    let mut b = [0u8; 2];
    let _ = aead::random(&mut b);
    let frac = u16::from_le_bytes(b) as f64 / u16::MAX as f64;
    max_age.mul_f64(1.0 - 0.1 * frac)
}

impl DekCache {
    /// A cache of `capacity` entries (≥ 1) whose entries live at most `max_age`.
    pub fn new(capacity: usize, max_age: Duration) -> Self {
        let cap = NonZeroUsize::new(capacity.max(1)).unwrap_or(NonZeroUsize::MIN);
        DekCache {
            lru: Mutex::new(LruCache::new(cap)),
            inflight: Mutex::new(HashMap::new()),
            max_age,
            capacity: cap.get(),
            counters: Counters::default(),
        }
    }

    /// The maximum age of an entry.
    pub fn max_age(&self) -> Duration {
        self.max_age
    }

    /// Puts a DEK we just generated into the cache (no KMS call needed to read it back).
    pub fn insert(&self, blob: &[u8], dek: Arc<Dek>) {
        let e = Entry {
            dek,
            expires: Instant::now() + jittered(self.max_age),
        };
        let k = blob_key(blob);
        if let Some((old, _)) = self.lru.lock().push(k, e) {
            if old != k {
                self.counters.evictions.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    fn lookup(&self, k: &[u8; 32]) -> Option<Arc<Dek>> {
        let mut lru = self.lru.lock();
        match lru.get(k) {
            Some(e) if e.expires > Instant::now() => Some(e.dek.clone()),
            Some(_) => {
                lru.pop(k); // expired: the Arc drops, the DEK is zeroized when unused
                self.counters.expirations.fetch_add(1, Ordering::Relaxed);
                None
            }
            None => None,
        }
    }

    /// The DEK of `blob`: from the cache, else from `unwrap` (a KMS Decrypt). Concurrent
    /// misses for one blob wait for a single `unwrap` call.
    pub fn get_or_unwrap<F>(&self, blob: &[u8], unwrap: F) -> FsResult<Arc<Dek>>
    where
        F: FnOnce(&[u8]) -> FsResult<Zeroizing<Vec<u8>>>,
    {
        let k = blob_key(blob);
        if let Some(d) = self.lookup(&k) {
            self.counters.hits.fetch_add(1, Ordering::Relaxed);
            return Ok(d);
        }
        self.counters.misses.fetch_add(1, Ordering::Relaxed);
        let (flight, leader) = {
            let mut inflight = self.inflight.lock();
            // Re-check under the in-flight lock: a leader may have just finished.
            if let Some(d) = self.lookup(&k) {
                return Ok(d);
            }
            match inflight.get(&k) {
                Some(f) => (f.clone(), false),
                None => {
                    let f: Flight = Arc::new((Mutex::new(None), Condvar::new()));
                    inflight.insert(k, f.clone());
                    (f, true)
                }
            }
        };
        if !leader {
            let mut done = flight.0.lock();
            while done.is_none() {
                flight.1.wait(&mut done);
            }
            return match done.as_ref() {
                Some(Ok(d)) => Ok(d.clone()),
                Some(Err(m)) => Err(FsError::Integrity(format!("shared KMS call failed: {m}"))),
                None => Err(FsError::Errno(libc::EIO)),
            };
        }
        self.counters.kms_calls.fetch_add(1, Ordering::Relaxed);
        let r = unwrap(blob).map(|p| Arc::new(Dek::new(p)));
        if r.is_err() {
            self.counters.kms_failures.fetch_add(1, Ordering::Relaxed);
        }
        if let Ok(d) = &r {
            self.insert(blob, d.clone());
        }
        {
            let mut done = flight.0.lock();
            *done = Some(match &r {
                Ok(d) => Ok(d.clone()),
                Err(e) => Err(e.to_string()),
            });
            flight.1.notify_all();
        }
        self.inflight.lock().remove(&k);
        r
    }

    /// A copy of the counters.
    pub fn snapshot(&self) -> StatsSnapshot {
        let c = &self.counters;
        StatsSnapshot {
            hits: c.hits.load(Ordering::Relaxed),
            misses: c.misses.load(Ordering::Relaxed),
            kms_calls: c.kms_calls.load(Ordering::Relaxed),
            kms_failures: c.kms_failures.load(Ordering::Relaxed),
            integrity_failures: c.integrity_failures.load(Ordering::Relaxed),
            deks_generated: c.deks_generated.load(Ordering::Relaxed),
            evictions: c.evictions.load(Ordering::Relaxed),
            expirations: c.expirations.load(Ordering::Relaxed),
            cached_deks: self.lru.lock().len() as u64,
            capacity: self.capacity as u64,
            max_age_secs: self.max_age.as_secs(),
        }
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicUsize;

    #[test]
    fn hit_miss_expiry_and_capacity() {
        let c = DekCache::new(2, Duration::from_millis(300));
        let calls = AtomicUsize::new(0);
        let unwrap = |b: &[u8]| {
            calls.fetch_add(1, Ordering::SeqCst);
            Ok(Zeroizing::new(b.to_vec()))
        };
        assert_eq!(c.get_or_unwrap(b"a", unwrap).unwrap().expose(), b"a");
        assert_eq!(c.get_or_unwrap(b"a", unwrap).unwrap().expose(), b"a");
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        c.get_or_unwrap(b"b", unwrap).unwrap();
        c.get_or_unwrap(b"c", unwrap).unwrap(); // evicts a
        c.get_or_unwrap(b"a", unwrap).unwrap();
        assert_eq!(calls.load(Ordering::SeqCst), 4);
        std::thread::sleep(Duration::from_millis(350));
        c.get_or_unwrap(b"a", unwrap).unwrap(); // expired
        assert_eq!(calls.load(Ordering::SeqCst), 5);
        let s = c.snapshot();
        assert_eq!((s.hits, s.misses, s.kms_calls), (1, 5, 5));
        // c evicted a, a evicted b; then a expired.
        assert_eq!((s.evictions, s.expirations), (2, 1));
    }

    #[test]
    fn concurrent_misses_share_one_call() {
        let c = Arc::new(DekCache::new(8, Duration::from_secs(60)));
        let calls = Arc::new(AtomicUsize::new(0));
        let ts: Vec<_> = (0..8)
            .map(|_| {
                let (c, calls) = (c.clone(), calls.clone());
                std::thread::spawn(move || {
                    c.get_or_unwrap(b"blob", |b| {
                        calls.fetch_add(1, Ordering::SeqCst);
                        std::thread::sleep(Duration::from_millis(200));
                        Ok(Zeroizing::new(b.to_vec()))
                    })
                    .unwrap()
                })
            })
            .collect();
        for t in ts {
            assert_eq!(t.join().unwrap().expose(), b"blob");
        }
        assert_eq!(calls.load(Ordering::SeqCst), 1);
    }

    #[test]
    fn failures_are_counted_and_not_cached() {
        let c = DekCache::new(8, Duration::from_secs(60));
        assert!(c
            .get_or_unwrap(b"x", |_| Err(FsError::Errno(libc::EIO)))
            .is_err());
        assert!(c
            .get_or_unwrap(b"x", |b| Ok(Zeroizing::new(b.to_vec())))
            .is_ok());
        let s = c.snapshot();
        assert_eq!((s.kms_calls, s.kms_failures), (2, 1));
        assert_eq!(
            format!("{:?}", Dek::new(Zeroizing::new(vec![0xAB; 32]))),
            "Dek { .. }"
        );
    }
}
