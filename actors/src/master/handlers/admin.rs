//! Master membership, worker decommission and the cluster report.

use strata_protocol::journal::{ApplyResult, JournalEntry};
use strata_protocol::messages::{ClusterReport, MasterResponse};
use strata_protocol::{now_ms, ErrorCode, ErrorInfo, WorkerId};

use super::super::journal::JournalMsg;
use super::super::namespace_actor::NamespaceMsg;
use super::super::raft::MasterNode;
use super::super::services::Services;
use super::super::workers::WorkerManagerMsg;

pub(super) async fn add_master(
    svc: &Services,
    id: u64,
    addr: String,
    mesh: String,
) -> Result<MasterResponse, ErrorInfo> {
    let node = MasterNode { addr, mesh };
    svc.journal.change_masters(|r| JournalMsg::AddMaster(id, node, r)).await?;
    Ok(MasterResponse::Done)
}

pub(super) async fn remove_master(svc: &Services, id: u64) -> Result<MasterResponse, ErrorInfo> {
    svc.journal.change_masters(|r| JournalMsg::RemoveMaster(id, r)).await?;
    Ok(MasterResponse::Done)
}

pub(super) async fn report(svc: &Services) -> Result<MasterResponse, ErrorInfo> {
    // The leader has the complete picture (followers' progress); send
    // clients there. Without any leader, answer with this master's view.
    if let Err(e) = svc.journal.read_barrier().await {
        if e.code == ErrorCode::NotLeader && !e.message.is_empty() {
            return Err(e);
        }
    }
    let masters = svc.journal.members().await.unwrap_or_default();
    let mut workers = svc.workers.call(WorkerManagerMsg::Report).await?.0 .0;
    for w in workers.iter_mut().filter(|w| w.state == "decommissioning") {
        w.blocks_left = svc.replication.blocks_left(w.addr.worker_id).await?;
        if w.blocks_left == 0 {
            w.state = "decommissioned".into();
        }
    }
    let inodes = svc.ns.call(NamespaceMsg::InodeCount).await?;
    let health = svc.replication.health().await.unwrap_or_default();
    Ok(MasterResponse::Report(ClusterReport {
        masters,
        workers,
        inodes,
        under_replicated: health.under,
        over_replicated: health.over,
        missing: health.missing,
    }))
}

/// Starts or stops decommissioning a worker (journaled, so a new leader
/// carries on); a worker the master does not know is refused.
pub(super) async fn decommission(svc: &Services, worker_id: WorkerId, on: bool) -> Result<MasterResponse, ErrorInfo> {
    let known = svc.workers.call(WorkerManagerMsg::Report).await?.0 .0;
    if on && !known.iter().any(|w| w.addr.worker_id == worker_id) {
        return Err(ErrorInfo::new(ErrorCode::NotFound, format!("no worker {worker_id:016x}")));
    }
    match svc.journal.propose(JournalEntry::Decommission { worker_id, on, time_ms: now_ms() }).await? {
        ApplyResult::Done => Ok(MasterResponse::Done),
        other => Ok(super::unexpected(other)),
    }
}
