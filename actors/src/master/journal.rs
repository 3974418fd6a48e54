//! JournalActor: this master's member of the Raft group (openraft). It owns
//! the `Raft` handle; mutations are proposed here and answered only after
//! their entry is committed and applied.
//!
//! The group's RPCs travel over the mesh (`raft_net`). The master with the
//! lowest id among the initial members initializes the group on first start;
//! the others wait to be contacted. Masters are added (learner, caught up,
//! then voter) and removed at run time through the leader's JournalActor,
//! one change at a time.

use std::collections::{BTreeMap, BTreeSet};
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use openraft::error::{ClientWriteError, RaftError};
use openraft::{ChangeMembers, Config, ServerState, SnapshotPolicy};
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use rocksdb::DB;
use strata_protocol::journal::{ApplyResult, JournalEntry};
use strata_protocol::messages::{JournalInfo, MasterStatus};
use strata_protocol::{ErrorCode, ErrorInfo};
use tokio::sync::Mutex;

use super::namespace_actor::ActorNamespace;
use super::raft::{LogStore, MasterNode, NodeId, Raft, StateMachine};
use super::raft_net::{self, MeshNetwork};

/// The JournalActor's role in its node's registered names.
pub const ROLE: &str = "journal";

/// Messages to the JournalActor.
#[derive(RactorMessage)]
pub enum JournalMsg {
    /// Propose an entry; answered with its apply result once committed.
    /// This master's Raft status.
    Status(RpcReplyPort<MasterStatus>),
    /// Every member as this master sees it (complete on the leader).
    Members(RpcReplyPort<Vec<MasterStatus>>),
    /// The membership as this master knows it (for mesh joins and workers).
    Membership(RpcReplyPort<MembershipView>),
    /// On the leader: add master `id` as a learner, wait until it has caught
    /// up, then make it a voter.
    AddMaster(NodeId, MasterNode, RpcReplyPort<Result<(), ErrorInfo>>),
    /// On the leader: remove master `id` from the group and tell it so.
    RemoveMaster(NodeId, RpcReplyPort<Result<(), ErrorInfo>>),
    /// This master's journal; with `true`, a digest of its state machine too.
    Info(bool, RpcReplyPort<Result<JournalInfo, ErrorInfo>>),
}

/// The membership in this master's latest (possibly uncommitted) config.
#[derive(Debug, Clone, Default)]
pub struct MembershipView {
    /// Every member, voters and learners.
    pub nodes: BTreeMap<NodeId, MasterNode>,
    /// The voters.
    pub voters: BTreeSet<NodeId>,
    /// This config is applied here, hence committed: it cannot be truncated
    /// away by a new leader.
    pub committed: bool,
}

/// How long the leader waits for a new master to catch up before giving up
/// (it stays a learner; `add` can be repeated).
const CATCH_UP_TIMEOUT: Duration = Duration::from_secs(20);

/// A learner at most this many entries behind the leader has caught up.
const CATCH_UP_LAG: u64 = 100;

/// Start-up arguments.
#[derive(Clone)]
pub struct JournalArgs {
    /// This master's Raft id.
    pub node_id: NodeId,
    /// This master's client address (shown in reports, used for redirects).
    pub client_addr: String,
    /// Initial voters and their addresses.
    pub members: BTreeMap<NodeId, MasterNode>,
    /// Join an existing group (wait to be added) instead of initializing one.
    pub join: bool,
    /// The state machine's database.
    pub db: Arc<DB>,
    /// The Raft log's database.
    pub log_db: Arc<DB>,
    /// Where snapshots are kept.
    pub snapshot_dir: PathBuf,
    /// Take a snapshot after this many entries.
    pub snapshot_entries: u64,
    /// Log entries kept behind the latest snapshot (the rest are purged; a
    /// follower further behind catches up by installing the snapshot).
    pub log_keep: u64,
    /// A Raft instance left by a previous incarnation of this actor, shut
    /// down before a new one opens the same store.
    pub slot: Arc<Mutex<Option<Raft>>>,
    /// Where the running `Raft` is published for the request path.
    pub journal: Journal,
    /// What the state machine applies through.
    pub namespace: ActorNamespace,
    /// Test hook: stop the Raft core this long after start (see `faults`).
    pub stop_core_after: Option<Duration>,
    /// When a leader was last heard from (kept by the RaftServer).
    pub heard: Arc<super::prevote::Heard>,
}

/// The actor.
pub struct JournalActor;

/// Actor state.
pub struct JournalState {
    raft: Raft,
    args: JournalArgs,
    /// Withdraws the published `Raft` and stops watching the core however
    /// this incarnation ends (a kill skips `post_stop`).
    published: Published,
}

/// This incarnation's `Raft` as published in the [`Journal`], with the task
/// watching its core. Dropped: withdrawn (unless a later incarnation took
/// over meanwhile) and unwatched.
struct Published {
    journal: Journal,
    gen: u64,
    watch: tokio::task::JoinHandle<()>,
    /// The pre-vote loop that triggers this incarnation's elections.
    elector: tokio::task::JoinHandle<()>,
}

impl Drop for Published {
    fn drop(&mut self) {
        self.watch.abort();
        self.elector.abort();
        self.journal.publish(self.gen, None);
    }
}

/// Maps an openraft error to a wire error: `NotLeader` carries the leader's
/// client address when known.
fn raft_error(
    forward: Option<&openraft::error::ForwardToLeader<NodeId, MasterNode>>,
    e: &dyn std::fmt::Display,
) -> ErrorInfo {
    if let Some(f) = forward {
        let leader = f.leader_node.as_ref().map(|n| n.addr.clone()).unwrap_or_default();
        return ErrorInfo::new(ErrorCode::NotLeader, leader);
    }
    ErrorInfo::new(ErrorCode::Unavailable, e.to_string())
}

impl Actor for JournalActor {
    type Msg = JournalMsg;
    type State = JournalState;
    type Arguments = JournalArgs;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        args: JournalArgs,
    ) -> Result<Self::State, ActorProcessingErr> {
        // Taken over first: the old core's watcher (which a kill leaves
        // running) does not take its shutdown below for a failure.
        let gen = args.journal.take_over();
        let mut slot = args.slot.lock().await;
        if let Some(old) = slot.take() {
            let _ = old.shutdown().await;
        }
        let config = Config {
            cluster_name: "strata".into(),
            heartbeat_interval: 100,
            election_timeout_min: super::prevote::ELECTION_TIMEOUT.start,
            election_timeout_max: super::prevote::ELECTION_TIMEOUT.end,
            // Elections are triggered after a won pre-vote (`prevote::run`).
            enable_elect: false,
            snapshot_policy: SnapshotPolicy::LogsSinceLast(args.snapshot_entries),
            max_in_snapshot_log_to_keep: args.log_keep,
            ..Default::default()
        }
        .validate()?;
        let sm = StateMachine::new(args.namespace.clone(), &args.snapshot_dir)?;
        sm.prepare().await.map_err(|e| format!("readying the journal's snapshots: {e}"))?;
        let raft =
            Raft::new(args.node_id, Arc::new(config), MeshNetwork, LogStore::new(args.log_db.clone()), sm).await?;
        let first = args.members.keys().next().copied().unwrap_or(args.node_id);
        if !args.join && first == args.node_id && !raft.is_initialized().await? {
            raft.initialize(args.members.clone()).await.map_err(|e| format!("initializing the journal: {e}"))?;
        }
        *slot = Some(raft.clone());
        drop(slot);
        args.journal.publish(gen, Some(raft.clone()));
        let watch = tokio::spawn(watch_core(raft.clone(), args.journal.clone(), gen, args.stop_core_after));
        let elector = tokio::spawn(super::prevote::run(
            raft.clone(),
            args.node_id,
            args.heard.clone(),
            args.log_db.clone(),
            super::raft_net::MeshAsk,
        ));
        let published = Published { journal: args.journal.clone(), gen, watch, elector };
        Ok(JournalState { raft, args, published })
    }

    async fn post_stop(&self, _myself: ActorRef<Self::Msg>, state: &mut Self::State) -> Result<(), ActorProcessingErr> {
        state.published.watch.abort();
        state.published.elector.abort();
        state.args.journal.publish(state.published.gen, None);
        let _ = state.raft.shutdown().await;
        // State-machine writes skip the WAL (they are replayed from the
        // log after a crash); a clean stop leaves them on disk.
        if let Err(e) = super::store::persist_state(&state.args.db) {
            tracing::warn!(error = %e, "flushing the metadata store's state at stop");
        }
        *state.args.slot.lock().await = None;
        Ok(())
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        state: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            JournalMsg::Status(reply) => {
                let _ = reply.send(self_status(state));
            }
            JournalMsg::Members(reply) => {
                let me = self_status(state);
                let m = state.raft.metrics().borrow().clone();
                let membership = m.membership_config.membership();
                let mut out = vec![me.clone()];
                for (id, node) in membership.nodes() {
                    if *id == m.id {
                        continue;
                    }
                    let voter = membership.voter_ids().any(|v| v == *id);
                    // The leader knows how far each follower's log matches its own.
                    let matched = m.replication.as_ref().and_then(|r| r.get(id).cloned().flatten()).map(|l| l.index);
                    let role = match (me.role == "leader", voter) {
                        (true, true) => "follower",
                        (true, false) => "learner",
                        (false, _) => "unknown",
                    };
                    out.push(MasterStatus {
                        id: *id,
                        addr: node.addr.clone(),
                        role: role.into(),
                        voter,
                        term: me.term,
                        last_log_index: matched.unwrap_or(0),
                        applied_index: matched.unwrap_or(0),
                        leader: me.leader,
                    });
                }
                out.sort_by_key(|s| s.id);
                let _ = reply.send(out);
            }
            JournalMsg::Membership(reply) => {
                let m = state.raft.metrics().borrow().clone();
                let membership = m.membership_config.membership();
                let _ = reply.send(MembershipView {
                    nodes: membership.nodes().map(|(id, n)| (*id, n.clone())).collect(),
                    voters: membership.voter_ids().collect(),
                    committed: m.membership_config.log_id().map(|l| l.index) <= m.last_applied.map(|l| l.index),
                });
            }
            JournalMsg::AddMaster(id, node, reply) => {
                let raft = state.raft.clone();
                tokio::spawn(async move {
                    let _ = reply.send(add_master(&raft, id, node).await);
                });
            }
            JournalMsg::RemoveMaster(id, reply) => {
                let raft = state.raft.clone();
                let me = state.args.node_id;
                tokio::spawn(async move {
                    let _ = reply.send(remove_master(&raft, me, id).await);
                });
            }
            JournalMsg::Info(digest, reply) => {
                let status = self_status(state);
                let m = state.raft.metrics().borrow().clone();
                let mut info = JournalInfo {
                    status,
                    snapshot_index: m.snapshot.map(|l| l.index).unwrap_or(0),
                    purged_index: m.purged.map(|l| l.index).unwrap_or(0),
                    digest: None,
                };
                if !digest {
                    let _ = reply.send(Ok(info));
                    return Ok(());
                }
                // A walk over the whole state: off the actor's task.
                let db = state.args.db.clone();
                tokio::task::spawn_blocking(move || {
                    let r = super::namespace::state_digest(&db)
                        .map_err(|e| ErrorInfo::new(ErrorCode::Internal, e.to_string()));
                    let _ = reply.send(r.map(|d| {
                        info.digest = Some(d);
                        info
                    }));
                });
            }
        }
        Ok(())
    }
}

/// Watches the Raft core: openraft stops it on a storage error (an apply
/// that failed or took too long, a log write that failed) and then answers
/// nothing but `Fatal` errors. Such a master is a zombie: it still holds
/// its ports but cannot commit, vote or serve a read. It is reported to the
/// node (which exits non-zero) instead. This task is aborted before the
/// actor shuts the core down itself.
async fn watch_core(raft: Raft, journal: Journal, gen: u64, stop_after: Option<Duration>) {
    if let Some(after) = stop_after {
        let r = raft.clone();
        tokio::spawn(async move {
            tokio::time::sleep(after).await;
            tracing::warn!("fault injection: stopping the Raft core");
            let _ = r.shutdown().await;
        });
    }
    let mut metrics = raft.metrics();
    loop {
        if metrics.borrow_and_update().state == ServerState::Shutdown {
            break;
        }
        if metrics.changed().await.is_err() {
            break;
        }
    }
    if !journal.current(gen) {
        return; // a later incarnation shut this core down to replace it
    }
    let why = metrics.borrow().running_state.as_ref().err().map(|e| e.to_string());
    journal.core_stopped(why.unwrap_or_else(|| "the Raft core shut down".into()));
}

fn membership_error(e: RaftError<NodeId, ClientWriteError<NodeId, MasterNode>>) -> ErrorInfo {
    match &e {
        RaftError::APIError(ClientWriteError::ChangeMembershipError(c)) => {
            ErrorInfo::new(ErrorCode::InvalidState, format!("membership change refused: {c}"))
        }
        _ => raft_error(e.forward_to_leader(), &e),
    }
}

/// Adds a master: learner first (the leader replicates the log to it and
/// waits until it has caught up), then voter. One change at a time: openraft
/// refuses a change while another is in its joint phase.
async fn add_master(raft: &Raft, id: NodeId, node: MasterNode) -> Result<(), ErrorInfo> {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    if let Some(known) = membership.get_node(&id) {
        if *known != node {
            return Err(ErrorInfo::new(
                ErrorCode::AlreadyExists,
                format!("master {id} is already a member at {known}; remove it first"),
            ));
        }
        if membership.voter_ids().any(|v| v == id) {
            return Ok(());
        }
    }
    tracing::info!(id, %node, "adding a master: learner until it has caught up");
    let added = raft.add_learner(id, node, false).await.map_err(membership_error)?;
    // openraft's own blocking wait counts a learner within 5,000 entries as
    // caught up (even one that has nothing yet); wait for the learner to hold
    // the log up to its own addition and be no more than a few entries behind.
    let target = added.log_id.index;
    let caught_up = raft
        .wait(Some(CATCH_UP_TIMEOUT))
        .metrics(
            |m| {
                let matched = m.replication.as_ref().and_then(|r| r.get(&id).cloned().flatten()).map(|l| l.index);
                matched.is_some_and(|i| i >= target && m.last_log_index.unwrap_or(0).saturating_sub(i) <= CATCH_UP_LAG)
            },
            "the new master catches up",
        )
        .await;
    if caught_up.is_err() {
        return Err(ErrorInfo::new(
            ErrorCode::Timeout,
            format!(
                "master {id} did not catch up within {CATCH_UP_TIMEOUT:?} (is it running with --join, on that mesh \
                 address, and is this master still the leader?); it stays a learner"
            ),
        ));
    }
    raft.change_membership(ChangeMembers::AddVoterIds(BTreeSet::from([id])), false).await.map_err(membership_error)?;
    tracing::info!(id, "master added as a voter");
    Ok(())
}

/// Removes a master from the group (voter or learner) and tells it to stop.
async fn remove_master(raft: &Raft, me: NodeId, id: NodeId) -> Result<(), ErrorInfo> {
    let m = raft.metrics().borrow().clone();
    let membership = m.membership_config.membership();
    if membership.get_node(&id).is_none() {
        return Err(ErrorInfo::new(ErrorCode::NotFound, format!("master {id} is not a member")));
    }
    let voters: BTreeSet<NodeId> = membership.voter_ids().collect();
    if voters.len() == 1 && voters.contains(&id) {
        return Err(ErrorInfo::new(ErrorCode::InvalidArgument, format!("master {id} is the last voter")));
    }
    if voters.contains(&id) {
        raft.change_membership(ChangeMembers::RemoveVoters(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
    } else {
        raft.change_membership(ChangeMembers::RemoveNodes(BTreeSet::from([id])), false)
            .await
            .map_err(membership_error)?;
    }
    tracing::info!(id, "master removed from the group");
    if id == me {
        // Answer the caller first; the process then stops.
        tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(500)).await;
            raft_net::tell_removed(id);
        });
    } else {
        raft_net::tell_removed(id);
    }
    Ok(())
}

fn self_status(state: &JournalState) -> MasterStatus {
    let m = state.raft.metrics().borrow().clone();
    let role = match m.state {
        ServerState::Leader => "leader",
        ServerState::Follower => "follower",
        ServerState::Candidate => "candidate",
        ServerState::Learner => "learner",
        ServerState::Shutdown => "shutdown",
    };
    MasterStatus {
        id: m.id,
        addr: state.args.client_addr.clone(),
        role: role.to_string(),
        term: m.current_term,
        last_log_index: m.last_log_index.unwrap_or(0),
        applied_index: m.last_applied.map(|l| l.index).unwrap_or(0),
        leader: m.current_leader,
        voter: m.membership_config.membership().voter_ids().any(|v| v == m.id),
    }
}

/// Whether this master is the group's only voter, leading, with everything
/// in its log applied: then no other master can have committed anything
/// (it would need this one's vote), every acknowledged write is applied
/// (writes are answered after their apply), and openraft's read index
/// round (a message to its core task, ~40 us a stat) adds nothing. A
/// membership change shows up in the metrics when appended (before it
/// commits), and anything not yet applied — a new term's first entry, a
/// write in flight — falls back to the full barrier.
fn sole_voter_caught_up(raft: &Raft) -> bool {
    let m = raft.metrics();
    let m = m.borrow();
    let mut voters = m.membership_config.membership().voter_ids();
    m.state == ServerState::Leader
        && m.current_leader == Some(m.id)
        && voters.next() == Some(m.id)
        && voters.next().is_none()
        && m.last_log_index.is_some()
        && m.last_applied.map(|l| l.index) == m.last_log_index
}

/// The journal as the rest of the master reaches it: the JournalActor by
/// its node-scoped name, and the `Raft` it publishes for the request path
/// (proposals and read barriers go to openraft directly rather than
/// through the actor's mailbox: one task hop less per request, and openraft
/// batches concurrent proposals itself). Cloned into everything that needs
/// it; holds no state of its own beyond that published reference.
#[derive(Clone)]
pub struct Journal {
    name: Arc<str>,
    /// The running incarnation's number and its `Raft`.
    raft: Arc<parking_lot::RwLock<(u64, Option<Raft>)>>,
    /// Told when the Raft core stops without this node asking it to.
    fatal: Arc<tokio::sync::watch::Sender<Option<String>>>,
}

impl std::fmt::Debug for Journal {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Journal").field("name", &self.name).finish()
    }
}

impl Journal {
    /// A handle to the JournalActor registered as `name`.
    pub fn new(name: String, fatal: Arc<tokio::sync::watch::Sender<Option<String>>>) -> Self {
        Journal { name: name.into(), raft: Arc::default(), fatal }
    }

    /// The JournalActor, if it is running.
    pub fn actor(&self) -> Option<ActorRef<JournalMsg>> {
        ractor::registry::where_is(&self.name).map(ActorRef::from)
    }

    /// A new incarnation takes over: from now on only it may publish, and
    /// the core of an earlier one stopping is no failure. Returns its number.
    fn take_over(&self) -> u64 {
        let mut g = self.raft.write();
        g.0 += 1;
        g.1 = None;
        g.0
    }

    /// Publishes (or, with `None`, withdraws) incarnation `gen`'s `Raft`,
    /// unless a later incarnation took over (a dead one's state may be
    /// dropped after its successor started).
    fn publish(&self, gen: u64, raft: Option<Raft>) {
        let mut g = self.raft.write();
        if g.0 == gen {
            g.1 = raft;
        }
    }

    fn current(&self, gen: u64) -> bool {
        self.raft.read().0 == gen
    }

    fn raft(&self) -> Result<Raft, ErrorInfo> {
        self.raft.read().1.clone().ok_or_else(|| ErrorInfo::new(ErrorCode::Unavailable, "journal is restarting"))
    }

    /// The term this master leads in, if it is the leader (`None` while the
    /// journal restarts).
    pub fn leader_term(&self) -> Option<u64> {
        let raft = self.raft.read().1.clone()?;
        let m = raft.metrics();
        let m = m.borrow();
        (m.state == ServerState::Leader && m.current_leader == Some(m.id)).then_some(m.current_term)
    }

    /// Proposes an entry and waits for its result (the entry's own refusal
    /// included: see [`Journal::propose`]).
    pub async fn propose_raw(&self, entry: JournalEntry) -> Result<ApplyResult, ErrorInfo> {
        let raft = self.raft()?;
        match tokio::time::timeout(Duration::from_secs(30), raft.client_write(entry)).await {
            Ok(r) => r.map(|resp| resp.data).map_err(|e| raft_error(e.forward_to_leader(), &e)),
            Err(_) => Err(ErrorInfo::new(ErrorCode::Timeout, "journal commit timed out")),
        }
    }

    /// Proposes an entry and waits for its result; an entry the namespace
    /// refused (`ApplyResult::Error`) is an error.
    pub async fn propose(&self, entry: JournalEntry) -> Result<ApplyResult, ErrorInfo> {
        match self.propose_raw(entry).await? {
            ApplyResult::Error(e) => Err(e),
            other => Ok(other),
        }
    }

    /// Waits until a linearizable read may be served here.
    pub async fn read_barrier(&self) -> Result<(), ErrorInfo> {
        let raft = self.raft()?;
        if sole_voter_caught_up(&raft) {
            return Ok(());
        }
        match tokio::time::timeout(Duration::from_secs(10), raft.ensure_linearizable()).await {
            Ok(r) => r.map(|_| ()).map_err(|e| raft_error(e.forward_to_leader(), &e)),
            Err(_) => Err(ErrorInfo::new(ErrorCode::Timeout, "read barrier timed out")),
        }
    }

    /// This master's view of the membership (`None` while the journal restarts).
    pub async fn membership(&self) -> Option<MembershipView> {
        ractor::call_t!(self.actor()?, JournalMsg::Membership, 2000).ok()
    }

    /// This master's Raft status (`None` while the journal restarts).
    pub async fn status(&self) -> Option<MasterStatus> {
        ractor::call_t!(self.actor()?, JournalMsg::Status, 1000).ok()
    }

    /// Every member as this master sees it (`None` while the journal restarts).
    pub async fn members(&self) -> Option<Vec<MasterStatus>> {
        ractor::call_t!(self.actor()?, JournalMsg::Members, 5000).ok()
    }

    /// This master's journal (with a digest of its state machine if asked).
    pub async fn info(&self, digest: bool) -> Result<JournalInfo, ErrorInfo> {
        let a = self.actor().ok_or_else(|| ErrorInfo::new(ErrorCode::Unavailable, "journal is restarting"))?;
        match a.call(|r| JournalMsg::Info(digest, r), Some(Duration::from_secs(300))).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(ractor::rpc::CallResult::Timeout) => Err(ErrorInfo::new(ErrorCode::Timeout, "journal info timed out")),
            _ => Err(ErrorInfo::new(ErrorCode::Unavailable, "journal is restarting")),
        }
    }

    /// Takes a snapshot on this master now and waits until it is built
    /// (openraft then purges the log behind it, keeping the configured tail).
    pub async fn take_snapshot(&self) -> Result<(), ErrorInfo> {
        let raft = self.raft()?;
        let want = raft.metrics().borrow().last_applied.map(|l| l.index);
        raft.trigger().snapshot().await.map_err(|e| ErrorInfo::new(ErrorCode::Unavailable, e.to_string()))?;
        let mut m = raft.metrics();
        let wait = async {
            loop {
                if m.borrow_and_update().snapshot.map(|l| l.index) >= want {
                    return;
                }
                if m.changed().await.is_err() {
                    return;
                }
            }
        };
        tokio::time::timeout(Duration::from_secs(300), wait)
            .await
            .map_err(|_| ErrorInfo::new(ErrorCode::Timeout, "the snapshot was not built within 300 s"))
    }

    /// Asks this master (it must be the leader) to add or remove a master.
    pub async fn change_masters(
        &self,
        msg: impl FnOnce(RpcReplyPort<Result<(), ErrorInfo>>) -> JournalMsg,
    ) -> Result<(), ErrorInfo> {
        let a = self.actor().ok_or_else(|| ErrorInfo::new(ErrorCode::Unavailable, "journal is restarting"))?;
        match a.call(msg, Some(CATCH_UP_TIMEOUT + Duration::from_secs(8))).await {
            Ok(ractor::rpc::CallResult::Success(r)) => r,
            Ok(ractor::rpc::CallResult::Timeout) => {
                Err(ErrorInfo::new(ErrorCode::Timeout, "membership change timed out"))
            }
            _ => Err(ErrorInfo::new(ErrorCode::Unavailable, "journal is restarting")),
        }
    }

    /// Tells the node that its Raft core stopped on its own: the master
    /// cannot commit or serve, and its process must exit (non-zero) so that
    /// whatever runs it starts it again.
    fn core_stopped(&self, why: String) {
        tracing::error!(reason = %why, "the Raft core stopped; this master stops serving");
        self.fatal.send_replace(Some(why));
    }
}
