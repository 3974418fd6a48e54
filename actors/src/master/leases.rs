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
//!
//! The table belongs to the [`LeaseKeeper`] actor: it makes a fresh
//! [`Leases`] when it starts, publishes it in the node's [`LeaseSlot`] for
//! the request path, and sweeps lapsed sessions (with their leases, locks
//! and waits) every second. A restarted keeper starts empty, as a new
//! leader does, and keeps the same grace whenever a lease was ever granted
//! in this term or before: clients may still hold leases the dead table
//! knew.
//!
//! Requests are not serialized by any lock: each one that names paths is
//! registered as running (in one of [`SHARDS`] small maps, by ticket)
//! before it looks at the table, and only while any lease or grace exists
//! does it look at all. A grant inserts its lease first, then waits for the
//! running requests that touch its directory to finish, then lists: a
//! request either sees the lease or is waited for.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering::SeqCst};
use std::sync::Arc;
use std::time::Duration;

use parking_lot::{Mutex, RwLock};
use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use strata_protocol::journal::JournalEntry;
use strata_protocol::locks::{self, LockKind, LockSet, RangeLock};
use strata_protocol::messages::MasterRequest;
use strata_protocol::path::{is_under, parent};
use strata_protocol::{ErrorCode, ErrorInfo};
use tokio::sync::Notify;
use tokio::time::Instant;

use super::journal::Journal;
use super::namespace_actor::{NamespaceMsg, Ns};

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
    /// Granted, its listing not yet answered.
    granting: bool,
}

/// How often a request held up by a lease being granted looks again (the
/// grant also wakes it when done).
const GRANT_POLL: Duration = Duration::from_millis(20);

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

/// How many maps the running requests are spread over (by ticket): a
/// request locks one; a grant reads them all.
pub const SHARDS: usize = 64;

/// A request past the lease check, running.
struct Running {
    paths: Vec<String>,
    how: Access,
}

/// The lease and lock table of this master's leadership, with the
/// requests running under it. Owned by the [`LeaseKeeper`].
pub struct Leases {
    table: Mutex<Table>,
    /// Woken when a lease or lock goes (released, revoked, lapsed).
    changed: Notify,
    running: [Mutex<HashMap<u64, Running>>; SHARDS],
    next_ticket: AtomicU64,
    /// Grants waiting for running requests to finish: only then does a
    /// finishing request wake them.
    draining: AtomicUsize,
    drained: Notify,
    /// False only while no lease exists and no grace is set: requests then
    /// skip the table.
    in_use: AtomicBool,
    /// The term the table was last made for (0: none yet).
    term: AtomicU64,
    /// This table replaces one that died (a restarted keeper).
    restarted: bool,
    journal: Journal,
    ns: Ns,
}

impl std::fmt::Debug for Leases {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let t = self.table.lock();
        f.debug_struct("Leases").field("leases", &t.leases.len()).field("sessions", &t.sessions.len()).finish()
    }
}

/// A request's admission: it is counted as running until this is dropped.
pub struct Admission {
    leases: Option<(Arc<Leases>, u64)>,
}

impl Drop for Admission {
    fn drop(&mut self) {
        if let Some((l, ticket)) = self.leases.take() {
            l.running[ticket as usize % SHARDS].lock().remove(&ticket);
            if l.draining.load(SeqCst) > 0 {
                l.drained.notify_waiters();
            }
        }
    }
}

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
        R::List { .. } | R::ListPage { .. } => Access::List,
        R::Rename { .. }
        | R::Delete { .. }
        | R::Unlink { .. }
        | R::Mount { .. }
        | R::Unmount { .. }
        | R::SetPin { .. }
        | R::SetTtl { .. }
        | R::SetReplicas { .. }
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
    #[allow(clippy::too_many_arguments)]
    fn lock_conflict(
        &mut self,
        client: u64,
        owner: u64,
        inode: u64,
        range: (u64, u64),
        kind: LockKind,
        now: Instant,
        forgot: &mut bool,
    ) -> Option<(RangeLock, Instant)> {
        loop {
            let l = self.locks.get(&inode)?.conflict(client, owner, range.0, range.1, kind)?.clone();
            match self.sessions.get(&l.client).map(|s| s.expires).filter(|e| *e > now) {
                Some(expires) => return Some((l, expires)),
                None => {
                    tracing::warn!(client = l.client, inode, "a lapsed session's locks are dropped");
                    self.forget(l.client);
                    *forgot = true;
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
            if !paths.iter().any(|p| conflicts(dir, p, how)) {
                continue;
            }
            if lease.granting {
                // Its listing is being read: nobody changes it meanwhile.
                let t = now + GRANT_POLL;
                until = Some(until.map_or(t, |u| u.min(t)));
                continue;
            }
            if lease.client == client {
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

impl Table {
    /// Drops every lapsed session with its leases, locks and waits; whether any went.
    fn sweep(&mut self, now: Instant) -> bool {
        let lapsed: Vec<u64> = self.sessions.iter().filter(|(_, s)| s.expires <= now).map(|(c, _)| *c).collect();
        for c in &lapsed {
            self.forget(*c);
        }
        // Leases of clients with no session at all (lapsed before a sweep saw them).
        let before = self.leases.len();
        let sessions = &self.sessions;
        self.leases.retain(|_, l| sessions.contains_key(&l.client));
        self.waiting.retain(|_, w| w.until > now);
        !lapsed.is_empty() || self.leases.len() != before
    }
}

impl Leases {
    /// A fresh table (`restarted`: it replaces one that died in this process).
    pub fn new(journal: Journal, ns: Ns, restarted: bool) -> Self {
        Leases {
            table: Mutex::new(Table::default()),
            changed: Notify::new(),
            running: std::array::from_fn(|_| Mutex::new(HashMap::new())),
            next_ticket: AtomicU64::new(1),
            draining: AtomicUsize::new(0),
            drained: Notify::new(),
            in_use: AtomicBool::new(false),
            term: AtomicU64::new(0),
            restarted,
            journal,
            ns,
        }
    }

    /// Makes the table this leadership's: a new term empties it and, if a
    /// lease was granted in an earlier term (read from the applied state after
    /// a read barrier, so every committed `LeaseTerm` counts; in this term
    /// too when this table replaces one that died), sets the grace.
    async fn this_term(&self) {
        let Some(term) = self.journal.leader_term() else { return };
        if self.term.load(SeqCst) == term {
            return;
        }
        if self.journal.read_barrier().await.is_err() {
            return; // not leading after all: the request fails on its own
        }
        let earlier = match self.ns.call(NamespaceMsg::LeaseTerm).await {
            Ok(Ok(t)) => t,
            // Unknown: assume the worst.
            _ => Some(0),
        };
        let mut t = self.table.lock();
        if t.term.is_some_and(|(x, _)| x == term) {
            return;
        }
        let now = Instant::now();
        let granted_before = earlier.is_some_and(|e| e < term || (self.restarted && e <= term));
        *t = Table {
            term: Some((term, now)),
            grace_until: granted_before.then(|| now + LEASE_TIME),
            ..Table::default()
        };
        if granted_before {
            self.in_use.store(true, SeqCst);
        }
        self.term.store(term, SeqCst);
    }

    fn register(self: &Arc<Self>, paths: &[&str], how: Access) -> Admission {
        let ticket = self.next_ticket.fetch_add(1, SeqCst);
        let r = Running { paths: paths.iter().map(|p| p.to_string()).collect(), how };
        self.running[ticket as usize % SHARDS].lock().insert(ticket, r);
        Admission { leases: Some((self.clone(), ticket)) }
    }

    /// Waits until no other client's lease covers what `req` touches
    /// (recalling those that do), then lets it run: hold the admission while
    /// it does.
    pub async fn admit(self: &Arc<Self>, client: u64, req: &MasterRequest) -> Admission {
        let paths = req.paths();
        if paths.is_empty() {
            return Admission { leases: None };
        }
        let how = access(req);
        self.this_term().await;
        loop {
            let admitted = self.register(&paths, how);
            if !self.in_use.load(SeqCst) {
                return admitted;
            }
            let mut changed = std::pin::pin!(self.changed.notified());
            changed.as_mut().enable();
            let Some(until) = self.table.lock().check(client, &paths, how, Instant::now()) else { return admitted };
            drop(admitted);
            wait(changed, until).await;
        }
    }

    /// Whether a request that touches `dir` is running.
    fn running_under(&self, dir: &str) -> bool {
        self.running.iter().any(|shard| shard.lock().values().any(|r| r.paths.iter().any(|p| conflicts(dir, p, r.how))))
    }

    /// Makes the table this term's and journals the term before its first
    /// grant (of a lease or a lock), so that a later leader keeps a grace.
    async fn journal_term(&self) -> Result<(), ErrorInfo> {
        self.this_term().await;
        if let Some(term) = self.journal.leader_term() {
            if self.table.lock().journaled != Some(term) {
                let entry = JournalEntry::LeaseTerm { term, time_ms: strata_protocol::now_ms() };
                self.journal.propose(entry).await?;
                self.table.lock().journaled = Some(term);
            }
        }
        Ok(())
    }

    /// Grants `client` the lease on `dir` once no other client's lease is in
    /// the way and the requests running there have finished; `list`
    /// answers with the entries while nothing else runs there.
    pub async fn grant<T>(
        &self,
        client: u64,
        dir: &str,
        list: impl AsyncFnOnce() -> Result<T, ErrorInfo>,
    ) -> Result<T, ErrorInfo> {
        if client == 0 {
            return Err(ErrorInfo::new(ErrorCode::InvalidArgument, "a lease needs a client id"));
        }
        self.journal_term().await?;
        let paths = [dir];
        loop {
            let mut changed = std::pin::pin!(self.changed.notified());
            changed.as_mut().enable();
            let until = {
                let mut t = self.table.lock();
                let until = t.check(client, &paths, Access::Subtree, Instant::now());
                if until.is_none() {
                    // The client's own leases below `dir` are subsumed.
                    t.leases.retain(|d, l| l.client != client || !is_under(d, dir));
                    t.leases.insert(dir.to_string(), Lease { client, recalled: None, granting: true });
                    t.session(client, Instant::now());
                    self.in_use.store(true, SeqCst);
                }
                until
            };
            match until {
                None => break,
                Some(until) => wait(changed, until).await,
            }
        }
        // Requests admitted before the lease existed finish first: the
        // listing then holds everything they did.
        self.draining.fetch_add(1, SeqCst);
        loop {
            let mut drained = std::pin::pin!(self.drained.notified());
            drained.as_mut().enable();
            if !self.running_under(dir) {
                break;
            }
            let _ = tokio::time::timeout(GRANT_POLL, drained).await;
        }
        self.draining.fetch_sub(1, SeqCst);
        let r = list().await;
        {
            let mut t = self.table.lock();
            if let Some(l) = t.leases.get_mut(dir).filter(|l| l.client == client) {
                l.granting = false;
            }
        }
        self.changed.notify_waiters();
        if r.is_err() {
            self.release(client, &[dir.to_string()]);
        }
        r
    }

    /// Renews `client`'s session (the caller passed a read barrier) and waits
    /// up to [`HOLD`] for a recall: the directories to give back, and
    /// whether the client must reclaim its locks (it says it holds `locks`
    /// ranges; this master knows fewer of them).
    /// A session this master does not know (it became leader since, or the
    /// session lapsed) is answered with a recall of `/`: the client holds no
    /// lease here.
    pub async fn keep_alive(&self, client: u64, locks: u64) -> (Vec<String>, bool) {
        let wake = {
            let mut t = self.table.lock();
            let now = Instant::now();
            if t.sessions.get(&client).is_none_or(|s| s.expires <= now) {
                t.forget(client);
                drop(t);
                self.changed.notify_waiters();
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
        let recalls =
            self.table.lock().sessions.get_mut(&client).map(|s| std::mem::take(&mut s.recalls)).unwrap_or_default();
        (recalls, false)
    }

    /// `client` gives up its leases on `dirs`.
    pub fn release(&self, client: u64, dirs: &[String]) {
        {
            let mut t = self.table.lock();
            for d in dirs {
                if t.leases.get(d).is_some_and(|l| l.client == client) {
                    t.leases.remove(d);
                }
            }
        }
        self.changed.notify_waiters();
    }

    /// Drops lapsed sessions (with their leases, locks and waits) and lets
    /// requests skip the table again once no lease or grace is left.
    pub fn sweep(&self) {
        let now = Instant::now();
        let went = {
            let mut t = self.table.lock();
            let went = t.sweep(now);
            if t.leases.is_empty() && t.grace_until.is_none_or(|g| g <= now) {
                t.grace_until = None;
                self.in_use.store(false, SeqCst);
            }
            went
        };
        if went {
            self.changed.notify_waiters();
        }
    }

    /// A lock request (see `MasterRequest::Lock`); the caller passed a read
    /// barrier. Unlocks are never held up; a new lock waits out a new
    /// leader's grace, a reclaim does not.
    #[allow(clippy::too_many_arguments)]
    pub async fn lock(
        &self,
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
        self.journal_term().await?;
        let deadline = Instant::now() + LOCK_HOLD;
        loop {
            let mut changed = std::pin::pin!(self.changed.notified());
            changed.as_mut().enable();
            let mut forgot = false;
            let decided = {
                let mut t = self.table.lock();
                let now = Instant::now();
                if t.term.map(|(term, _)| term) != self.journal.leader_term() {
                    return Err(ErrorInfo::new(ErrorCode::Unavailable, "leadership changed; ask again"));
                }
                let grace = t.grace_until.filter(|g| now < *g && kind.is_some() && !reclaim);
                let conflict = match (grace, kind) {
                    (Some(g), _) => Some(g),
                    (None, Some(k)) => match t.lock_conflict(client, owner, inode, range, k, now, &mut forgot) {
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
                    Some(until) => Some((until, grace.is_some())),
                    None => {
                        t.waiting.remove(&(client, owner));
                        locks::set_in(&mut t.locks, inode, (client, owner), range, kind, pid);
                        if kind.is_some() {
                            t.session(client, now);
                        }
                        None
                    }
                }
            };
            if forgot {
                self.changed.notify_waiters();
            }
            let Some((until, grace)) = decided else {
                // An unlock or a downgrade may let a waiter through.
                self.changed.notify_waiters();
                return Ok(());
            };
            // A new leader's grace (at most LEASE_TIME) is waited out by every
            // new lock, so a free range is not refused because holders have
            // not reclaimed yet. A reclaim in the way of another's lock: the
            // other took it while this client was away.
            if !grace && (!may_wait || reclaim || Instant::now() >= deadline) {
                // The client may give up now (a signal): it waits no more here
                // until it asks again.
                self.table.lock().waiting.remove(&(client, owner));
                return Err(ErrorInfo::new(ErrorCode::WouldBlock, format!("inode {inode} is locked by another owner")));
            }
            wait(changed, if grace { until } else { until.min(deadline) }).await;
        }
    }

    /// The lock in the way of `owner` taking `kind` on `range` of `inode`,
    /// answered after a new leader's grace, when the holders have reclaimed.
    pub async fn test_lock(
        &self,
        client: u64,
        inode: u64,
        owner: u64,
        range: (u64, u64),
        kind: LockKind,
    ) -> Option<RangeLock> {
        self.this_term().await;
        let grace = self.table.lock().grace_until;
        if let Some(g) = grace {
            tokio::time::sleep_until(g).await;
        }
        let mut forgot = false;
        let r = self.table.lock().lock_conflict(client, owner, inode, range, kind, Instant::now(), &mut forgot);
        if forgot {
            self.changed.notify_waiters();
        }
        r.map(|(l, _)| l)
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

/// How long a lock request that may wait is held before it is answered
/// `WouldBlock` (the client asks again, after checking that the process
/// waiting has no signal pending).
pub const LOCK_HOLD: Duration = Duration::from_millis(250);

/// Where the running [`LeaseKeeper`] publishes its table for the request path.
#[derive(Clone, Default)]
pub struct LeaseSlot {
    inner: Arc<RwLock<(Option<Arc<Leases>>, u64)>>,
}

impl std::fmt::Debug for LeaseSlot {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LeaseSlot").field("generation", &self.inner.read().1).finish()
    }
}

impl LeaseSlot {
    /// The table, `Unavailable` while the keeper restarts.
    pub fn get(&self) -> Result<Arc<Leases>, ErrorInfo> {
        self.inner.read().0.clone().ok_or_else(|| ErrorInfo::new(ErrorCode::Unavailable, "lease table is restarting"))
    }

    /// Publishes a new table (the slot counts them: more than one is a restart).
    fn publish(&self, leases: Arc<Leases>) {
        let mut g = self.inner.write();
        g.0 = Some(leases);
        g.1 += 1;
    }

    fn withdraw(&self) {
        self.inner.write().0 = None;
    }

    fn generation(&self) -> u64 {
        self.inner.read().1
    }
}

/// The LeaseKeeper's role in its node's registered names.
pub const ROLE: &str = "leases";

/// How often lapsed sessions are swept.
const SWEEP: Duration = Duration::from_secs(1);
/// How often the leader looks for clients gone long enough to forget
/// their batch numbers.
const FORGET_EVERY: Duration = Duration::from_secs(60);
/// How long after its last batch a client's batch number is kept: far
/// beyond the time a client resends a batch (120 s).
const CLIENT_RETENTION_MS: i64 = 3_600_000;

/// Owns the lease and lock table (see the module's doc).
pub struct LeaseKeeper;

/// Start-up arguments.
#[derive(Clone)]
pub struct LeaseKeeperArgs {
    /// Where the table is published.
    pub slot: LeaseSlot,
    /// For the term and the read barrier.
    pub journal: Journal,
    /// For the last term a lease was granted in.
    pub ns: Ns,
}

/// Messages to the LeaseKeeper.
#[derive(RactorMessage)]
pub enum LeaseKeeperMsg {
    /// Sweep lapsed sessions.
    Sweep,
    /// On the leader: journal the forgetting of clients whose last batch
    /// is older than the retention.
    ForgetClients,
}

impl Actor for LeaseKeeper {
    type Msg = LeaseKeeperMsg;
    type State = (Arc<Leases>, LeaseSlot);
    type Arguments = LeaseKeeperArgs;

    async fn pre_start(
        &self,
        myself: ActorRef<Self::Msg>,
        args: LeaseKeeperArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        let restarted = args.slot.generation() > 0;
        let leases = Arc::new(Leases::new(args.journal, args.ns, restarted));
        args.slot.publish(leases.clone());
        myself.send_interval(SWEEP, || LeaseKeeperMsg::Sweep);
        myself.send_interval(FORGET_EVERY, || LeaseKeeperMsg::ForgetClients);
        Ok((leases, args.slot))
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        state.1.withdraw();
        // Whoever waits on the dead table looks again (and finds it gone).
        state.0.changed.notify_waiters();
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            LeaseKeeperMsg::Sweep => state.0.sweep(),
            LeaseKeeperMsg::ForgetClients => {
                let (journal, ns) = (state.0.journal.clone(), state.0.ns.clone());
                tokio::spawn(forget_clients(journal, ns));
            }
        }
        Ok(())
    }
}

/// Forgets (through the journal) the batch numbers of clients whose last
/// batch is older than [`CLIENT_RETENTION_MS`], when this master leads and
/// there are any: the `batch_seen` rows of clients that stopped would
/// otherwise stay for ever.
async fn forget_clients(journal: Journal, ns: Ns) {
    if journal.leader_term().is_none() {
        return;
    }
    let before_ms = strata_protocol::now_ms() - CLIENT_RETENTION_MS;
    let Ok(Ok(n)) = ns.call(|r| NamespaceMsg::ClientsSeenBefore(before_ms, r)).await else { return };
    if n == 0 {
        return;
    }
    let entry = JournalEntry::ForgetClients { before_ms, time_ms: strata_protocol::now_ms() };
    match journal.propose(entry).await {
        Ok(_) => tracing::info!(clients = n, "forgot the batch numbers of clients gone for an hour"),
        Err(e) => tracing::debug!(error = %e, "forgetting old clients' batch numbers"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table() -> Arc<Leases> {
        let fatal = Arc::new(tokio::sync::watch::channel(None).0);
        Arc::new(Leases::new(Journal::new("test.journal".into(), fatal), Ns::new("test.namespace".into()), false))
    }

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
        let l = table();
        let (holder, other) = (11, 12);
        l.grant(holder, "/lease-test", async || Ok(())).await.unwrap();
        // The holder itself is not held up by its own lease.
        let stat = MasterRequest::Stat { path: "/lease-test/f".into() };
        drop(l.admit(holder, &stat).await);
        // Another client waits; the holder hears the recall, then releases.
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { drop(l.admit(other, &stat).await) }
        });
        let (recalled, _) = l.keep_alive(holder, 0).await;
        assert_eq!(recalled, vec!["/lease-test".to_string()]);
        assert!(!waiter.is_finished());
        l.release(holder, &recalled);
        tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap();
        // Unrelated paths never wait.
        drop(l.admit(other, &MasterRequest::Stat { path: "/elsewhere".into() }).await);
    }

    #[tokio::test]
    async fn an_unknown_session_holds_nothing() {
        let l = table();
        // A new leader (or a lapsed session): the client is told to drop everything.
        assert_eq!(l.keep_alive(31, 0).await, (vec!["/".to_string()], false));
        l.grant(31, "/known-test", async || Ok(())).await.unwrap();
        let t0 = Instant::now();
        assert_eq!(l.keep_alive(31, 0).await, (vec![], false), "held, nothing recalled");
        assert!(t0.elapsed() >= HOLD - Duration::from_millis(50));
    }

    #[tokio::test]
    async fn locks_conflict_wait_and_go_with_their_session() {
        let l = table();
        let (a, b, inode) = (41, 42, 4200);
        let w = Some(LockKind::Write);
        l.lock(a, inode, 1, (0, 99), w, 1, false, false).await.unwrap();
        let e = l.lock(b, inode, 1, (50, 50), Some(LockKind::Read), 2, false, false).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::WouldBlock);
        let held = l.test_lock(b, inode, 1, (0, 0), LockKind::Read).await.map(|l| (l.client, l.start, l.end));
        assert_eq!(held, Some((a, 0, 99)));
        // A waiting request is let through by the unlock, not by the hold running out.
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { l.lock(b, inode, 1, (0, 10), w, 2, true, false).await }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        let t0 = Instant::now();
        l.lock(a, inode, 1, (0, u64::MAX), None, 1, false, false).await.unwrap();
        waiter.await.unwrap().unwrap();
        assert!(t0.elapsed() < LOCK_HOLD / 2, "{:?}", t0.elapsed());
        // b sends no keep-alives: a gets the range once b's session lapses.
        let t0 = Instant::now();
        while let Err(e) = l.lock(a, inode, 1, (0, 10), w, 1, true, false).await {
            assert_eq!(e.code, ErrorCode::WouldBlock);
            assert!(t0.elapsed() < LEASE_TIME + Duration::from_secs(1), "b's lock outlived its session");
        }
        assert!(t0.elapsed() >= LEASE_TIME - Duration::from_millis(300), "{:?}", t0.elapsed());
        assert_eq!(l.keep_alive(b, 1).await, (vec!["/".to_string()], true), "b is told to reclaim");
        // A client that holds more than the master knows of is told to reclaim.
        assert_eq!(l.keep_alive(a, 2).await, (vec![], true));
        assert_eq!(l.keep_alive(a, 1).await, (vec![], false));
    }

    #[tokio::test]
    async fn a_wait_that_would_close_a_cycle_is_a_deadlock() {
        let l = table();
        let (a, b, c, inode) = (51, 52, 53, 5300);
        let w = Some(LockKind::Write);
        l.lock(a, inode, 1, (0, 9), w, 1, false, false).await.unwrap();
        l.lock(b, inode, 1, (10, 19), w, 2, false, false).await.unwrap();
        l.lock(c, inode, 1, (20, 29), w, 3, false, false).await.unwrap();
        // The leader holds `who`'s request (its wait is recorded).
        let held = |who: u64| {
            let l = l.clone();
            async move {
                while !l.table.lock().waiting.contains_key(&(who, 1)) {
                    tokio::time::sleep(Duration::from_millis(1)).await;
                }
            }
        };
        // a waits for b; c waits for a: a chain, no cycle.
        let a_waits = tokio::spawn({
            let l = l.clone();
            async move { l.lock(a, inode, 1, (10, 19), w, 1, true, false).await }
        });
        held(a).await;
        let c_waits = tokio::spawn({
            let l = l.clone();
            async move { l.lock(c, inode, 1, (5, 5), w, 3, true, false).await }
        });
        held(c).await;
        assert!(!a_waits.is_finished() && !c_waits.is_finished());
        // b waiting for c would close b → c → a → b.
        let e = l.lock(b, inode, 1, (25, 25), w, 2, true, false).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::Deadlock, "{e:?}");
        // Without waiting it is only refused.
        let e = l.lock(b, inode, 1, (25, 25), w, 2, false, false).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::WouldBlock);
        // b unlocks: a gets its range, and c still waits for a.
        l.lock(b, inode, 1, (0, u64::MAX), None, 2, false, false).await.unwrap();
        a_waits.await.unwrap().unwrap();
        // c's hold ends (its process may give up now): a may wait for c at once.
        assert_eq!(c_waits.await.unwrap().unwrap_err().code, ErrorCode::WouldBlock);
        let e = l.lock(a, inode, 1, (20, 29), w, 1, true, false).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::WouldBlock, "a held wait, not a deadlock: {e:?}");
    }

    #[tokio::test]
    async fn a_lapsed_session_frees_its_directories() {
        let l = table();
        let (holder, other) = (21, 22);
        l.grant(holder, "/lapse-test", async || Ok(())).await.unwrap();
        let t0 = Instant::now();
        // No keep-alives: the lease lapses after LEASE_TIME at most.
        drop(l.admit(other, &MasterRequest::List { path: "/lapse-test".into() }).await);
        let waited = t0.elapsed();
        assert!(waited <= LEASE_TIME + Duration::from_millis(500), "{waited:?}");
    }

    #[tokio::test]
    async fn a_grant_waits_for_requests_running_under_its_directory() {
        let l = table();
        let (holder, other) = (61, 62);
        // `other` is admitted while no lease exists, and is still running.
        let running = l.admit(other, &MasterRequest::Stat { path: "/g/x".into() }).await;
        let unrelated = l.admit(other, &MasterRequest::Stat { path: "/elsewhere".into() }).await;
        let listed = Arc::new(AtomicBool::new(false));
        let grant = tokio::spawn({
            let (l, listed) = (l.clone(), listed.clone());
            async move {
                l.grant(holder, "/g", async || {
                    listed.store(true, SeqCst);
                    Ok(())
                })
                .await
            }
        });
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert!(!listed.load(SeqCst), "the listing waits for the request running under /g");
        // A new request there waits for the grant (the lease is being granted).
        let waiter = tokio::spawn({
            let l = l.clone();
            async move { drop(l.admit(holder, &MasterRequest::Stat { path: "/g/y".into() }).await) }
        });
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!waiter.is_finished());
        drop(unrelated);
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(!listed.load(SeqCst), "an unrelated request finishing changes nothing");
        drop(running);
        tokio::time::timeout(Duration::from_secs(2), grant).await.unwrap().unwrap().unwrap();
        assert!(listed.load(SeqCst));
        // The holder's own request goes on once the lease is granted.
        tokio::time::timeout(Duration::from_secs(2), waiter).await.unwrap().unwrap();
    }

    #[tokio::test]
    async fn a_sweep_forgets_lapsed_sessions_with_their_leases_and_locks() {
        let l = table();
        let (a, b) = (71, 72);
        l.grant(a, "/sweep", async || Ok(())).await.unwrap();
        l.lock(a, 7100, 1, (0, 9), Some(LockKind::Write), 1, false, false).await.unwrap();
        l.sweep();
        assert_eq!(l.table.lock().sessions.len(), 1, "a live session stays");
        assert!(l.in_use.load(SeqCst));
        tokio::time::sleep(LEASE_TIME + Duration::from_millis(100)).await;
        l.sweep();
        {
            let t = l.table.lock();
            assert!(t.sessions.is_empty() && t.leases.is_empty() && t.locks.is_empty());
        }
        assert!(!l.in_use.load(SeqCst), "requests skip the table again");
        // b takes the lock at once, and a is told to drop everything.
        l.lock(b, 7100, 1, (0, 9), Some(LockKind::Write), 2, false, false).await.unwrap();
        assert_eq!(l.keep_alive(a, 1).await, (vec!["/".to_string()], true));
    }
}
