//! The lease view: what this mount knows of the directory leases its
//! client holds (`Client::lease`). While the client holds a directory's
//! lease, the mount knows every entry of the directories it made or
//! listed there ([`LeaseView::known_dir`]) and answers lookups, listings
//! and creates itself; a name it does not know there is absent, and the
//! kernel is told so with negative entries ([`LeaseView::absent`]) that a
//! recall takes back before the lease is released.

use std::collections::{HashMap, VecDeque};
use std::ffi::{OsStr, OsString};
use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use fuser::INodeNo;
use parking_lot::Mutex;
use strata_client::Client;

/// Negative entries handed to the kernel and not yet expired beyond this
/// many: lookups are answered without one (a plain ENOENT).
const MAX_NEGATIVES: usize = 65_536;

/// How long after its TTL a negative entry is still invalidated at a recall.
const NEGATIVE_MARGIN: Duration = Duration::from_millis(100);

/// Names this mount told the kernel are absent from a leased directory,
/// with when the kernel's negative entry expires and the directory's inode.
type Negatives = Arc<Mutex<VecDeque<(Instant, u64, OsString)>>>;

/// The lease view part of [`super::StrataFs`]: the known directories and
/// the negative entries, each under its own lock (neither is held while
/// another lock is taken).
pub(super) struct LeaseView {
    client: Client,
    ttl: Duration,
    /// Directories whose every entry this mount knows (names in the path
    /// table, attributes in the attribute cache), with the generation of
    /// the lease under which it learnt them: while the client holds that
    /// lease, lookups, listings and creates there are answered here and
    /// the changes queued (see [`Client::lease`]).
    known: Mutex<HashMap<u64, u64>>,
    /// Negative entries the kernel holds of leased directories (git and
    /// rsync look a name up again before creating or renaming to it: 14k
    /// of the workload's 32k failed lookups were repeats). Nothing can
    /// appear there but through this mount while the lease holds; a
    /// recall drops them from the kernel before the lease is released,
    /// and none outlives the lease's validity (which ends before the
    /// master may give the directory to anyone else).
    negatives: Negatives,
}

impl LeaseView {
    /// The view of `client`'s leases; its recalls drop the negative entries
    /// through `notifier` (set once the session exists).
    pub(super) fn new(client: &Client, ttl: Duration, notifier: Arc<OnceLock<fuser::Notifier>>) -> Self {
        let negatives = Negatives::default();
        let neg = negatives.clone();
        client.on_recall(Arc::new(move || forget_negatives(&neg, &notifier)));
        LeaseView { client: client.clone(), ttl, known: Mutex::new(HashMap::new()), negatives }
    }

    /// The lease generation under which this mount knows every entry of
    /// directory `dir` (at `path`), if the client still holds that lease.
    pub(super) fn known_dir(&self, dir: u64, path: &str) -> Option<u64> {
        let g = *self.known.lock().get(&dir)?;
        (self.client.lease_of(path) == Some(g)).then_some(g)
    }

    /// Every entry of directory `dir` is known here under lease generation `g`.
    pub(super) fn know(&self, dir: u64, g: u64) {
        self.known.lock().insert(dir, g);
    }

    /// The entries of directory `dir` are no longer all known here.
    pub(super) fn unknow(&self, dir: u64) {
        self.known.lock().remove(&dir);
    }

    /// How long the kernel may keep `name` in `parent` (at `dir`, known
    /// under lease generation `g`) as absent: what is left of the TTL and
    /// of the lease's validity. Checked and recorded under one lock, which
    /// a recall's [`forget_negatives`] takes after the lease stopped being
    /// used: a negative entry made under the lease is either in the list
    /// it invalidates or made after, and then not made at all.
    pub(super) fn absent(&self, parent: u64, name: &OsStr, dir: &str, g: u64) -> Duration {
        let mut neg = self.negatives.lock();
        let now = Instant::now();
        while neg.front().is_some_and(|(until, _, _)| *until + NEGATIVE_MARGIN <= now) {
            neg.pop_front();
        }
        let Some(left) = self.client.lease_left(dir).filter(|(lg, _)| *lg == g).map(|(_, left)| left) else {
            return Duration::ZERO;
        };
        if neg.len() >= MAX_NEGATIVES {
            return Duration::ZERO;
        }
        let ttl = left.min(self.ttl);
        neg.push_back((now + ttl, parent, name.to_owned()));
        ttl
    }
}

/// Drops from the kernel every negative entry this mount gave it that may
/// still be in use (leases were recalled: the names may appear elsewhere).
fn forget_negatives(negatives: &Negatives, notifier: &OnceLock<fuser::Notifier>) {
    let gone = std::mem::take(&mut *negatives.lock());
    let Some(n) = notifier.get() else { return };
    let now = Instant::now();
    for (until, parent, name) in gone {
        // The kernel's expiry counts from when it took the reply, a little
        // after `until` was set.
        if until + NEGATIVE_MARGIN > now {
            let _ = n.inval_entry(INodeNo(parent), &name);
        }
    }
}
