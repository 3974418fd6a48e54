//! The MountSyncer: the leader's background work on mounts (async-through
//! persists with retries and back-off, TTLs, the re-drive of recorded UFS
//! operations).

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use ractor::{Actor, ActorProcessingErr, ActorRef};
use ractor_cluster::RactorMessage;
use strata_protocol::messages::FileType;
use strata_protocol::ufs::WriteType;
use strata_protocol::ErrorInfo;

use super::super::namespace_actor::NamespaceMsg;
use super::{Mounts, MAX_BACKOFF};

/// The MountSyncer's role in its node's registered names.
pub const ROLE: &str = "mountsyncer";

/// Messages to the MountSyncer.
#[derive(RactorMessage)]
pub enum SyncerMsg {
    /// A file under an async-through mount was written.
    Enqueue(String),
    /// Periodic work.
    Tick,
    /// A pass of the background work finished; its state comes back.
    PassDone(Box<Background>),
}

/// The MountSyncer: persists async-through files on the leader. Its queue
/// is soft state: on becoming leader (and every `RESCAN` after) it scans the
/// async-through mounts for complete files not yet persisted, so nothing is
/// forgotten across a failover or a restart.
pub struct MountSyncer;

/// State.
pub struct SyncerState {
    mounts: Mounts,
    /// The background work's state, here between passes; `None` while a
    /// pass runs (the pass owns it and hands it back with `PassDone`).
    idle: Option<Box<Background>>,
    /// Files enqueued while a pass runs.
    enqueued: Vec<String>,
    /// The running pass, aborted if this actor dies.
    _pass: Option<crate::net::AbortOnDrop>,
}

/// The leader's background work on mounts, carried from pass to pass.
#[derive(Default)]
pub struct Background {
    queue: BTreeMap<String, (u32, Instant)>,
    leader: bool,
    last_scan: Option<Instant>,
    last_ttl: Option<Instant>,
    last_intents: Option<Instant>,
    intent_retry: HashMap<u64, (u32, Instant)>,
}

/// How often the leader looks for files whose TTL expired.
const TTL_CHECK: Duration = Duration::from_secs(1);
/// How often the leader looks for recorded UFS operations left unfinished.
const INTENT_CHECK: Duration = Duration::from_secs(2);

const RESCAN: Duration = Duration::from_secs(30);

impl Actor for MountSyncer {
    type Msg = SyncerMsg;
    type State = SyncerState;
    type Arguments = Mounts;

    async fn pre_start(&self, myself: ActorRef<Self::Msg>, mounts: Mounts) -> Result<Self::State, ActorProcessingErr> {
        myself.send_interval(Duration::from_millis(500), || SyncerMsg::Tick);
        Ok(SyncerState { mounts, idle: Some(Box::default()), enqueued: Vec::new(), _pass: None })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            SyncerMsg::Enqueue(p) => match st.idle.as_mut() {
                Some(bg) => {
                    bg.queue.insert(p, (0, Instant::now()));
                }
                None => st.enqueued.push(p),
            },
            SyncerMsg::Tick => {
                // The pass runs in a task of its own: the mailbox keeps
                // taking files while a slow UFS persists one.
                let Some(mut bg) = st.idle.take() else { return Ok(()) };
                let mounts = st.mounts.clone();
                st._pass = Some(crate::net::AbortOnDrop(tokio::spawn(async move {
                    bg.pass(&mounts).await;
                    let _ = myself.cast(SyncerMsg::PassDone(bg));
                })));
            }
            SyncerMsg::PassDone(mut bg) => {
                for p in st.enqueued.drain(..) {
                    bg.queue.insert(p, (0, Instant::now()));
                }
                st.idle = Some(bg);
                st._pass = None;
            }
        }
        Ok(())
    }
}

impl Background {
    /// One pass of the leader's work; a follower forgets its queue.
    async fn pass(&mut self, mounts: &Mounts) {
        let leader = mounts.journal.read_barrier().await.is_ok();
        if !leader {
            self.leader = false;
            self.queue.clear();
            self.intent_retry.clear();
            return;
        }
        if !self.leader || self.last_intents.is_none_or(|t| t.elapsed() >= INTENT_CHECK) {
            // First thing as a new leader: finish what a crashed one left.
            self.last_intents = Some(Instant::now());
            if let Err(e) = mounts.redrive_all(&mut self.intent_retry).await {
                tracing::warn!(error = %e, "re-driving recorded UFS operations failed");
            }
        }
        if !self.leader || self.last_scan.is_none_or(|t| t.elapsed() > RESCAN) {
            self.leader = true;
            self.last_scan = Some(Instant::now());
            if let Err(e) = mounts.scan(&mut self.queue).await {
                tracing::warn!(error = %e, "scanning async-through mounts failed");
            }
        }
        if self.last_ttl.is_none_or(|t| t.elapsed() >= TTL_CHECK) {
            self.last_ttl = Some(Instant::now());
            if let Err(e) = mounts.ttl_pass().await {
                tracing::warn!(error = %e, "TTL pass failed");
            }
        }
        let now = Instant::now();
        let due: Vec<String> = self.queue.iter().filter(|(_, (_, at))| *at <= now).map(|(p, _)| p.clone()).collect();
        for p in due {
            match mounts.persist_path(&p).await {
                Ok(()) => {
                    self.queue.remove(&p);
                }
                Err(e) => {
                    let Some((attempts, at)) = self.queue.get_mut(&p) else { continue };
                    *attempts += 1;
                    let backoff = Duration::from_millis(200u64 << (*attempts).min(8)).min(MAX_BACKOFF);
                    *at = Instant::now() + backoff;
                    tracing::warn!(path = %p, attempts = *attempts, ?backoff, error = %e, "async persist failed; retrying");
                }
            }
        }
    }
}

impl Mounts {
    pub(super) async fn scan(&self, queue: &mut BTreeMap<String, (u32, Instant)>) -> Result<(), ErrorInfo> {
        for m in self.mounts().await? {
            if m.options.write_type != WriteType::AsyncThrough {
                continue;
            }
            for (p, rec) in self.ns.call(|r| NamespaceMsg::Walk(m.path.clone(), r)).await?? {
                if rec.attr.file_type == FileType::File && rec.attr.complete && !rec.is_persisted() {
                    queue.entry(p).or_insert((0, Instant::now()));
                }
            }
        }
        Ok(())
    }
}
