//! The table of client buckets behind one rate-limit rule: governor's GCRA
//! state (one `u64`, the theoretical arrival time) per client, at most
//! `cap` clients.
//!
//! Laid out for the decision at 1M live keys, where the table is far larger
//! than the caches: each slot holds the client's address and its state
//! inline (24 bytes), so a decision for a known client touches one slot,
//! usually one cache line, and updates the state with one compare-and-swap
//! under a shared lock. The table is split into [`SHARDS`] open-addressing
//! (linear probing) shards, each behind its own `RwLock`: deciding for a
//! known client takes the shard's read lock; adding a client, growing a
//! shard and sweeping take the write lock.
//!
//! Approximations, and their bounds:
//! - When the table is full, clients not already in it share one overflow
//!   bucket (with the rule's own quota) until the sweeper frees room, so a
//!   flood of new addresses is limited as one client and never grows the
//!   table. Each such decision is counted.
//! - Memory: a shard doubles when it would pass 3/4 full, and the sweeper
//!   rebuilds a shard at the smallest size at most half full, so a live key
//!   costs 32 to 64 bytes of slots (24 / load factor), plus 4 KiB per table.
//! - While the sweeper rebuilds a shard (a copy of its live slots: 0.35 ms
//!   for a shard of 16k clients dropping half, 22 ms for a 1M-client table,
//!   one shard at a time), decisions for that shard's clients wait. A sweep
//!   that drops nothing only scans: 1.8 ms for 1M clients.

use std::hash::BuildHasher;
use std::num::NonZeroU64;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, PoisonError, RwLock};

use governor::nanos::Nanos;
use governor::state::keyed::ShrinkableKeyedStateStore;
use governor::state::StateStore;

use crate::client::ClientKey;

/// Keyed per process with a random seed, so an attacker who picks client
/// addresses cannot aim them at one shard or probe run; several times
/// faster than the default SipHash on 16-byte keys.
type KeyHasher = foldhash::quality::RandomState;

/// Shards per table. Enough that two or four worker threads rarely meet on
/// one lock, few enough that the lock words stay in cache (4 KiB).
pub const SHARDS: usize = 64;
const SHARD_BITS: u32 = SHARDS.trailing_zeros();
/// A shard's size when its first client arrives.
const MIN_SLOTS: usize = 8;

/// One client: its address as 128 bits (IPv4 as `::ffff:a.b.c.d`) and its
/// theoretical arrival time, 0 while the slot is empty (governor never
/// stores 0: a stored time is at least one replenish interval).
#[derive(Default)]
struct Slot {
    key_hi: u64,
    key_lo: u64,
    tat: AtomicU64,
}

impl Slot {
    fn holds(&self, key: u128) -> bool {
        self.key_hi == (key >> 64) as u64 && self.key_lo == key as u64
    }
}

#[derive(Default)]
struct Shard {
    /// A power of two in length, or empty before the first client.
    slots: Box<[Slot]>,
    live: usize,
}

impl Shard {
    /// The slot holding `key`, if any.
    fn find(&self, key: u128, hash: u64) -> Option<&Slot> {
        let mask = self.slots.len().checked_sub(1)?;
        let mut i = hash as usize & mask;
        loop {
            let slot = &self.slots[i];
            if slot.tat.load(Ordering::Acquire) == 0 {
                return None;
            }
            if slot.holds(key) {
                return Some(slot);
            }
            i = (i + 1) & mask;
        }
    }

    /// Put a client the shard does not hold into an empty slot; the caller
    /// has made room.
    fn place(slots: &mut [Slot], key: u128, hash: u64, tat: u64) {
        let mask = slots.len() - 1;
        let mut i = hash as usize & mask;
        while *slots[i].tat.get_mut() != 0 {
            i = (i + 1) & mask;
        }
        let slot = &mut slots[i];
        slot.key_hi = (key >> 64) as u64;
        slot.key_lo = key as u64;
        *slot.tat.get_mut() = tat;
    }

    /// Move every client whose state `keep` accepts into a new slot array
    /// of `len` slots; returns how many were dropped.
    fn rebuild(&mut self, len: usize, hasher: &KeyHasher, keep: impl Fn(u64) -> bool) -> usize {
        let mut slots: Box<[Slot]> = (0..len).map(|_| Slot::default()).collect();
        let mut kept = 0;
        for old in self.slots.iter_mut() {
            let tat = *old.tat.get_mut();
            if tat != 0 && keep(tat) {
                let key = (u128::from(old.key_hi) << 64) | u128::from(old.key_lo);
                Self::place(&mut slots, key, hasher.hash_one(key), tat);
                kept += 1;
            }
        }
        let dropped = self.live - kept;
        self.slots = slots;
        self.live = kept;
        dropped
    }
}

/// A shard and where its slots are, padded so that two shards' locks never
/// share a cache line.
#[repr(align(64))]
#[derive(Default)]
struct PaddedShard {
    lock: RwLock<Shard>,
    /// The slot array's address and length - 1, published under the write
    /// lock for [`Prefetcher`], which reads them without it: a stale pair
    /// only makes a prefetch miss, and a prefetch never faults.
    base: AtomicUsize,
    mask: AtomicUsize,
}

impl PaddedShard {
    fn publish(&self, shard: &Shard) {
        // 0 (nothing to prefetch) for an emptied shard, whose pointer is dangling.
        let base = if shard.slots.is_empty() {
            0
        } else {
            shard.slots.as_ptr() as usize
        };
        self.base.store(base, Ordering::Relaxed);
        self.mask
            .store(shard.slots.len().saturating_sub(1), Ordering::Relaxed);
    }
}

/// Starts loading a client's slot into the cache ahead of its decision.
///
/// At 1M live clients the table is far larger than the caches and a
/// decision waits ~180 ns for its slot (docs/performance-history.md); the gateway
/// calls [`Prefetcher::prefetch`] as soon as it knows the client's address
/// and decides after its other request work, which hides that wait.
#[derive(Clone)]
pub struct Prefetcher {
    shards: Arc<[PaddedShard]>,
    hasher: KeyHasher,
}

impl Prefetcher {
    pub fn prefetch(&self, key: &ClientKey) {
        let hash = self.hasher.hash_one(slot_key(key));
        let shard = shard_of(&self.shards, hash);
        let base = shard.base.load(Ordering::Relaxed);
        if base == 0 {
            return;
        }
        let i = hash as usize & shard.mask.load(Ordering::Relaxed);
        let addr = base.wrapping_add(i.wrapping_mul(std::mem::size_of::<Slot>()));
        prefetch_line(addr);
    }
}

/// A hint to the CPU; any address is fine (no fault, no read of memory
/// in the language's sense).
#[inline(always)]
#[allow(unsafe_code)]
fn prefetch_line(addr: usize) {
    #[cfg(target_arch = "x86_64")]
    // SAFETY: PREFETCHT0 is part of SSE, which every x86_64 CPU has, and
    // it neither faults nor reads memory in Rust's sense.
    unsafe {
        use std::arch::x86_64::{_mm_prefetch, _MM_HINT_T0};
        _mm_prefetch::<_MM_HINT_T0>(addr as *const i8);
    }
    #[cfg(not(target_arch = "x86_64"))]
    let _ = addr;
}

/// governor's [`StateStore`] for one rule: see the module docs.
pub struct BucketTable {
    shards: Arc<[PaddedShard]>,
    hasher: KeyHasher,
    cap: usize,
    /// Clients in the table, across shards.
    live: AtomicUsize,
    /// The bucket that clients share while the table is full.
    overflow_tat: AtomicU64,
    /// Decisions made on the overflow bucket; shared with the limiter's
    /// metrics (governor does not hand its store back out).
    overflow_total: Arc<AtomicU64>,
}

impl std::fmt::Debug for BucketTable {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BucketTable")
            .field("cap", &self.cap)
            .field("live", &self.live)
            .finish_non_exhaustive()
    }
}

/// The 128-bit form a slot stores.
fn slot_key(key: &ClientKey) -> u128 {
    match key {
        ClientKey::V4(octets) => (0xffff << 32) | u128::from(u32::from_be_bytes(*octets)),
        ClientKey::V6(octets) | ClientKey::Hashed(octets) => u128::from_be_bytes(*octets),
    }
}

/// The shard that holds a key with this hash: the hash's top bits (the
/// slot within it comes from the low bits).
fn shard_of(shards: &[PaddedShard], hash: u64) -> &PaddedShard {
    &shards[(hash >> (64 - SHARD_BITS)) as usize]
}

/// governor's update: read the state, let `f` decide, and store its new
/// state unless another thread changed it meanwhile (then decide again).
/// A denial stores nothing.
fn measure_and_replace_tat<T, E>(
    tat: &AtomicU64,
    f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
) -> Result<T, E> {
    let mut prev = tat.load(Ordering::Acquire);
    loop {
        let (result, next) = f(NonZeroU64::new(prev).map(|n| Nanos::from(n.get())))?;
        match tat.compare_exchange_weak(prev, next.into(), Ordering::AcqRel, Ordering::Acquire) {
            Ok(_) => return Ok(result),
            Err(current) => prev = current,
        }
    }
}

impl BucketTable {
    pub fn new(cap: usize, overflow_total: Arc<AtomicU64>) -> Self {
        BucketTable {
            shards: (0..SHARDS).map(|_| PaddedShard::default()).collect(),
            hasher: KeyHasher::default(),
            cap: cap.max(1),
            live: AtomicUsize::new(0),
            overflow_tat: AtomicU64::new(0),
            overflow_total,
        }
    }

    /// A handle that prefetches clients' slots; see [`Prefetcher`].
    pub fn prefetcher(&self) -> Prefetcher {
        Prefetcher {
            shards: self.shards.clone(),
            hasher: self.hasher.clone(),
        }
    }

    fn on_overflow<T, E>(
        &self,
        f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    ) -> Result<T, E> {
        self.overflow_total.fetch_add(1, Ordering::Relaxed);
        measure_and_replace_tat(&self.overflow_tat, f)
    }

    /// A client not in the table: add it if there is room.
    fn insert<T, E>(
        &self,
        key: u128,
        hash: u64,
        f: impl Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    ) -> Result<T, E> {
        let padded = shard_of(&self.shards, hash);
        let mut shard = padded.lock.write().unwrap_or_else(PoisonError::into_inner);
        // Another thread may have added it since the read lock was let go.
        if let Some(slot) = shard.find(key, hash) {
            return measure_and_replace_tat(&slot.tat, f);
        }
        if self.live.fetch_add(1, Ordering::Relaxed) >= self.cap {
            self.live.fetch_sub(1, Ordering::Relaxed);
            drop(shard);
            return self.on_overflow(f);
        }
        // A first decision is never a denial (the burst is at least 1), but
        // if it were, nothing would be stored.
        let (result, tat) = match f(None) {
            Ok(decided) => decided,
            Err(e) => {
                self.live.fetch_sub(1, Ordering::Relaxed);
                return Err(e);
            }
        };
        if (shard.live + 1) * 4 > shard.slots.len() * 3 {
            let len = (shard.slots.len() * 2).max(MIN_SLOTS);
            shard.rebuild(len, &self.hasher, |_| true);
            padded.publish(&shard);
        }
        Shard::place(&mut shard.slots, key, hash, tat.into());
        shard.live += 1;
        Ok(result)
    }
}

impl StateStore for BucketTable {
    type Key = ClientKey;

    fn measure_and_replace<T, F, E>(&self, key: &ClientKey, f: F) -> Result<T, E>
    where
        F: Fn(Option<Nanos>) -> Result<(T, Nanos), E>,
    {
        let key = slot_key(key);
        let hash = self.hasher.hash_one(key);
        {
            let shard = shard_of(&self.shards, hash)
                .lock
                .read()
                .unwrap_or_else(PoisonError::into_inner);
            if let Some(slot) = shard.find(key, hash) {
                return measure_and_replace_tat(&slot.tat, f);
            }
        }
        if self.live.load(Ordering::Relaxed) >= self.cap {
            return self.on_overflow(f);
        }
        self.insert(key, hash, f)
    }
}

impl ShrinkableKeyedStateStore<ClientKey> for BucketTable {
    /// Drop clients whose theoretical arrival time is at or before
    /// `drop_below` (their bucket is full again: they are indistinguishable
    /// from a new client), and size each shard to at most half full.
    fn retain_recent(&self, drop_below: Nanos) {
        let drop_below = u64::from(drop_below);
        for padded in self.shards.iter() {
            let mut shard = padded.lock.write().unwrap_or_else(PoisonError::into_inner);
            let stale = shard.slots.iter().filter(|s| {
                let tat = s.tat.load(Ordering::Relaxed);
                tat != 0 && tat <= drop_below
            });
            let remaining = shard.live - stale.count();
            let len = if remaining == 0 {
                0
            } else {
                (remaining * 2).next_power_of_two().max(MIN_SLOTS)
            };
            if len == shard.slots.len() && remaining == shard.live {
                continue;
            }
            let dropped = shard.rebuild(len, &self.hasher, |tat| tat > drop_below);
            padded.publish(&shard);
            self.live.fetch_sub(dropped, Ordering::Relaxed);
        }
        let overflow = self.overflow_tat.load(Ordering::Relaxed);
        if overflow <= drop_below {
            // Full again; compare_exchange so a decision made meanwhile stays.
            let _ = self.overflow_tat.compare_exchange(
                overflow,
                0,
                Ordering::Relaxed,
                Ordering::Relaxed,
            );
        }
    }

    fn len(&self) -> usize {
        self.live.load(Ordering::Relaxed)
    }

    fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// governor's GCRA as `f`: one token per `t` ns, `burst` at most.
    fn take(table: &BucketTable, key: &ClientKey, now: u64, t: u64, burst: u64) -> Result<(), ()> {
        table.measure_and_replace(key, |tat| {
            let tat = tat.map_or(now, u64::from);
            let next = tat.max(now) + t;
            if next > now + t * burst {
                Err(())
            } else {
                Ok(((), Nanos::from(next)))
            }
        })
    }

    fn v4(i: u32) -> ClientKey {
        ClientKey::V4(i.to_be_bytes())
    }

    #[test]
    fn each_client_has_its_own_bucket_across_growth() {
        let table = BucketTable::new(100_000, Arc::default());
        for i in 0..20_000 {
            assert_eq!(take(&table, &v4(i), 1, 10, 2), Ok(()));
        }
        assert_eq!(table.len(), 20_000);
        // Each still has exactly one more token.
        for i in 0..20_000 {
            assert_eq!(take(&table, &v4(i), 1, 10, 2), Ok(()), "client {i}");
            assert_eq!(take(&table, &v4(i), 1, 10, 2), Err(()), "client {i}");
        }
        let v6 = ClientKey::V6([0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0]);
        let mapped = ClientKey::V6(slot_key(&v4(7)).to_be_bytes());
        assert_eq!(take(&table, &v6, 1, 10, 2), Ok(()), "a new client");
        assert_eq!(
            take(&table, &mapped, 1, 10, 2),
            Err(()),
            "the same as 0.0.0.7"
        );
    }

    #[test]
    fn a_full_table_sends_new_clients_to_the_overflow_bucket() {
        let overflow = Arc::new(AtomicU64::new(0));
        let table = BucketTable::new(10, overflow.clone());
        for i in 0..10 {
            assert_eq!(take(&table, &v4(i), 1, 10, 1), Ok(()));
        }
        assert_eq!(take(&table, &v4(100), 1, 10, 1), Ok(()), "first overflow");
        assert_eq!(take(&table, &v4(101), 1, 10, 1), Err(()), "shares it");
        assert_eq!(table.len(), 10);
        assert_eq!(overflow.load(Ordering::Relaxed), 2);
        assert_eq!(
            take(&table, &v4(3), 1, 10, 1),
            Err(()),
            "known clients keep theirs"
        );
    }

    #[test]
    fn sweeping_drops_full_buckets_and_shrinks() {
        let table = BucketTable::new(100_000, Arc::default());
        for i in 0..10_000 {
            // Even clients at time 1, odd ones at time 1000.
            let now = if i % 2 == 0 { 1 } else { 1000 };
            take(&table, &v4(i), now, 10, 5).unwrap();
        }
        table.retain_recent(Nanos::from(500));
        assert_eq!(table.len(), 5_000);
        let slots: usize = table
            .shards
            .iter()
            .map(|s| s.lock.read().unwrap().slots.len())
            .sum();
        assert!(slots <= 4 * 5_000, "{slots} slots for 5000 clients");
        for i in (1..10_000).step_by(2) {
            // Kept their state: 4 tokens left of 5.
            for _ in 0..4 {
                take(&table, &v4(i), 1000, 10, 5).unwrap();
            }
            assert_eq!(take(&table, &v4(i), 1000, 10, 5), Err(()), "client {i}");
        }
        table.retain_recent(Nanos::from(u64::MAX));
        assert!(table.is_empty());
        assert!(table
            .shards
            .iter()
            .all(|s| s.lock.read().unwrap().slots.is_empty()));
    }

    #[test]
    fn concurrent_decisions_lose_no_token() {
        let table = BucketTable::new(1_000, Arc::default());
        let allowed = AtomicU64::new(0);
        std::thread::scope(|s| {
            for _ in 0..4 {
                s.spawn(|| {
                    for _ in 0..1_000 {
                        for i in 0..50 {
                            if take(&table, &v4(i), 1, 10, 100).is_ok() {
                                allowed.fetch_add(1, Ordering::Relaxed);
                            }
                        }
                    }
                });
            }
        });
        assert_eq!(
            allowed.into_inner(),
            50 * 100,
            "exactly each client's burst"
        );
        assert_eq!(table.len(), 50);
    }
}
