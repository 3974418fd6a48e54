//! Pre-vote (Raft thesis §9.6): a master that has heard from no leader for
//! an election timeout first asks the other voters whether they would
//! vote for it, and only starts an election (which raises its term) when a
//! majority would. openraft 0.9 has no pre-vote: its own election timer is
//! off (`enable_elect: false`) and the [`run`] loop here triggers elections.
//!
//! Why: a follower that was paused, cut off or slow comes back with its
//! election timer long expired. With openraft's timer it started an
//! election at once with a higher term; the others refused it (their leader
//! lease had not expired) but the leader then met that higher term in the
//! follower's AppendEntries answer and stepped down, so every such return
//! cost an election and moved the term. A pre-vote is refused by voters
//! that hear from a leader, so the term stays where it is.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use openraft::{LogId, ServerState};
use rand::Rng;
use rocksdb::DB;
use serde::{Deserialize, Serialize};

use super::raft::{last_log_id, NodeId, Raft};

/// openraft's election timeout range (its heartbeat is 100 ms). Its
/// leader lease is the top of the range: a voter refuses every vote for as
/// long after it last heard from a leader.
pub const ELECTION_TIMEOUT: std::ops::Range<u64> = 400..800;
/// How long a voter must have heard from no leader to grant a pre-vote:
/// openraft's leader lease, past which it would grant the vote itself.
const LEASE: Duration = Duration::from_millis(ELECTION_TIMEOUT.end);
/// A voter silent for a random time in this range asks for pre-votes:
/// from the lease on, so the election it may start can be won.
const CANDIDATE_TIMEOUT: std::ops::Range<u64> =
    ELECTION_TIMEOUT.end..ELECTION_TIMEOUT.end + (ELECTION_TIMEOUT.end - ELECTION_TIMEOUT.start);
/// How long a pre-vote round waits for answers.
const ROUND: Duration = Duration::from_millis(300);
/// How often the loop looks.
const TICK: Duration = Duration::from_millis(50);

/// When this master last heard from a leader (an AppendEntries it did not
/// refuse for a stale term), or granted a vote, or led.
#[derive(Debug)]
pub struct Heard {
    start: Instant,
    at_ms: AtomicU64,
}

impl Default for Heard {
    fn default() -> Self {
        Heard { start: Instant::now(), at_ms: AtomicU64::new(0) }
    }
}

impl Heard {
    /// Records contact now.
    pub fn touch(&self) {
        self.at_ms.store(self.start.elapsed().as_millis() as u64, Ordering::Relaxed);
    }

    /// Time since the last contact.
    pub fn silent_for(&self) -> Duration {
        let now = self.start.elapsed().as_millis() as u64;
        Duration::from_millis(now.saturating_sub(self.at_ms.load(Ordering::Relaxed)))
    }
}

/// "Would you vote for me in `term`?"
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteRequest {
    /// Who asks.
    pub candidate: NodeId,
    /// The term its election would have.
    pub term: u64,
    /// Its last log id.
    pub last_log: Option<LogId<NodeId>>,
}

/// The answer.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PreVoteResponse {
    /// Whether the voter would vote for it now.
    pub granted: bool,
}

/// Answers a pre-vote: granted when this master has heard from no leader
/// for the leader lease (a leader: has had no quorum's acknowledgement for
/// as long) and the candidate's log is at least as up to date as its own.
/// Terms are left to the vote itself: a voter whose term is ahead refuses
/// the candidate's vote with it, the candidate takes it on and stands again
/// above it (refusing the pre-vote for its term instead would leave such a
/// candidate asking for ever).
pub fn answer(raft: &Raft, heard: &Heard, log_db: &DB, req: &PreVoteRequest) -> PreVoteResponse {
    let m = raft.metrics().borrow().clone();
    let leader_alive = match m.state {
        ServerState::Leader => m.millis_since_quorum_ack.is_some_and(|ms| ms < LEASE.as_millis() as u64),
        _ => heard.silent_for() < LEASE,
    };
    let log_ok = req.last_log >= last_log_id(log_db).unwrap_or(None);
    PreVoteResponse { granted: !leader_alive && log_ok }
}

/// How a pre-vote reaches another master.
pub trait Ask: Clone + Send + Sync + 'static {
    /// Asks master `to`; `None`: no answer in time.
    fn ask(
        &self,
        to: NodeId,
        req: PreVoteRequest,
        ttl: Duration,
    ) -> impl std::future::Future<Output = Option<PreVoteResponse>> + Send;
}

/// Triggers this master's elections, each after a won pre-vote, until the
/// task is aborted.
pub async fn run(raft: Raft, me: NodeId, heard: Arc<Heard>, log_db: Arc<DB>, ask: impl Ask) {
    let next_timeout = || Duration::from_millis(rand::thread_rng().gen_range(CANDIDATE_TIMEOUT));
    let mut timeout = next_timeout();
    heard.touch();
    loop {
        tokio::time::sleep(TICK).await;
        let m = raft.metrics().borrow().clone();
        match m.state {
            ServerState::Leader => {
                heard.touch();
                continue;
            }
            ServerState::Shutdown => return,
            _ => {}
        }
        let voters: Vec<NodeId> = m.membership_config.membership().voter_ids().collect();
        if !voters.contains(&me) {
            continue;
        }
        // The only voter needs nobody's word: it elects itself at once.
        let wait = if voters.len() == 1 { 2 * TICK } else { timeout };
        if heard.silent_for() < wait {
            continue;
        }
        let req =
            PreVoteRequest { candidate: me, term: m.current_term + 1, last_log: last_log_id(&log_db).unwrap_or(None) };
        let mut asks = tokio::task::JoinSet::new();
        for v in voters.iter().filter(|v| **v != me) {
            let (ask, req, v) = (ask.clone(), req.clone(), *v);
            asks.spawn(async move { ask.ask(v, req, ROUND).await });
        }
        let mut granted = 1;
        while let Some(r) = asks.join_next().await {
            granted += usize::from(r.ok().flatten().is_some_and(|r| r.granted));
        }
        if granted * 2 > voters.len() {
            tracing::info!(term = req.term, granted, voters = voters.len(), "pre-vote won; starting an election");
            if raft.trigger().elect().await.is_err() {
                return;
            }
        } else {
            tracing::debug!(term = req.term, granted, voters = voters.len(), "pre-vote lost");
        }
        heard.touch();
        timeout = next_timeout();
    }
}
