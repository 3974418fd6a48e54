//! Master membership and the cluster report.

use strata_protocol::messages::{ClusterReport, MasterResponse};
use strata_protocol::{ErrorCode, ErrorInfo};

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
    let workers = svc.workers.call(WorkerManagerMsg::Report).await?.0 .0;
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
