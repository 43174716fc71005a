//! The cache of successful verifications, and the keyed digest that names a set of credentials.
//!
//! bcrypt at cost 10 costs ~90 ms of a core; re-hashing on every request (as nginx does) caps a
//! server at ~11 requests/s per core. Remembering that "these credentials matched this stored
//! hash" for a while removes the cost for legitimate users. Failures are never remembered: a
//! cached "no" would let a guesser probe for free and would lock out a user who fixes a typo.

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hash, Hasher};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use hmac::{Hmac, Mac};
use sha2::Sha256;

/// HMAC-SHA256 digest of (user, password, stored hash).
///
/// It exists so that nothing derived from a password without a secret is ever kept: the key is
/// random per process, so a memory dump of the cache does not help offline guessing, and the
/// stored hash inside it makes a changed password line invalidate old entries by itself.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) struct CredentialKey([u8; 32]);

/// A MAC under a secret no client knows is already a hash no client can aim at: its first eight
/// bytes serve as the map's hash, with no second (SipHash) pass over all 32 on every request.
impl Hash for CredentialKey {
    fn hash<H: Hasher>(&self, state: &mut H) {
        let [a, b, c, d, e, f, g, h, ..] = self.0;
        state.write_u64(u64::from_ne_bytes([a, b, c, d, e, f, g, h]));
    }
}

/// Takes the one word [`CredentialKey`] hashes to as the hash.
#[derive(Default)]
pub(crate) struct KeyHasher(u64);

impl Hasher for KeyHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        // Only reached by other key types; mixes every byte in all the same.
        for b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(*b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 ^= n;
    }
}

/// A map keyed by [`CredentialKey`]s.
pub(crate) type KeyMap<V> = HashMap<CredentialKey, V, BuildHasherDefault<KeyHasher>>;

/// Computes [`CredentialKey`]s with this process's secret.
pub(crate) struct CredentialKeyer {
    /// The MAC with the secret already absorbed: each key starts from a copy of it, which saves
    /// hashing the padded secret twice per request.
    keyed: Hmac<Sha256>,
}

impl CredentialKeyer {
    /// A keyer with a fresh random secret.
    pub(crate) fn random() -> CredentialKeyer {
        let secret: [u8; 32] = rand::random();
        let Ok(keyed) = Hmac::<Sha256>::new_from_slice(&secret) else {
            unreachable!("HMAC takes keys of any length");
        };
        CredentialKeyer { keyed }
    }

    /// Length-prefixed, so that no two different triples feed the same bytes to the MAC.
    pub(crate) fn key(&self, user: &str, password: &[u8], stored_hash: &str) -> CredentialKey {
        let mut mac = self.keyed.clone();
        for part in [user.as_bytes(), password, stored_hash.as_bytes()] {
            mac.update(&(part.len() as u64).to_be_bytes());
            mac.update(part);
        }
        CredentialKey(mac.finalize().into_bytes().into())
    }
}

/// Successful verifications, bounded in number and age.
///
/// Entries expire `ttl` after they were made (a hit does not extend them), so even a credential
/// that keeps being used is re-verified against the file now and then. When full, expired
/// entries go first, then the oldest.
pub(crate) struct SuccessCache {
    capacity: usize,
    ttl: Duration,
    entries: Mutex<KeyMap<Instant>>,
}

impl SuccessCache {
    pub(crate) fn new(capacity: usize, ttl: Duration) -> SuccessCache {
        SuccessCache {
            capacity,
            ttl,
            entries: Mutex::new(KeyMap::default()),
        }
    }

    /// Whether `key` was verified less than `ttl` ago.
    pub(crate) fn contains(&self, key: &CredentialKey, now: Instant) -> bool {
        self.expiry(key, now).is_some()
    }

    /// When the entry for `key` expires, if it has not yet.
    pub(crate) fn expiry(&self, key: &CredentialKey, now: Instant) -> Option<Instant> {
        let mut entries = lock(&self.entries);
        match entries.get(key) {
            Some(made) if now.saturating_duration_since(*made) < self.ttl => Some(*made + self.ttl),
            Some(_) => {
                entries.remove(key);
                None
            }
            None => None,
        }
    }

    /// Whether successes are remembered at all.
    pub(crate) fn enabled(&self) -> bool {
        self.capacity > 0 && !self.ttl.is_zero()
    }

    /// How long a success is remembered.
    pub(crate) fn ttl(&self) -> Duration {
        self.ttl
    }

    /// Records a successful verification made at `now`.
    pub(crate) fn insert(&self, key: CredentialKey, now: Instant) {
        if !self.enabled() {
            return;
        }
        let mut entries = lock(&self.entries);
        if entries.len() >= self.capacity && !entries.contains_key(&key) {
            let ttl = self.ttl;
            entries.retain(|_, made| now.saturating_duration_since(*made) < ttl);
            if entries.len() >= self.capacity {
                let oldest = entries
                    .iter()
                    .min_by_key(|(_, made)| **made)
                    .map(|(k, _)| *k);
                if let Some(oldest) = oldest {
                    entries.remove(&oldest);
                }
            }
        }
        entries.insert(key, now);
    }

    /// Forgets everything (e.g. after a user was removed on purpose).
    pub(crate) fn clear(&self) {
        lock(&self.entries).clear();
    }

    pub(crate) fn len(&self) -> usize {
        lock(&self.entries).len()
    }
}

/// Locks a mutex, carrying on through poisoning: the maps stay consistent at every step, so a
/// panic elsewhere while holding the lock cannot leave them half-updated.
pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_depend_on_every_part_and_on_the_secret() {
        let k = CredentialKeyer::random();
        let base = k.key("alice", b"pw", "$hash");
        assert!(base == k.key("alice", b"pw", "$hash"));
        assert!(base != k.key("alicf", b"pw", "$hash"));
        assert!(base != k.key("alice", b"pX", "$hash"));
        assert!(base != k.key("alice", b"pw", "$hasH"));
        // Length prefixes: moving a byte across a boundary changes the key.
        assert!(k.key("ab", b"c", "h") != k.key("a", b"bc", "h"));
        assert!(base != CredentialKeyer::random().key("alice", b"pw", "$hash"));
    }

    #[test]
    fn keys_hash_to_their_first_word() {
        let key = CredentialKeyer::random().key("a", b"b", "c");
        let mut hasher = KeyHasher::default();
        key.hash(&mut hasher);
        assert_eq!(hasher.finish().to_ne_bytes(), key.0[..8]);
        let other = CredentialKeyer::random().key("a", b"b", "c");
        let mut hasher = KeyHasher::default();
        other.hash(&mut hasher);
        assert_ne!(hasher.finish().to_ne_bytes(), key.0[..8]);
    }

    #[test]
    fn entries_expire() {
        let cache = SuccessCache::new(10, Duration::from_secs(60));
        let k = CredentialKeyer::random().key("a", b"b", "c");
        let t0 = Instant::now();
        cache.insert(k, t0);
        assert!(cache.contains(&k, t0 + Duration::from_secs(59)));
        assert!(!cache.contains(&k, t0 + Duration::from_secs(60)));
        assert_eq!(cache.len(), 0);
    }

    #[test]
    fn full_cache_evicts_the_oldest() {
        let keyer = CredentialKeyer::random();
        let cache = SuccessCache::new(3, Duration::from_secs(60));
        let t0 = Instant::now();
        let keys: Vec<_> = (0..4).map(|i| keyer.key(&i.to_string(), b"", "")).collect();
        for (i, k) in keys.iter().enumerate() {
            cache.insert(*k, t0 + Duration::from_secs(i as u64));
        }
        let now = t0 + Duration::from_secs(5);
        assert_eq!(cache.len(), 3);
        assert!(!cache.contains(&keys[0], now));
        assert!(keys[1..].iter().all(|k| cache.contains(k, now)));
    }

    #[test]
    fn zero_capacity_disables_caching() {
        let cache = SuccessCache::new(0, Duration::from_secs(60));
        let k = CredentialKeyer::random().key("a", b"b", "c");
        cache.insert(k, Instant::now());
        assert!(!cache.contains(&k, Instant::now()));
    }
}
