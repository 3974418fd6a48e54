//! Directory leases, kept by the leader in memory. A client holding the
//! lease on a directory owns it and everything below it: it answers
//! lookups and listings there itself and queues its changes there (creates
//! included, with inode numbers it reserved), so a program unpacking a
//! tree costs no round trip per file. Every other client's request that
//! reads or changes something there first recalls the lease and waits
//! until the holder has sent its changes and released it (or its session
//! lapsed): that request then sees everything the holder did.
//!
//! Sessions: a client's leases live as long as it keeps sending
//! `KeepAlive`s, each of which renews them for [`LEASE_TIME`] from its
//! arrival, after a read barrier (a deposed leader cannot renew). The
//! client counts a shorter time from when it sent the keep-alive, so it
//! stops using a lease before the master may give the directory to
//! anyone else.
//!
//! A new leader does not know the old ones' leases. A leader journals its
//! term (`LeaseTerm`) before its first grant; a new leader whose state
//! shows a lease granted in an earlier term serves no request that names
//! a path until [`LEASE_TIME`] has passed since it first saw itself
//! leading, by when every lease an old leader granted or renewed has
//! lapsed. One that finds none (leases never used) waits for nothing.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;
use strata_protocol::journal::JournalEntry;
use strata_protocol::locks::{self, LockKind, LockSet, RangeLock};
use strata_protocol::messages::MasterRequest;
use strata_protocol::path::{is_under, parent};
use strata_protocol::{ErrorCode, ErrorInfo};
use tokio::sync::{Notify, RwLock, RwLockReadGuard};
use tokio::time::Instant;

use super::namespace_actor::NamespaceMsg;

/// How long a lease lives past the last keep-alive, as the master counts.
pub const LEASE_TIME: Duration = Duration::from_secs(3);
/// How long a keep-alive is held when nothing is recalled.
pub const HOLD: Duration = Duration::from_millis(500);
/// A live holder that has not released a recalled lease after this long
/// loses it (logged): the others do not wait forever on a stuck client.
const RECALL_LIMIT: Duration = Duration::from_secs(10);

struct Session {
    expires: Instant,
    /// Recalled directories not yet told to the client.
    recalls: Vec<String>,
    wake: Arc<Notify>,
}

struct Lease {
    client: u64,
    recalled: Option<Instant>,
}

#[derive(Default)]
struct Table {
    /// By directory path.
    leases: HashMap<String, Lease>,
    sessions: HashMap<u64, Session>,
    /// The term this master leads in and when it first saw it.
    term: Option<(u64, Instant)>,
    /// Until then no request naming a path runs (a new leader after leases
    /// were granted in an earlier term).
    grace_until: Option<Instant>,
    /// The term whose `LeaseTerm` entry this master has journaled.
    journaled: Option<u64>,
    /// Byte-range locks by inode, each held by a session's client.
    locks: HashMap<u64, LockSet>,
    /// The lock requests the leader holds now, by (client, owner): what a
    /// deadlock check follows.
    waiting: HashMap<(u64, u64), Waiting>,
    /// `waiting`'s size at which entries left by dropped requests are
    /// purged next.
    purge_at: usize,
}

/// A lock request held until a conflicting lock goes (or its hold ends).
struct Waiting {
    inode: u64,
    range: (u64, u64),
    kind: LockKind,
    /// Its hold's end and a little: an entry a dropped request (a closed
    /// connection) left behind counts for nothing after it.
    until: Instant,
}

/// How long past its hold a held request's entry may be left by a request
/// that was dropped (every answer removes it).
const WAITING_SLACK: Duration = Duration::from_millis(50);

/// How many owners a deadlock check follows (as Linux's `posix_locks_deadlock`).
const DEADLOCK_STEPS: usize = 10;

static TABLE: LazyLock<Mutex<Table>> = LazyLock::new(Mutex::default);
/// Woken when a lease goes (released, revoked, lapsed).
static CHANGED: LazyLock<Notify> = LazyLock::new(Notify::new);
/// Requests past the lease check hold it shared while they run; a grant
/// holds it exclusively, so the listing it answers with is not changed by
/// a request that was admitted before the lease existed.
static RUNNING: LazyLock<RwLock<()>> = LazyLock::new(RwLock::default);

/// How a request touches its paths.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Access {
    /// The path itself (stat, create, write, set attributes).
    Itself,
    /// The path and its children's attributes (a listing).
    List,
    /// The path and everything below it (rename, delete, mount, pin, lease).
    Subtree,
}

fn access(req: &MasterRequest) -> Access {
    use MasterRequest as R;
    match req {
        R::List { .. } => Access::List,
        R::Rename { .. }
        | R::Delete { .. }
        | R::Unlink { .. }
        | R::Mount { .. }
        | R::Unmount { .. }
        | R::SetPin { .. }
        | R::SetTtl { .. }
        | R::Persist { .. }
        | R::Free { .. }
        | R::Batch { .. }
        | R::Lease { .. } => Access::Subtree,
        _ => Access::Itself,
    }
}

/// Whether a request touching `path` this way must wait for the lease on `dir`.
fn conflicts(dir: &str, path: &str, how: Access) -> bool {
    is_under(path, dir)
        || match how {
            Access::Itself => false,
            Access::List => parent(dir) == path,
            Access::Subtree => is_under(dir, path),
        }
}

impl Table {
    /// `client`'s session, made or renewed to last [`LEASE_TIME`] at least.
    fn session(&mut self, client: u64, now: Instant) {
        let s = self.sessions.entry(client).or_insert_with(|| Session {
            expires: now,
            recalls: Vec::new(),
            wake: Arc::new(Notify::new()),
        });
        s.expires = s.expires.max(now + LEASE_TIME);
    }

    /// Forgets `client`'s session with its leases and locks.
    fn forget(&mut self, client: u64) {
        self.leases.retain(|_, l| l.client != client);
        self.sessions.remove(&client);
        self.waiting.retain(|(c, _), _| *c != client);
        self.locks.retain(|_, set| {
            set.retain(|l| l.client != client);
            !set.is_empty()
        });
    }

    /// The lock of another live owner in the way of `kind` on
    /// `start..=end` of `inode`, with when its session lapses; the locks of
    /// lapsed sessions in the way go (with their sessions).
    fn lock_conflict(
        &mut self,
        client: u64,
        owner: u64,
        inode: u64,
        range: (u64, u64),
        kind: LockKind,
        now: Instant,
    ) -> Option<(RangeLock, Instant)> {
        loop {
            let l = self.locks.get(&inode)?.conflict(client, owner, range.0, range.1, kind)?.clone();
            match self.sessions.get(&l.client).map(|s| s.expires).filter(|e| *e > now) {
                Some(expires) => return Some((l, expires)),
                None => {
                    tracing::warn!(client = l.client, inode, "a lapsed session's locks are dropped");
                    self.forget(l.client);
                    CHANGED.notify_waiters();
                }
            }
        }
    }

    /// Whether `me` waiting for `holder`'s lock would close a cycle: the
    /// holder waits for a lock whose holder waits ... for one `me` holds.
    fn deadlocks(&self, me: (u64, u64), mut holder: (u64, u64), now: Instant) -> bool {
        for _ in 0..DEADLOCK_STEPS {
            if holder == me {
                return true;
            }
            let Some(w) = self.waiting.get(&holder).filter(|w| w.until > now) else { return false };
            let Some(next) =
                self.locks.get(&w.inode).and_then(|s| s.conflict(holder.0, holder.1, w.range.0, w.range.1, w.kind))
            else {
                return false;
            };
            // A lapsed session's locks go when a request meets them: no cycle.
            if self.sessions.get(&next.client).is_none_or(|s| s.expires <= now) {
                return false;
            }
            holder = (next.client, next.owner);
        }
        false
    }

    /// When the caller may look again, if it must wait; recalls what it waits for.
    fn check(&mut self, client: u64, paths: &[&str], how: Access, now: Instant) -> Option<Instant> {
        if let Some(g) = self.grace_until.filter(|g| now < *g) {
            return Some(g);
        }
        if self.leases.is_empty() {
            return None;
        }
        let mut until: Option<Instant> = None;
        let mut gone = Vec::new();
        for (dir, lease) in self.leases.iter_mut() {
            if lease.client == client || !paths.iter().any(|p| conflicts(dir, p, how)) {
                continue;
            }
            let Some(s) = self.sessions.get_mut(&lease.client).filter(|s| s.expires > now) else {
                gone.push(dir.clone());
                continue;
            };
            let recalled = *lease.recalled.get_or_insert_with(|| {
                s.recalls.push(dir.clone());
                s.wake.notify_one();
                now
            });
            if now >= recalled + RECALL_LIMIT {
                tracing::warn!(dir = %dir, client = lease.client, "a recalled lease was not released in time; revoked");
                gone.push(dir.clone());
                continue;
            }
            let t = s.expires.min(recalled + RECALL_LIMIT);
            until = Some(until.map_or(t, |u| u.min(t)));
        }
        for dir in gone {
            self.leases.remove(&dir);
        }
        until
    }
}

/// Makes the table this leadership's: a new term empties it and, if a
/// lease was granted in an earlier term (read from the applied state after
/// a read barrier, so every committed `LeaseTerm` counts), sets the grace.
async fn this_term() {
    let Some(term) = crate::master::journal::leader_term() else { return };
    if TABLE.lock().term.is_some_and(|(t, _)| t == term) {
        return;
    }
    if crate::master::journal::read_barrier().await.is_err() {
        return; // not leading after all: the request fails on its own
    }
    let earlier = match super::gateway::ns_call(NamespaceMsg::LeaseTerm).await {
        Ok(Ok(t)) => t,
        // Unknown: assume the worst.
        _ => Some(0),
    };
    let mut t = TABLE.lock();
    if t.term.is_some_and(|(x, _)| x == term) {
        return;
    }
    let now = Instant::now();
    *t = Table {
        term: Some((term, now)),
        grace_until: earlier.filter(|e| *e < term).map(|_| now + LEASE_TIME),
        ..Table::default()
    };
}

/// Waits until no other client's lease covers what `req` touches
/// (recalling those that do), then lets it run: hold the guard while it does.
pub async fn admit(client: u64, req: &MasterRequest) -> RwLockReadGuard<'static, ()> {
    let paths = req.paths();
    let how = access(req);
    if !paths.is_empty() {
        this_term().await;
    }
    loop {
        let running = RUNNING.read().await;
        if paths.is_empty() {
            return running;
        }
        let mut changed = std::pin::pin!(CHANGED.notified());
        changed.as_mut().enable();
        let Some(until) = TABLE.lock().check(client, &paths, how, Instant::now()) else { return running };
        drop(running);
        wait(changed, until).await;
    }
}

/// Waits until a lease goes (`changed`, enabled before the table was
/// read, so a release in between is not missed) or `until`.
async fn wait(changed: std::pin::Pin<&mut tokio::sync::futures::Notified<'_>>, until: Instant) {
    tokio::select! {
        _ = changed => {}
        _ = tokio::time::sleep_until(until) => {}
    }
}

/// Makes the table this term's and journals the term before its first
/// grant (of a lease or a lock), so that a later leader keeps a grace.
async fn journal_term() -> Result<(), ErrorInfo> {
    this_term().await;
    if let Some(term) = crate::master::journal::leader_term() {
        if TABLE.lock().journaled != Some(term) {
            let entry = JournalEntry::LeaseTerm { term, time_ms: strata_protocol::now_ms() };
            super::gateway::propose(entry).await?;
            TABLE.lock().journaled = Some(term);
        }
    }
    Ok(())
}

/// Grants `client` the lease on `dir` once no other client's lease is in
/// the way; `list` (run while nothing else runs) answers with the entries.
pub async fn grant<T>(
    client: u64,
    dir: &str,
    list: impl AsyncFnOnce() -> Result<T, ErrorInfo>,
) -> Result<T, ErrorInfo> {
    if client == 0 {
        return Err(ErrorInfo::new(ErrorCode::InvalidArgument, "a lease needs a client id"));
    }
    journal_term().await?;
    let paths = [dir];
    loop {
        let mut changed = std::pin::pin!(CHANGED.notified());
        changed.as_mut().enable();
        let all = RUNNING.write().await;
        let until = {
            let mut t = TABLE.lock();
            let until = t.check(client, &paths, Access::Subtree, Instant::now());
            if until.is_none() {
                // The client's own leases below `dir` are subsumed.
                t.leases.retain(|d, l| l.client != client || !is_under(d, dir));
                t.leases.insert(dir.to_string(), Lease { client, recalled: None });
                t.session(client, Instant::now());
            }
            until
        };
        match until {
            None => {
                let r = list().await;
                drop(all);
                if r.is_err() {
                    release(client, &[dir.to_string()]);
                }
                return r;
            }
            Some(until) => {
                drop(all);
                wait(changed, until).await;
            }
        }
    }
}

/// Renews `client`'s session (the caller passed a read barrier) and waits
/// up to [`HOLD`] for a recall: the directories to give back, and
/// whether the client must reclaim its locks (it says it holds `locks`
/// ranges; this master knows fewer of them).
/// A session this master does not know (it became leader since, or the
/// session lapsed) is answered with a recall of `/`: the client holds no
/// lease here.
pub async fn keep_alive(client: u64, locks: u64) -> (Vec<String>, bool) {
    let wake = {
        let mut t = TABLE.lock();
        let now = Instant::now();
        if t.sessions.get(&client).is_none_or(|s| s.expires <= now) {
            t.forget(client);
            drop(t);
            CHANGED.notify_waiters();
            return (vec!["/".to_string()], locks > 0);
        }
        let held: usize = t.locks.values().map(|s| s.held().iter().filter(|l| l.client == client).count()).sum();
        let reclaim = (held as u64) < locks;
        let s = t.sessions.get_mut(&client).expect("checked above");
        s.expires = now + LEASE_TIME;
        if !s.recalls.is_empty() || reclaim {
            return (std::mem::take(&mut s.recalls), reclaim);
        }
        s.wake.clone()
    };
    let _ = tokio::time::timeout(HOLD, wake.notified()).await;
    let recalls = TABLE.lock().sessions.get_mut(&client).map(|s| std::mem::take(&mut s.recalls)).unwrap_or_default();
    (recalls, false)
}

/// `client` gives up its leases on `dirs`.
pub fn release(client: u64, dirs: &[String]) {
    {
        let mut t = TABLE.lock();
        for d in dirs {
            if t.leases.get(d).is_some_and(|l| l.client == client) {
                t.leases.remove(d);
            }
        }
    }
    CHANGED.notify_waiters();
}

/// How long a lock request that may wait is held before it is answered
/// `WouldBlock` (the client asks again, after checking that the process
/// waiting has no signal pending).
pub const LOCK_HOLD: Duration = Duration::from_millis(250);

/// A lock request (see `MasterRequest::Lock`); the caller passed a read
/// barrier. Unlocks are never held up; a new lock waits out a new
/// leader's grace, a reclaim does not.
#[allow(clippy::too_many_arguments)]
pub async fn lock(
    client: u64,
    inode: u64,
    owner: u64,
    range: (u64, u64),
    kind: Option<LockKind>,
    pid: u32,
    may_wait: bool,
    reclaim: bool,
) -> Result<(), ErrorInfo> {
    if client == 0 {
        return Err(ErrorInfo::new(ErrorCode::InvalidArgument, "a lock needs a client id"));
    }
    if range.0 > range.1 {
        return Err(ErrorInfo::new(ErrorCode::InvalidArgument, format!("lock range {}..={}", range.0, range.1)));
    }
    journal_term().await?;
    let deadline = Instant::now() + LOCK_HOLD;
    loop {
        let mut changed = std::pin::pin!(CHANGED.notified());
        changed.as_mut().enable();
        let (until, grace) = {
            let mut t = TABLE.lock();
            let now = Instant::now();
            if t.term.map(|(term, _)| term) != crate::master::journal::leader_term() {
                return Err(ErrorInfo::new(ErrorCode::Unavailable, "leadership changed; ask again"));
            }
            let grace = t.grace_until.filter(|g| now < *g && kind.is_some() && !reclaim);
            let conflict = match (grace, kind) {
                (Some(g), _) => Some(g),
                (None, Some(k)) => match t.lock_conflict(client, owner, inode, range, k, now) {
                    Some((l, expires)) if may_wait && !reclaim => {
                        if t.deadlocks((client, owner), (l.client, l.owner), now) {
                            t.waiting.remove(&(client, owner));
                            return Err(ErrorInfo::new(
                                ErrorCode::Deadlock,
                                format!("inode {inode}: its holder waits for a lock this owner holds"),
                            ));
                        }
                        if t.waiting.len() >= t.purge_at {
                            t.waiting.retain(|_, w| w.until > now);
                            t.purge_at = (2 * t.waiting.len()).max(1024);
                        }
                        let until = deadline + WAITING_SLACK;
                        t.waiting.insert((client, owner), Waiting { inode, range, kind: k, until });
                        Some(expires)
                    }
                    other => other.map(|(_, e)| e),
                },
                (None, None) => None,
            };
            match conflict {
                Some(until) => (until, grace.is_some()),
                None => {
                    t.waiting.remove(&(client, owner));
                    locks::set_in(&mut t.locks, inode, (client, owner), range, kind, pid);
                    if kind.is_some() {
                        t.session(client, now);
                    }
                    drop(t);
                    // An unlock or a downgrade may let a waiter through.
                    CHANGED.notify_waiters();
                    return Ok(());
                }
            }
        };
        // A new leader's grace (at most LEASE_TIME) is waited out by every
        // new lock, so a free range is not refused because holders have
        // not reclaimed yet. A reclaim in the way of another's lock: the
        // other took it while this client was away.
        if !grace && (!may_wait || reclaim || Instant::now() >= deadline) {
            // The client may give up now (a signal): it waits no more here
            // until it asks again.
            TABLE.lock().waiting.remove(&(client, owner));
            return Err(ErrorInfo::new(ErrorCode::WouldBlock, format!("inode {inode} is locked by another owner")));
        }
        wait(changed, if grace { until } else { until.min(deadline) }).await;
    }
}

/// The lock in the way of `owner` taking `kind` on `range` of `inode`,
/// answered after a new leader's grace, when the holders have reclaimed.
pub async fn test_lock(client: u64, inode: u64, owner: u64, range: (u64, u64), kind: LockKind) -> Option<RangeLock> {
    this_term().await;
    let grace = TABLE.lock().grace_until;
    if let Some(g) = grace {
        tokio::time::sleep_until(g).await;
    }
    TABLE.lock().lock_conflict(client, owner, inode, range, kind, Instant::now()).map(|(l, _)| l)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn what_waits_for_a_lease() {
        let d = "/w/tar";
        assert!(conflicts(d, "/w/tar", Access::Itself), "the directory's own attributes");
        assert!(conflicts(d, "/w/tar/a/b", Access::Itself));
        assert!(!conflicts(d, "/w/tarball", Access::Itself));
        assert!(!conflicts(d, "/w", Access::Itself), "stat of the parent");
        assert!(conflicts(d, "/w", Access::List), "a listing of the parent shows its attributes");
        assert!(!conflicts(d, "/", Access::List));
        assert!(conflicts(d, "/w", Access::Subtree), "a rename or delete above");
        assert!(!conflicts(d, "/x", Access::Subtree));
    }

    #[tokio::test]
    async fn a_recall_reaches_the_holder_and_a_release_lets_others_in() {
        let (holder, other) = (11, 12);
        grant(holder, "/lease-test", async || Ok(())).await.unwrap();
        // The holder itself is not held up by its own lease.
        let stat = MasterRequest::Stat { path: "/lease-test/f".into() };
        drop(admit(holder, &stat).await);
        // Another client waits; the holder hears the recall, then releases.
        let waiter = tokio::spawn(async move {
            drop(admit(other, &stat).await);
        });
        let (recalled, _) = keep_alive(holder, 0).await;
        assert_eq!(recalled, vec!["/lease-test".to_string()]);
        assert!(!waiter.is_finished());
        release(holder, &recalled);
        tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap();
        // Unrelated paths never wait.
        drop(admit(other, &MasterRequest::Stat { path: "/elsewhere".into() }).await);
    }

    #[tokio::test]
    async fn an_unknown_session_holds_nothing() {
        // A new leader (or a lapsed session): the client is told to drop everything.
        assert_eq!(keep_alive(31, 0).await, (vec!["/".to_string()], false));
        grant(31, "/known-test", async || Ok(())).await.unwrap();
        let t0 = Instant::now();
        assert_eq!(keep_alive(31, 0).await, (vec![], false), "held, nothing recalled");
        assert!(t0.elapsed() >= HOLD - Duration::from_millis(50));
    }

    #[tokio::test]
    async fn locks_conflict_wait_and_go_with_their_session() {
        let (a, b, inode) = (41, 42, 4200);
        let w = Some(LockKind::Write);
        lock(a, inode, 1, (0, 99), w, 1, false, false).await.unwrap();
        let e = lock(b, inode, 1, (50, 50), Some(LockKind::Read), 2, false, false).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::WouldBlock);
        let held = test_lock(b, inode, 1, (0, 0), LockKind::Read).await.map(|l| (l.client, l.start, l.end));
        assert_eq!(held, Some((a, 0, 99)));
        // A waiting request is let through by the unlock, not by the hold running out.
        let waiter = tokio::spawn(lock(b, inode, 1, (0, 10), w, 2, true, false));
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        lock(a, inode, 1, (0, u64::MAX), None, 1, false, false).await.unwrap();
        waiter.await.unwrap().unwrap();
        assert!(t0.elapsed() < LOCK_HOLD / 2, "{:?}", t0.elapsed());
        // b sends no keep-alives: a gets the range once b's session lapses.
        let t0 = Instant::now();
        while let Err(e) = lock(a, inode, 1, (0, 10), w, 1, true, false).await {
            assert_eq!(e.code, ErrorCode::WouldBlock);
            assert!(t0.elapsed() < LEASE_TIME + Duration::from_secs(1), "b's lock outlived its session");
        }
        assert!(t0.elapsed() >= LEASE_TIME - Duration::from_millis(300), "{:?}", t0.elapsed());
        assert_eq!(keep_alive(b, 1).await, (vec!["/".to_string()], true), "b is told to reclaim");
        // A client that holds more than the master knows of is told to reclaim.
        assert_eq!(keep_alive(a, 2).await, (vec![], true));
        assert_eq!(keep_alive(a, 1).await, (vec![], false));
    }

    #[tokio::test]
    async fn a_wait_that_would_close_a_cycle_is_a_deadlock() {
        let (a, b, c, inode) = (51, 52, 53, 5300);
        let w = Some(LockKind::Write);
        lock(a, inode, 1, (0, 9), w, 1, false, false).await.unwrap();
        lock(b, inode, 1, (10, 19), w, 2, false, false).await.unwrap();
        lock(c, inode, 1, (20, 29), w, 3, false, false).await.unwrap();
        // The leader holds `who`'s request (its wait is recorded).
        let held = |who: u64| async move {
            while !TABLE.lock().waiting.contains_key(&(who, 1)) {
                tokio::time::sleep(Duration::from_millis(1)).await;
            }
        };
        // a waits for b; c waits for a: a chain, no cycle.
        let a_waits = tokio::spawn(lock(a, inode, 1, (10, 19), w, 1, true, false));
        held(a).await;
        let c_waits = tokio::spawn(lock(c, inode, 1, (5, 5), w, 3, true, false));
        held(c).await;
        assert!(!a_waits.is_finished() && !c_waits.is_finished());
        // b waiting for c would close b → c → a → b.
        let e = lock(b, inode, 1, (25, 25), w, 2, true, false).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Deadlock, "{e:?}");
        // Without waiting it is only refused.
        let e = lock(b, inode, 1, (25, 25), w, 2, false, false).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::WouldBlock);
        // b unlocks: a gets its range, and c still waits for a.
        lock(b, inode, 1, (0, u64::MAX), None, 2, false, false).await.unwrap();
        a_waits.await.unwrap().unwrap();
        // c's hold ends (its process may give up now): a may wait for c at once.
        assert_eq!(c_waits.await.unwrap().unwrap_err().code, ErrorCode::WouldBlock);
        let e = lock(a, inode, 1, (20, 29), w, 1, true, false).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::WouldBlock, "a held wait, not a deadlock: {e:?}");
    }

    #[tokio::test]
    async fn a_lapsed_session_frees_its_directories() {
        let (holder, other) = (21, 22);
        grant(holder, "/lapse-test", async || Ok(())).await.unwrap();
        let t0 = Instant::now();
        // No keep-alives: the lease lapses after LEASE_TIME at most.
        drop(admit(other, &MasterRequest::List { path: "/lapse-test".into() }).await);
        let waited = t0.elapsed();
        assert!(waited <= LEASE_TIME + Duration::from_millis(500), "{waited:?}");
    }
}
