//! BlockReplicator: copies blocks onto this worker from peers, as the
//! leader's ReplicationManager asks (a worker was lost, a copy was found
//! corrupt, a worker is being decommissioned). It owns the copies in
//! flight: at most [`CONCURRENT_COPIES`] run at once, and a second request
//! for a block being copied waits for the first instead of copying again.
//!
//! A copy reads the block from a source worker's data port in 8 MiB
//! pieces (the source verifies every checksum chunk it reads and refuses
//! a corrupt one: the next source is tried), writes a new block file with
//! its own checksums, seals it on a tier and commits its location to the
//! masters, as a client write does.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use strata_client::data::DataPool;
use strata_protocol::messages::WorkerAddr;
use strata_protocol::{BlockId, ErrorCode, ErrorInfo};

use super::store::BlockStore;
use crate::supervisor::Scope;

/// The BlockReplicator's role in its node's registered names.
pub const ROLE: &str = "replicator";
/// Copies running at once on one worker.
pub const CONCURRENT_COPIES: usize = 4;
/// Bytes read from a source per request.
const PIECE: u64 = 8 << 20;

/// One block to copy here.
#[derive(Debug, Clone)]
pub struct CopyTask {
    /// The block.
    pub block_id: BlockId,
    /// Its length.
    pub length: u64,
    /// Workers holding it, tried in order.
    pub sources: Vec<WorkerAddr>,
    /// Its file is in its UFS: the copy may be evicted.
    pub clean: bool,
}

/// The answer to a copy: the tier it went to.
pub type CopyResult = Result<String, ErrorInfo>;

/// Messages to the BlockReplicator.
#[derive(RactorMessage)]
pub enum ReplicatorMsg {
    /// Copy a block here; answered once it is stored and committed.
    Copy(CopyTask, RpcReplyPort<CopyResult>),
    /// (Sent to itself) a copy finished.
    Done(BlockId, CopyResult),
}

/// The actor.
pub struct BlockReplicator;

/// State: the copies in flight and who waits for each.
pub struct ReplicatorState {
    store: BlockStore,
    peers: Arc<DataPool>,
    permits: Arc<tokio::sync::Semaphore>,
    waiting: HashMap<BlockId, Vec<RpcReplyPort<CopyResult>>>,
}

impl Actor for BlockReplicator {
    type Msg = ReplicatorMsg;
    type State = ReplicatorState;
    type Arguments = BlockStore;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        store: BlockStore,
    ) -> Result<Self::State, ActorProcessingErr> {
        Ok(ReplicatorState {
            store,
            peers: Arc::new(DataPool::new(Duration::from_secs(60))),
            permits: Arc::new(tokio::sync::Semaphore::new(CONCURRENT_COPIES)),
            waiting: HashMap::new(),
        })
    }

    async fn handle(
        &self,
        myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            ReplicatorMsg::Copy(task, reply) => {
                let block_id = task.block_id;
                let waiters = st.waiting.entry(block_id).or_default();
                waiters.push(reply);
                if waiters.len() > 1 {
                    return Ok(()); // already being copied
                }
                let (store, peers, permits) = (st.store.clone(), st.peers.clone(), st.permits.clone());
                tokio::spawn(async move {
                    let r = match permits.acquire_owned().await {
                        Ok(_permit) => copy_block(&store, &peers, &task).await,
                        Err(_) => Err(ErrorInfo::new(ErrorCode::Unavailable, "the replicator is stopping")),
                    };
                    let _ = myself.cast(ReplicatorMsg::Done(block_id, r));
                });
            }
            ReplicatorMsg::Done(block_id, r) => {
                for reply in st.waiting.remove(&block_id).unwrap_or_default() {
                    let _ = reply.send(r.clone());
                }
            }
        }
        Ok(())
    }
}

/// Copies a block onto this worker from the first source that serves it
/// whole; a block already here is answered at once.
async fn copy_block(store: &BlockStore, peers: &DataPool, task: &CopyTask) -> CopyResult {
    let (block_id, length) = (task.block_id, task.length);
    if let Ok((tier, len)) = store.find_block(block_id).await {
        // A copy here already (a retried task): whole and sound, or refused
        // while the corrupt one waits for its removal.
        store.read(block_id, 0, len).await?;
        return Ok(tier.name);
    }
    let tier = store.reserve(length, false).await?;
    let mut last = ErrorInfo::new(ErrorCode::BlockNotFound, format!("block {block_id:016x} has no source"));
    for src in task.sources.iter().filter(|w| w.worker_id != store.worker_id) {
        // (`create` gives the reservation back if it fails.)
        let mut writer = store.create(&tier, block_id, length).await?;
        let mut off = 0;
        let mut failed = None;
        while off < length {
            let n = (length - off).min(PIECE);
            let piece = match peers.read_block(src, block_id, off, n).await {
                Ok(p) => p,
                Err(e) => {
                    failed = Some(ErrorInfo::new(e.code(), format!("reading from worker {}: {e}", src.worker_id)));
                    break;
                }
            };
            let written = tokio::task::spawn_blocking(move || {
                let r = writer.write(&piece);
                (writer, r)
            })
            .await;
            match written {
                Ok((w, Ok(()))) => writer = w,
                Ok((w, Err(e))) => {
                    writer = w;
                    failed = Some(ErrorInfo::new(ErrorCode::Io, format!("writing block {block_id:016x}: {e}")));
                    break;
                }
                Err(e) => {
                    store.release(&tier, length);
                    return Err(ErrorInfo::new(ErrorCode::Internal, e.to_string()));
                }
            }
            off += n;
        }
        match failed {
            None => return store.seal(&tier, writer, block_id, length, task.clean, true).await.map(|()| tier.name),
            Some(e) => {
                tracing::warn!(block = block_id, source = src.worker_id, error = %e, "copy from a peer failed");
                writer.abort();
                last = e;
            }
        }
    }
    store.release(&tier, length);
    Err(last)
}

/// Asks this worker's BlockReplicator for a copy and waits for it.
pub async fn copy(scope: &Scope, task: CopyTask) -> CopyResult {
    let Some(actor) = ractor::registry::where_is(scope.name(ROLE)).map(ActorRef::<ReplicatorMsg>::from) else {
        return Err(ErrorInfo::new(ErrorCode::Unavailable, "the block replicator is restarting"));
    };
    match actor.call(|r| ReplicatorMsg::Copy(task, r), Some(Duration::from_secs(600))).await {
        Ok(ractor::rpc::CallResult::Success(r)) => r,
        _ => Err(ErrorInfo::new(ErrorCode::Unavailable, "the block replicator did not answer")),
    }
}
