//! The Basic-auth verifier the gateway asks on every request: fast for legitimate users, cheap
//! to refuse under attack.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime};

use arc_swap::{ArcSwap, Guard};
use http::HeaderValue;
use tokio::sync::{watch, OwnedSemaphorePermit, Semaphore};

use super::basic::BasicCredentials;
use super::cache::{lock, CredentialKey, CredentialKeyer, KeyMap, SuccessCache};
use super::hash::StoredHash;
use super::htpasswd::{self, LineProblem, LoadError, User, UserTable};
use super::limiter::FailureLimiter;

/// The knobs of [`Authenticator`]. `Default` gives the production values.
#[derive(Debug, Clone)]
pub struct AuthSettings {
    /// Accept plaintext passwords in the htpasswd file (`htpasswd -p`). Off by default.
    pub allow_plaintext: bool,
    /// How many successful verifications are remembered (0 disables the cache).
    pub cache_capacity: usize,
    /// How long one is remembered.
    pub cache_ttl: Duration,
    /// Hash computations allowed at once; more are answered `Busy`. Default: the number of CPUs.
    pub max_concurrent_hashes: usize,
    /// What `Busy` tells the client to wait.
    pub busy_retry_after: Duration,
    /// Failures per address within `failure_window` before it is `Limited` (0 disables).
    pub max_failures: u32,
    pub failure_window: Duration,
    /// How many addresses the limiter tracks.
    pub limiter_capacity: usize,
}

impl Default for AuthSettings {
    fn default() -> AuthSettings {
        AuthSettings {
            allow_plaintext: false,
            cache_capacity: 1024,
            cache_ttl: Duration::from_secs(600),
            max_concurrent_hashes: std::thread::available_parallelism().map_or(1, |n| n.get()),
            busy_retry_after: Duration::from_secs(1),
            max_failures: 10,
            failure_window: Duration::from_secs(60),
            limiter_capacity: 4096,
        }
    }
}

/// The answer to "may these credentials in?".
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    /// Yes, as `user`.
    Granted { user: User },
    /// No (or no credentials at all): answer 401 with [`challenge_header`](super::challenge_header).
    Denied,
    /// Too many failures from this address: answer 429 with `Retry-After`.
    Limited { retry_after: Duration },
    /// Every hashing slot is taken: answer 503 with `Retry-After`.
    Busy { retry_after: Duration },
}

/// The grant one client connection last got, for the `Authorization` value it came with.
///
/// A browser or an API client sends the same value with every request on a keep-alive
/// connection. Found here again, under the same user table and before the success cache's entry
/// for it expires, it is granted without being decoded or keyed again: what the cache would
/// answer, for less. A connection keeps its own, so it only ever holds what that connection
/// itself sent and was granted; another value (a wrong password, another user on a shared proxy
/// connection) takes the full way, and replaces it only if it is granted itself.
#[derive(Default)]
pub struct GrantMemo {
    last: Option<Grant>,
}

struct Grant {
    /// The `Authorization` value, byte for byte.
    authorization: Vec<u8>,
    /// The table it was granted under: held, so that no later table can be taken for it.
    table: Arc<UserTable>,
    user: User,
    /// When the success cache's entry for it expires.
    expiry: Instant,
}

impl GrantMemo {
    /// The user granted for `authorization` under `table`, if that grant still holds.
    fn recall(&self, authorization: &[u8], table: &Arc<UserTable>) -> Option<User> {
        let last = self.last.as_ref()?;
        (last.authorization == authorization
            && Arc::ptr_eq(&last.table, table)
            && Instant::now() < last.expiry)
            .then(|| last.user.clone())
    }

    fn remember(
        &mut self,
        authorization: &[u8],
        table: Arc<UserTable>,
        user: User,
        expiry: Instant,
    ) {
        self.last = Some(Grant {
            authorization: authorization.to_vec(),
            table,
            user,
            expiry,
        });
    }
}

/// What a reload did.
#[derive(Debug)]
pub struct ReloadReport {
    /// Users in the new table.
    pub users: usize,
    /// Lines that were skipped.
    pub problems: Vec<LineProblem>,
}

/// Checks HTTP Basic credentials against an htpasswd user table.
///
/// It exists because the obvious way (hash on every request, as nginx does) makes every request
/// cost ~90 ms of a core and lets a wrong-password flood take the CPU. Here:
/// - successful verifications are cached (see `SuccessCache`), so a known user costs no hash;
/// - hashing runs on the blocking pool behind a semaphore sized to the machine, and a full
///   semaphore answers `Busy` at once instead of queueing without bound;
/// - identical concurrent checks share one computation (a page load fires dozens of requests
///   before the first is cached), keyed like the cache so sharing reveals nothing;
/// - an unknown user is verified against a dummy hash of the table's usual scheme and cost, so
///   timing does not tell which users exist;
/// - failures are limited per client address, but a cached success still gets in, so a user
///   behind the same address as an attacker keeps working.
///
/// The table sits in an `ArcSwap`: a reload replaces it at once for new checks, and a failed
/// reload leaves it as it was.
pub struct Authenticator {
    settings: AuthSettings,
    table: ArcSwap<UserTable>,
    shared: Arc<Shared>,
    limiter: FailureLimiter,
    /// File identity of the last successful load, for the mtime watcher.
    loaded_stamp: Mutex<Option<FileStamp>>,
}

/// What the blocking hash jobs need after the caller may have gone away.
struct Shared {
    keyer: CredentialKeyer,
    cache: SuccessCache,
    hash_slots: Arc<Semaphore>,
    slots_total: usize,
    hashes: AtomicU64,
    /// Computations under way, by credential key; a waiter subscribes to the result.
    in_flight: Mutex<KeyMap<watch::Receiver<Option<bool>>>>,
}

impl Authenticator {
    /// An authenticator over `table`.
    pub fn new(settings: AuthSettings, table: UserTable) -> Authenticator {
        let slots = settings.max_concurrent_hashes.max(1);
        let shared = Shared {
            keyer: CredentialKeyer::random(),
            cache: SuccessCache::new(settings.cache_capacity, settings.cache_ttl),
            hash_slots: Arc::new(Semaphore::new(slots)),
            slots_total: slots,
            hashes: AtomicU64::new(0),
            in_flight: Mutex::new(KeyMap::default()),
        };
        let limiter = FailureLimiter::new(
            settings.max_failures,
            settings.failure_window,
            settings.limiter_capacity,
        );
        Authenticator {
            settings,
            table: ArcSwap::from_pointee(table),
            shared: Arc::new(shared),
            limiter,
            loaded_stamp: Mutex::new(None),
        }
    }

    /// Loads the htpasswd file at `path` (problems are logged) and builds an authenticator on it.
    /// A file that cannot be read is an error: the caller should refuse to start.
    pub fn from_file(
        settings: AuthSettings,
        path: &Path,
    ) -> Result<(Authenticator, Vec<LineProblem>), LoadError> {
        let stamp = FileStamp::of(path);
        let (table, problems) = htpasswd::load_file(path, settings.allow_plaintext)?;
        log_problems(path, &problems);
        let auth = Authenticator::new(settings, table);
        *lock(&auth.loaded_stamp) = stamp;
        Ok((auth, problems))
    }

    /// The `WWW-Authenticate` value that goes with a 401 (`Basic realm="vastgate", charset="UTF-8"`).
    pub fn challenge_header() -> HeaderValue {
        super::challenge_header()
    }

    /// Checks the value of an `Authorization` header. No header, or one that is not well-formed
    /// Basic credentials, is `Denied` without counting as a failure (it is a request to be
    /// challenged, not a guess). Wrong credentials are `Denied` and counted against `client`.
    pub async fn check_basic(
        &self,
        authorization: Option<&HeaderValue>,
        client: IpAddr,
    ) -> Verdict {
        match authorization.and_then(BasicCredentials::from_header) {
            Some(credentials) => self.check_inner(&credentials, client, None).await,
            None => Verdict::Denied,
        }
    }

    /// [`check_basic`](Self::check_basic) for a client connection that keeps `memo` from one
    /// request to the next: the value it was last granted for is granted again at once, as
    /// long as the success cache would grant it (see [`GrantMemo`]).
    pub async fn check_basic_remembered(
        &self,
        authorization: Option<&HeaderValue>,
        client: IpAddr,
        memo: &mut GrantMemo,
    ) -> Verdict {
        let Some(value) = authorization else {
            return Verdict::Denied;
        };
        if let Some(user) = memo.recall(value.as_bytes(), &self.table.load()) {
            return Verdict::Granted { user };
        }
        match BasicCredentials::from_header(value) {
            Some(credentials) => {
                let memo = Some((memo, value.as_bytes()));
                self.check_inner(&credentials, client, memo).await
            }
            None => Verdict::Denied,
        }
    }

    /// Checks parsed credentials; see [`check_basic`](Self::check_basic).
    ///
    /// Order matters: a cached success is granted first (even to a limited address: it costs no
    /// hash and tells an attacker nothing), then a limited address is refused, then the hash is
    /// computed (or joined). Only a success that was computed clears the address's failures; a
    /// cache hit does not, or a legitimate user's traffic would keep resetting an attacker's count.
    pub async fn check(&self, credentials: &BasicCredentials, client: IpAddr) -> Verdict {
        self.check_inner(credentials, client, None).await
    }

    /// [`check`](Self::check); a grant is also written to `memo`, with the `Authorization` value
    /// it was for.
    async fn check_inner(
        &self,
        credentials: &BasicCredentials,
        client: IpAddr,
        memo: Option<(&mut GrantMemo, &[u8])>,
    ) -> Verdict {
        let user = credentials.user();
        let password = credentials.password();
        if password.len() > super::MAX_PASSWORD_LEN {
            return Verdict::Denied;
        }
        let now = Instant::now();
        let table = self.table.load();
        let (stored, known) = match table.entry(user) {
            Some((hash, user)) => (hash, Some(user)),
            None => (table.dummy(), None),
        };
        let key = self.shared.keyer.key(user, password, stored.as_str());

        if let Some(user) = known {
            if let Some(expiry) = self.shared.cache.expiry(&key, now) {
                let user = user.clone();
                if let Some((memo, value)) = memo {
                    memo.remember(value, Guard::into_inner(table), user.clone(), expiry);
                }
                return Verdict::Granted { user };
            }
        }
        // Only a miss waits: it takes its own copies of the hash and the user, and the table as
        // an `Arc` (a guard is not held across a wait; the table may be swapped meanwhile).
        let stored = stored.clone();
        let known = known.cloned();
        let table = Guard::into_inner(table);
        if let Some(retry_after) = self.limiter.limited(client, now) {
            return Verdict::Limited { retry_after };
        }

        let matched = match self.verify_shared(key, stored, password, known.is_some()) {
            Some(mut result) => match result.wait_for(Option::is_some).await {
                Ok(value) => *value == Some(true),
                // The computation was dropped (runtime shutting down, or a panic): no answer.
                Err(_) => return Verdict::Denied,
            },
            None => {
                return Verdict::Busy {
                    retry_after: self.settings.busy_retry_after,
                }
            }
        };
        match known.filter(|_| matched) {
            Some(user) => {
                self.limiter.clear(client);
                if let Some((memo, value)) = memo.filter(|_| self.shared.cache.enabled()) {
                    // The cache's entry was made after `now`: it expires no earlier.
                    let expiry = now + self.shared.cache.ttl();
                    memo.remember(value, table, user.clone(), expiry);
                }
                Verdict::Granted { user }
            }
            None => {
                self.limiter.record_failure(client, Instant::now());
                Verdict::Denied
            }
        }
    }

    /// Joins the computation for `key` if one is under way, else starts one if a hashing slot is
    /// free. `None` when all slots are taken.
    fn verify_shared(
        &self,
        key: CredentialKey,
        stored: StoredHash,
        password: &[u8],
        cache_success: bool,
    ) -> Option<watch::Receiver<Option<bool>>> {
        let mut in_flight = lock(&self.shared.in_flight);
        if let Some(result) = in_flight.get(&key) {
            return Some(result.clone());
        }
        // A job caches its success before it leaves the in-flight table, so a check that missed
        // the cache earlier but finds no job now may just have missed that job: look again,
        // under the lock, rather than hash a second time.
        if cache_success && self.shared.cache.contains(&key, Instant::now()) {
            return Some(watch::channel(Some(true)).1);
        }
        let permit = self.shared.hash_slots.clone().try_acquire_owned().ok()?;
        let (sender, result) = watch::channel(None);
        in_flight.insert(key, result.clone());
        drop(in_flight);
        let job = HashJob {
            shared: self.shared.clone(),
            key,
            stored,
            password: password.to_vec(),
            cache_success,
            sender,
            permit: Some(permit),
            withdrawn: false,
        };
        // Detached: the job finishes (and publishes, and caches) even if every waiter is gone.
        drop(tokio::task::spawn_blocking(move || job.run()));
        Some(result)
    }

    /// Puts `user`/`password` in the success cache against `user`'s current stored hash, without
    /// hashing. Only for a password the caller knows matches (it just wrote the entry with
    /// [`upsert_user_file`](super::upsert_user_file)). Returns whether `user` is in the table.
    pub fn seed(&self, user: &str, password: &str) -> bool {
        let table = self.table.load();
        let Some(stored) = table.get(user) else {
            return false;
        };
        let key = self
            .shared
            .keyer
            .key(user, password.as_bytes(), stored.as_str());
        self.shared.cache.insert(key, Instant::now());
        true
    }

    /// Replaces the user table.
    pub fn replace_table(&self, table: UserTable) {
        self.table.store(Arc::new(table));
    }

    /// The current user table.
    pub fn table(&self) -> Arc<UserTable> {
        self.table.load_full()
    }

    /// Re-reads the htpasswd file at `path` and swaps the table in. A file that cannot be read,
    /// or whose lines are all unusable (a half-written file, most likely), keeps the previous
    /// table; either way the outcome is logged. An empty file is a valid table of no users.
    pub fn reload_from(&self, path: &Path) -> Result<ReloadReport, LoadError> {
        let stamp = FileStamp::of(path);
        let result = htpasswd::load_file(path, self.settings.allow_plaintext).and_then(
            |(table, problems)| {
                if table.is_empty() && !problems.is_empty() {
                    Err(LoadError::NoUsableEntry {
                        path: path.to_owned(),
                        problems: problems.len(),
                    })
                } else {
                    Ok((table, problems))
                }
            },
        );
        // Remember this version even when it failed, so the watcher does not retry it every tick.
        *lock(&self.loaded_stamp) = stamp;
        match result {
            Ok((table, problems)) => {
                log_problems(path, &problems);
                let users = table.len();
                self.replace_table(table);
                tracing::info!(path = %path.display(), users, "htpasswd loaded");
                Ok(ReloadReport { users, problems })
            }
            Err(err) => {
                tracing::warn!(path = %path.display(), "{err}; keeping the previous users");
                Err(err)
            }
        }
    }

    /// Polls `path` every `period` and reloads it when its modification time, size or inode
    /// changes. Runs until the task is aborted.
    pub fn spawn_watcher(
        self: Arc<Self>,
        path: PathBuf,
        period: Duration,
    ) -> tokio::task::JoinHandle<()> {
        tokio::spawn(async move {
            {
                let mut seen = lock(&self.loaded_stamp);
                if seen.is_none() {
                    *seen = FileStamp::of(&path);
                }
            }
            let mut ticker = tokio::time::interval(period);
            ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            ticker.tick().await;
            loop {
                ticker.tick().await;
                let current = {
                    let path = path.clone();
                    tokio::task::spawn_blocking(move || FileStamp::of(&path))
                        .await
                        .unwrap_or(None)
                };
                if current == *lock(&self.loaded_stamp) {
                    continue;
                }
                let auth = self.clone();
                let path = path.clone();
                let _ = tokio::task::spawn_blocking(move || auth.reload_from(&path)).await;
            }
        })
    }

    /// Hash computations done so far (cache hits and limited answers do none).
    pub fn hash_count(&self) -> u64 {
        self.shared.hashes.load(Ordering::Relaxed)
    }

    /// Hash computations running right now.
    pub fn hashing_now(&self) -> usize {
        self.shared.slots_total - self.shared.hash_slots.available_permits()
    }

    /// Entries in the success cache.
    pub fn cached_successes(&self) -> usize {
        self.shared.cache.len()
    }

    /// Forgets all cached successes.
    pub fn clear_cache(&self) {
        self.shared.cache.clear();
    }
}

/// One verification on the blocking pool. Dropping it unrun (shutdown, or a panic) withdraws
/// its in-flight entry, so waiters are told "no answer" instead of hanging forever.
struct HashJob {
    shared: Arc<Shared>,
    key: CredentialKey,
    stored: StoredHash,
    password: Vec<u8>,
    cache_success: bool,
    sender: watch::Sender<Option<bool>>,
    permit: Option<OwnedSemaphorePermit>,
    withdrawn: bool,
}

impl HashJob {
    fn run(mut self) {
        self.shared.hashes.fetch_add(1, Ordering::Relaxed);
        let matched = self.stored.verify(&self.password);
        if matched && self.cache_success {
            self.shared.cache.insert(self.key, Instant::now());
        }
        // Withdraw before answering: a check arriving from now on finds the cache (success) or
        // starts afresh (failure), and never reuses a failure it did not wait for.
        self.withdraw();
        self.permit.take();
        self.sender.send_replace(Some(matched));
    }

    fn withdraw(&mut self) {
        if !self.withdrawn {
            lock(&self.shared.in_flight).remove(&self.key);
            self.withdrawn = true;
        }
    }
}

impl Drop for HashJob {
    fn drop(&mut self) {
        self.withdraw();
        self.password.fill(0);
    }
}

/// Identity of a file version: modification time, size and inode.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct FileStamp {
    modified: Option<SystemTime>,
    len: u64,
    inode: u64,
}

impl FileStamp {
    fn of(path: &Path) -> Option<FileStamp> {
        use std::os::unix::fs::MetadataExt;
        let m = std::fs::metadata(path).ok()?;
        Some(FileStamp {
            modified: m.modified().ok(),
            len: m.len(),
            inode: m.ino(),
        })
    }
}

fn log_problems(path: &Path, problems: &[LineProblem]) {
    for p in problems {
        tracing::warn!(path = %path.display(), line = p.line, "htpasswd: {p}; line skipped");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    use base64::engine::general_purpose::STANDARD;
    use base64::Engine;

    use crate::auth::htpasswd::parse;

    const CLIENT: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));

    fn basic(user: &str, password: &str) -> HeaderValue {
        let token = STANDARD.encode(format!("{user}:{password}"));
        HeaderValue::from_str(&format!("Basic {token}")).unwrap()
    }

    fn bcrypt_table(users: &[(&str, &str)], cost: u32) -> UserTable {
        let text: String = users
            .iter()
            .map(|(u, p)| format!("{}\n", crate::auth::htpasswd_line(u, p, cost).unwrap()))
            .collect();
        let (table, problems) = parse(&text, false);
        assert!(problems.is_empty());
        table
    }

    fn granted(user: &str) -> Verdict {
        Verdict::Granted {
            user: User::new(user),
        }
    }

    #[tokio::test]
    async fn cache_hit_does_no_hashing() {
        let auth = Authenticator::new(AuthSettings::default(), bcrypt_table(&[("alice", "pw")], 4));
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "pw")), CLIENT).await,
            granted("alice")
        );
        assert_eq!(auth.hash_count(), 1);
        for _ in 0..20 {
            assert_eq!(
                auth.check_basic(Some(&basic("alice", "pw")), CLIENT).await,
                granted("alice")
            );
        }
        assert_eq!(auth.hash_count(), 1);
    }

    async fn remembered(
        auth: &Authenticator,
        value: &HeaderValue,
        memo: &mut GrantMemo,
    ) -> Verdict {
        auth.check_basic_remembered(Some(value), CLIENT, memo).await
    }

    #[tokio::test]
    async fn a_connection_is_granted_its_own_value_again_without_the_cache() {
        let settings = AuthSettings {
            cache_capacity: 1,
            ..AuthSettings::default()
        };
        let table = bcrypt_table(&[("alice", "pw"), ("bob", "pw")], 4);
        let auth = Authenticator::new(settings, table);
        let (mut alices, mut bobs) = (GrantMemo::default(), GrantMemo::default());
        let alice = basic("alice", "pw");
        assert_eq!(
            remembered(&auth, &alice, &mut alices).await,
            granted("alice")
        );
        // Bob's grant takes the cache's only place.
        let bob = basic("bob", "pw");
        assert_eq!(remembered(&auth, &bob, &mut bobs).await, granted("bob"));
        assert_eq!(auth.hash_count(), 2);
        // Alice's connection still holds her grant.
        assert_eq!(
            remembered(&auth, &alice, &mut alices).await,
            granted("alice")
        );
        assert_eq!(auth.hash_count(), 2);
        // Another value on her connection is checked in full, and does not replace the grant.
        let wrong = basic("alice", "nope");
        assert_eq!(
            remembered(&auth, &wrong, &mut alices).await,
            Verdict::Denied
        );
        assert_eq!(auth.hash_count(), 3);
        assert_eq!(
            remembered(&auth, &alice, &mut alices).await,
            granted("alice")
        );
        assert_eq!(auth.hash_count(), 3);
        // A connection without a memo asks the cache, which no longer holds her.
        assert_eq!(
            auth.check_basic(Some(&alice), CLIENT).await,
            granted("alice")
        );
        assert_eq!(auth.hash_count(), 4);
    }

    #[tokio::test]
    async fn a_new_user_table_ends_every_connections_grant() {
        let auth = Authenticator::new(AuthSettings::default(), bcrypt_table(&[("alice", "pw")], 4));
        let mut memo = GrantMemo::default();
        let alice = basic("alice", "pw");
        assert_eq!(remembered(&auth, &alice, &mut memo).await, granted("alice"));
        // Her password changed.
        auth.replace_table(bcrypt_table(&[("alice", "new")], 4));
        assert_eq!(remembered(&auth, &alice, &mut memo).await, Verdict::Denied);
        // The same table again, in a new load: still no.
        auth.replace_table(bcrypt_table(&[("alice", "new")], 4));
        assert_eq!(remembered(&auth, &alice, &mut memo).await, Verdict::Denied);
        let new = basic("alice", "new");
        assert_eq!(remembered(&auth, &new, &mut memo).await, granted("alice"));
        // She was removed.
        auth.replace_table(bcrypt_table(&[("bob", "pw")], 4));
        assert_eq!(remembered(&auth, &new, &mut memo).await, Verdict::Denied);
    }

    #[tokio::test]
    async fn a_grant_is_remembered_no_longer_than_the_cache_would_remember_it() {
        let settings = AuthSettings {
            cache_ttl: Duration::from_millis(200),
            ..AuthSettings::default()
        };
        let auth = Authenticator::new(settings, bcrypt_table(&[("alice", "pw")], 4));
        let mut memo = GrantMemo::default();
        let alice = basic("alice", "pw");
        for _ in 0..3 {
            assert_eq!(remembered(&auth, &alice, &mut memo).await, granted("alice"));
        }
        assert_eq!(auth.hash_count(), 1);
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(remembered(&auth, &alice, &mut memo).await, granted("alice"));
        assert_eq!(
            auth.hash_count(),
            2,
            "re-verified once the cache's entry expired"
        );

        // Without a cache nothing is remembered.
        let settings = AuthSettings {
            cache_capacity: 0,
            ..AuthSettings::default()
        };
        let auth = Authenticator::new(settings, bcrypt_table(&[("alice", "pw")], 4));
        let mut memo = GrantMemo::default();
        for n in 1..=2 {
            assert_eq!(remembered(&auth, &alice, &mut memo).await, granted("alice"));
            assert_eq!(auth.hash_count(), n);
        }
    }

    #[tokio::test]
    async fn wrong_password_is_not_cached() {
        let auth = Authenticator::new(AuthSettings::default(), bcrypt_table(&[("alice", "pw")], 4));
        for n in 1..=3 {
            assert_eq!(
                auth.check_basic(Some(&basic("alice", "nope")), CLIENT)
                    .await,
                Verdict::Denied
            );
            assert_eq!(auth.hash_count(), n);
        }
        assert_eq!(auth.cached_successes(), 0);
    }

    #[tokio::test]
    async fn unknown_user_costs_exactly_one_hash() {
        let auth = Authenticator::new(AuthSettings::default(), bcrypt_table(&[("alice", "pw")], 4));
        assert_eq!(
            auth.check_basic(Some(&basic("mallory", "pw")), CLIENT)
                .await,
            Verdict::Denied
        );
        assert_eq!(auth.hash_count(), 1);
        assert_eq!(auth.table().dummy().cost(), 4);
    }

    #[tokio::test]
    async fn missing_or_malformed_headers_are_denied_without_hashing_or_counting() {
        let settings = AuthSettings {
            max_failures: 1,
            ..AuthSettings::default()
        };
        let auth = Authenticator::new(settings, bcrypt_table(&[("alice", "pw")], 4));
        for header in [
            None,
            Some(HeaderValue::from_static("Basic !!!")),
            Some(HeaderValue::from_static("Bearer abc")),
            Some(HeaderValue::from_static("Basic YWxpY2U=")),
            Some(HeaderValue::from_static("")),
        ] {
            assert_eq!(
                auth.check_basic(header.as_ref(), CLIENT).await,
                Verdict::Denied
            );
        }
        assert_eq!(auth.hash_count(), 0);
        // Not counted as failures: a right password still gets through with max_failures = 1.
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "pw")), CLIENT).await,
            granted("alice")
        );
    }

    #[tokio::test]
    async fn limiter_answers_limited_without_hashing_and_recovers() {
        let settings = AuthSettings {
            max_failures: 3,
            failure_window: Duration::from_millis(300),
            ..AuthSettings::default()
        };
        let auth = Authenticator::new(settings, bcrypt_table(&[("alice", "pw"), ("bob", "pw")], 4));
        // bob logs in first, so his credentials are cached.
        assert_eq!(
            auth.check_basic(Some(&basic("bob", "pw")), CLIENT).await,
            granted("bob")
        );
        for _ in 0..3 {
            assert_eq!(
                auth.check_basic(Some(&basic("alice", "x")), CLIENT).await,
                Verdict::Denied
            );
        }
        let hashes = auth.hash_count();
        let v = auth.check_basic(Some(&basic("alice", "pw")), CLIENT).await;
        assert!(
            matches!(v, Verdict::Limited { retry_after } if retry_after <= Duration::from_millis(300)),
            "{v:?}"
        );
        assert_eq!(auth.hash_count(), hashes, "limited answers cost no hash");
        // A cached success still gets in from the limited address, and costs nothing.
        assert_eq!(
            auth.check_basic(Some(&basic("bob", "pw")), CLIENT).await,
            granted("bob")
        );
        assert_eq!(auth.hash_count(), hashes);
        // Another address is not affected.
        let other = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 99));
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "pw")), other).await,
            granted("alice")
        );

        tokio::time::sleep(Duration::from_millis(350)).await;
        auth.clear_cache();
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "pw")), CLIENT).await,
            granted("alice")
        );
    }

    #[tokio::test]
    async fn success_clears_the_failure_count() {
        let settings = AuthSettings {
            max_failures: 2,
            ..AuthSettings::default()
        };
        let auth = Authenticator::new(settings, bcrypt_table(&[("alice", "pw")], 4));
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "x")), CLIENT).await,
            Verdict::Denied
        );
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "pw")), CLIENT).await,
            granted("alice")
        );
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "x")), CLIENT).await,
            Verdict::Denied
        );
        // Only one failure since the success: not limited yet.
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "y")), CLIENT).await,
            Verdict::Denied
        );
        assert!(matches!(
            auth.check_basic(Some(&basic("alice", "z")), CLIENT).await,
            Verdict::Limited { .. }
        ));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn fifty_identical_first_checks_cost_one_hash() {
        let auth = Arc::new(Authenticator::new(
            AuthSettings::default(),
            bcrypt_table(&[("alice", "pw")], 8),
        ));
        let header = basic("alice", "pw");
        let barrier = Arc::new(tokio::sync::Barrier::new(50));
        let tasks: Vec<_> = (0..50)
            .map(|_| {
                let (auth, header, barrier) = (auth.clone(), header.clone(), barrier.clone());
                tokio::spawn(async move {
                    barrier.wait().await;
                    auth.check_basic(Some(&header), CLIENT).await
                })
            })
            .collect();
        for t in tasks {
            assert_eq!(t.await.unwrap(), granted("alice"));
        }
        assert_eq!(auth.hash_count(), 1);
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn full_semaphore_answers_busy_at_once() {
        let settings = AuthSettings {
            max_concurrent_hashes: 1,
            busy_retry_after: Duration::from_secs(2),
            ..AuthSettings::default()
        };
        let auth = Arc::new(Authenticator::new(
            settings,
            bcrypt_table(&[("alice", "pw"), ("bob", "pw")], 11),
        ));
        let first = {
            let auth = auth.clone();
            tokio::spawn(async move { auth.check_basic(Some(&basic("alice", "pw")), CLIENT).await })
        };
        while auth.hashing_now() == 0 {
            tokio::task::yield_now().await;
        }
        let started = Instant::now();
        let v = auth.check_basic(Some(&basic("bob", "pw")), CLIENT).await;
        assert_eq!(
            v,
            Verdict::Busy {
                retry_after: Duration::from_secs(2)
            }
        );
        assert!(
            started.elapsed() < Duration::from_millis(200),
            "Busy must not wait"
        );
        // Joining the computation already under way needs no slot.
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "pw")), CLIENT).await,
            granted("alice")
        );
        assert_eq!(first.await.unwrap(), granted("alice"));
        assert_eq!(auth.hash_count(), 1);
        assert_eq!(auth.hashing_now(), 0);
    }

    #[tokio::test]
    async fn a_cancelled_check_still_fills_the_cache() {
        let auth = Authenticator::new(AuthSettings::default(), bcrypt_table(&[("alice", "pw")], 6));
        let header = basic("alice", "pw");
        // Poll once (the job starts), then drop the future as a disconnecting client would.
        let fut = auth.check_basic(Some(&header), CLIENT);
        let _ = tokio::time::timeout(Duration::from_millis(1), fut).await;
        while auth.hashing_now() > 0 || auth.cached_successes() == 0 {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(
            auth.check_basic(Some(&header), CLIENT).await,
            granted("alice")
        );
        assert_eq!(auth.hash_count(), 1);
        assert!(lock(&auth.shared.in_flight).is_empty());
    }

    #[tokio::test]
    async fn changed_stored_hash_invalidates_the_cache() {
        let auth = Authenticator::new(
            AuthSettings::default(),
            bcrypt_table(&[("alice", "old")], 4),
        );
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "old")), CLIENT).await,
            granted("alice")
        );
        auth.replace_table(bcrypt_table(&[("alice", "new")], 4));
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "old")), CLIENT).await,
            Verdict::Denied
        );
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "new")), CLIENT).await,
            granted("alice")
        );
    }

    #[tokio::test]
    async fn seed_grants_without_hashing() {
        let auth = Authenticator::new(AuthSettings::default(), bcrypt_table(&[("admin", "pw")], 4));
        assert!(auth.seed("admin", "pw"));
        assert!(!auth.seed("nobody", "pw"));
        assert_eq!(
            auth.check_basic(Some(&basic("admin", "pw")), CLIENT).await,
            granted("admin")
        );
        assert_eq!(auth.hash_count(), 0);
    }

    #[tokio::test]
    async fn reload_swaps_users_and_a_failed_reload_keeps_them() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(
            &path,
            format!(
                "{}\n",
                crate::auth::htpasswd_line("alice", "pw", 4).unwrap()
            ),
        )
        .unwrap();
        let (auth, problems) = Authenticator::from_file(AuthSettings::default(), &path).unwrap();
        assert!(problems.is_empty());
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "pw")), CLIENT).await,
            granted("alice")
        );

        std::fs::write(
            &path,
            format!("{}\n", crate::auth::htpasswd_line("bob", "pw", 4).unwrap()),
        )
        .unwrap();
        assert_eq!(auth.reload_from(&path).unwrap().users, 1);
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "pw")), CLIENT).await,
            Verdict::Denied
        );
        assert_eq!(
            auth.check_basic(Some(&basic("bob", "pw")), CLIENT).await,
            granted("bob")
        );

        std::fs::write(&path, "garbage line\nbob:$2y$\n").unwrap();
        assert!(matches!(
            auth.reload_from(&path),
            Err(LoadError::NoUsableEntry { problems: 2, .. })
        ));
        std::fs::remove_file(&path).unwrap();
        assert!(matches!(
            auth.reload_from(&path),
            Err(LoadError::Read { .. })
        ));
        auth.clear_cache();
        assert_eq!(
            auth.check_basic(Some(&basic("bob", "pw")), CLIENT).await,
            granted("bob")
        );

        std::fs::write(&path, "# nobody\n").unwrap();
        assert_eq!(auth.reload_from(&path).unwrap().users, 0);
        assert_eq!(
            auth.check_basic(Some(&basic("bob", "pw")), CLIENT).await,
            Verdict::Denied
        );
    }

    #[tokio::test]
    async fn watcher_picks_up_edits() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("htpasswd");
        std::fs::write(
            &path,
            format!(
                "{}\n",
                crate::auth::htpasswd_line("alice", "pw", 4).unwrap()
            ),
        )
        .unwrap();
        let (auth, _) = Authenticator::from_file(AuthSettings::default(), &path).unwrap();
        let auth = Arc::new(auth);
        let watcher = auth
            .clone()
            .spawn_watcher(path.clone(), Duration::from_millis(20));

        crate::auth::upsert_user_file(&path, "bob", "pw", 4).unwrap();
        let deadline = Instant::now() + Duration::from_secs(10);
        while auth.table().get("bob").is_none() {
            assert!(Instant::now() < deadline, "watcher never reloaded");
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        assert_eq!(
            auth.check_basic(Some(&basic("bob", "pw")), CLIENT).await,
            granted("bob")
        );
        assert_eq!(
            auth.check_basic(Some(&basic("alice", "pw")), CLIENT).await,
            granted("alice")
        );
        watcher.abort();
    }
}
