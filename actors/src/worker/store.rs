//! A worker's block store as its data paths use it: find a block on the
//! tiers, reserve space, receive a block file and seal it (tier commit,
//! then the masters' location map). Shared by the DataServer (client
//! writes, UFS fetches) and the BlockReplicator (copies from peers); each
//! call goes to the owning TierActor, so the store itself holds no state.

use std::sync::Arc;
use std::time::Duration;

use ractor::ActorRef;
use strata_protocol::messages::{BlockCommit, CommitReply};
use strata_protocol::{BlockId, ErrorCode, ErrorInfo, WorkerId};

use super::blockfile::{self, BlockError, BlockWriter};
use super::tier::{TierConfig, TierMsg};
use super::worker_actor;
use crate::cluster::{worker_managers, TrimList, WorkerManagerMsg};
use crate::mesh::Wire;
use crate::supervisor::Scope;

/// The tiers of one worker, fastest first, and who it is.
#[derive(Clone)]
pub struct BlockStore {
    /// Tiers, fastest first.
    pub tiers: Vec<TierConfig>,
    /// This worker.
    pub worker_id: WorkerId,
    /// This worker's registered names.
    pub scope: Scope,
}

/// The error a block-file failure is reported as.
pub fn block_error(e: BlockError) -> ErrorInfo {
    let code = match &e {
        BlockError::NotFound { .. } => ErrorCode::BlockNotFound,
        BlockError::Checksum { .. } | BlockError::Corrupt { .. } => ErrorCode::ChecksumMismatch,
        BlockError::OutOfRange { .. } => ErrorCode::InvalidArgument,
        BlockError::Io(_) => ErrorCode::Io,
    };
    ErrorInfo::new(code, e.to_string())
}

fn joined<T>(r: Result<T, tokio::task::JoinError>) -> Result<T, ErrorInfo> {
    r.map_err(|e| ErrorInfo::new(ErrorCode::Internal, e.to_string()))
}

impl BlockStore {
    /// The actor of tier `t`.
    pub fn tier_actor(&self, t: &TierConfig) -> Result<ActorRef<TierMsg>, ErrorInfo> {
        worker_actor::tier_ref(&self.scope, t)
            .ok_or_else(|| ErrorInfo::new(ErrorCode::Unavailable, format!("tier {} is restarting", t.name)))
    }

    /// Calls tier `t`'s actor (`Unavailable` if it does not answer in 10 s).
    pub async fn tier_call<R: Send + 'static>(
        &self,
        t: &TierConfig,
        make: impl FnOnce(ractor::RpcReplyPort<R>) -> TierMsg,
    ) -> Result<R, ErrorInfo> {
        match self.tier_actor(t)?.call(make, Some(Duration::from_secs(10))).await {
            Ok(ractor::rpc::CallResult::Success(r)) => Ok(r),
            _ => Err(ErrorInfo::new(ErrorCode::Unavailable, format!("tier {} did not answer", t.name))),
        }
    }

    /// Gives back an unused reservation of `length` bytes on `t`.
    pub fn release(&self, t: &TierConfig, length: u64) {
        if let Ok(a) = self.tier_actor(t) {
            let _ = a.cast(TierMsg::Release(length));
        }
    }

    /// The tier holding `block_id`, and the block's length.
    pub async fn find_block(&self, block_id: BlockId) -> Result<(TierConfig, u64), ErrorInfo> {
        for t in &self.tiers {
            if let Some(len) = self.tier_call(t, |r| TierMsg::Lookup(block_id, r)).await? {
                return Ok((t.clone(), len));
            }
        }
        Err(ErrorInfo::new(ErrorCode::BlockNotFound, format!("block {block_id:016x} is not on this worker")))
    }

    /// Reads `length` bytes at `offset` of a block on this worker, every
    /// checksum chunk touched verified. A copy found corrupt is reported
    /// to the masters (the leader drops it if another copy is live and
    /// has it copied again).
    pub async fn read(&self, block_id: BlockId, offset: u64, length: u64) -> Result<Vec<u8>, ErrorInfo> {
        let (tier, _) = self.find_block(block_id).await?;
        let dir = tier.dir.clone();
        let r = joined(
            tokio::task::spawn_blocking(move || {
                let meta = blockfile::read_meta(&dir, block_id)?;
                blockfile::read_range(&dir, &meta, offset, length)
            })
            .await,
        )?
        .map_err(block_error);
        if let Err(e) = &r {
            if e.code == ErrorCode::ChecksumMismatch {
                tracing::error!(block = block_id, error = %e, "corrupt block copy: reported to the masters");
                let bad = Wire(TrimList(vec![(block_id, self.worker_id)]));
                for m in worker_managers() {
                    let _ = m.cast(WorkerManagerMsg::BadCopies(bad.clone()));
                }
            }
        }
        r
    }

    /// Reserves `length` bytes on the fastest tier that has room (only
    /// the fastest with `fastest_only`, falling back to any).
    pub async fn reserve(&self, length: u64, fastest_only: bool) -> Result<TierConfig, ErrorInfo> {
        let mut last = None;
        // The fastest tier first (evicting there if it must, with
        // `fastest_only`), then the others, fastest first.
        let first = self.tiers.iter().take(usize::from(fastest_only));
        for t in first.chain(&self.tiers) {
            match self.tier_call(t, |r| TierMsg::Reserve(length, r)).await? {
                Ok(evicted) => {
                    if !evicted.is_empty() {
                        worker_actor::report_removed(&self.scope, evicted);
                    }
                    return Ok(t.clone());
                }
                Err(e) => last = Some(e),
            }
        }
        Err(last.unwrap_or_else(|| ErrorInfo::new(ErrorCode::NoSpace, "the worker has no tiers")))
    }

    /// A new block file for `block_id` on `tier` (reserved before).
    pub async fn create(&self, tier: &TierConfig, block_id: BlockId, length: u64) -> Result<BlockWriter, ErrorInfo> {
        let dir = tier.dir.clone();
        match joined(tokio::task::spawn_blocking(move || BlockWriter::create(&dir, block_id)).await)? {
            Ok(w) => Ok(w),
            Err(e) => {
                self.release(tier, length);
                Err(ErrorInfo::new(ErrorCode::Io, format!("creating block {block_id:016x}: {e}")))
            }
        }
    }

    /// Finishes a received block file (fsync'd on a durable tier if
    /// `durable`), hands it to its tier (which accounts the reserved space)
    /// and commits its location to the masters. On failure the block is
    /// gone and the reservation released.
    pub async fn seal(
        &self,
        tier: &TierConfig,
        writer: BlockWriter,
        block_id: BlockId,
        length: u64,
        clean: bool,
        durable: bool,
    ) -> Result<(), ErrorInfo> {
        let durable = tier.durable && durable;
        let finished = joined(tokio::task::spawn_blocking(move || writer.finish(durable)).await)
            .and_then(|r| r.map_err(|e| ErrorInfo::new(ErrorCode::Io, e.to_string())));
        if let Err(e) = finished {
            self.release(tier, length);
            let _ = blockfile::remove(&tier.dir, block_id);
            return Err(e);
        }
        let committed = match self.tier_actor(tier) {
            Ok(a) => {
                ractor::call_t!(a, |reply| TierMsg::Commit { block_id, reserved: length, length, clean, reply }, 10_000)
                    .is_ok()
            }
            Err(_) => false,
        };
        if !committed {
            let _ = blockfile::remove(&tier.dir, block_id);
            return Err(ErrorInfo::new(ErrorCode::Unavailable, "tier restarted during the write"));
        }
        if let Err(e) = commit_to_master(&self.scope, self.worker_id, block_id, length, &tier.name).await {
            let _ = self.tier_call(tier, |r| TierMsg::Remove(block_id, r)).await;
            return Err(e);
        }
        Ok(())
    }

    /// Stores a whole block held in memory as a block of this worker:
    /// on the fastest tier with room (only the fastest with `promote`).
    pub async fn store_bytes(
        &self,
        block_id: BlockId,
        data: Arc<Vec<u8>>,
        promote: bool,
        clean: bool,
    ) -> Result<(), ErrorInfo> {
        let length = data.len() as u64;
        let tier = self.reserve(length, promote).await?;
        let mut w = self.create(&tier, block_id, length).await?;
        let written = joined(
            tokio::task::spawn_blocking(move || {
                let r = w.write(&data);
                (w, r)
            })
            .await,
        )?;
        match written {
            (w, Ok(())) => self.seal(&tier, w, block_id, length, clean, true).await,
            (w, Err(e)) => {
                w.abort();
                self.release(&tier, length);
                Err(ErrorInfo::new(ErrorCode::Io, format!("storing block {block_id:016x}: {e}")))
            }
        }
    }
}

/// Commits a stored block to every master: the answer of the first one is
/// enough (the others hear of it by heartbeat if their call fails), so a
/// stopped master does not hold up writes.
async fn commit_to_master(
    scope: &Scope,
    worker_id: WorkerId,
    block_id: BlockId,
    length: u64,
    tier: &str,
) -> Result<(), ErrorInfo> {
    let masters = worker_managers();
    if masters.is_empty() {
        return Err(ErrorInfo::new(ErrorCode::Unavailable, "no master on the mesh"));
    }
    let (tx, mut rx) = tokio::sync::mpsc::channel(masters.len());
    for m in masters {
        let master: ActorRef<WorkerManagerMsg> = m;
        let commit = BlockCommit { worker_id, block_id, length, tier: tier.to_string() };
        let tx = tx.clone();
        tokio::spawn(async move {
            let r = ractor::call_t!(master, WorkerManagerMsg::CommitBlock, 5000, Wire(commit)).map(|w| w.0);
            let _ = tx.send(r).await;
        });
    }
    drop(tx);
    worker_actor::report_added(scope, vec![block_id]);
    let mut last = ErrorInfo::new(ErrorCode::Unavailable, "no master answered the block commit");
    while let Some(r) = rx.recv().await {
        match r {
            Ok(CommitReply::Ok) => return Ok(()),
            Ok(CommitReply::UnknownWorker) => {
                last = ErrorInfo::new(ErrorCode::Unavailable, "the master does not know this worker yet; retry")
            }
            Ok(CommitReply::Orphan) => last = ErrorInfo::new(ErrorCode::InvalidState, "the block's file is gone"),
            Err(e) => last = ErrorInfo::new(ErrorCode::Unavailable, format!("committing to a master: {e}")),
        }
    }
    Err(last)
}
