//! TierActor: one storage tier of a worker (MEM, SSD or HDD). It owns the
//! tier's space accounting and its LRU of blocks. Space is reserved before
//! bytes are written and turned into a block on commit. When a reservation
//! does not fit, clean (persisted to a UFS), unpinned blocks are evicted in
//! LRU order; dirty or pinned blocks are never evicted, so a full tier
//! answers a no-space error instead of losing data.

use std::path::PathBuf;

use lru::LruCache;
use ractor::{Actor, ActorProcessingErr, ActorRef, RpcReplyPort};
use ractor_cluster::RactorMessage;
use strata_protocol::messages::TierUsage;
use strata_protocol::{BlockId, ErrorCode, ErrorInfo};

use super::blockfile;

/// Static description of a tier.
#[derive(Clone, Debug)]
pub struct TierConfig {
    /// `MEM`, `SSD` or `HDD`.
    pub name: String,
    /// Directory holding the block files.
    pub dir: PathBuf,
    /// Capacity in bytes.
    pub capacity_bytes: u64,
    /// fsync blocks before acknowledging (false for memory tiers).
    pub durable: bool,
}

impl TierConfig {
    /// This tier's actor's role in its worker's registered names.
    pub fn role(&self) -> String {
        format!("tier.{}", self.name)
    }
}

/// Messages to a TierActor.
#[derive(RactorMessage)]
pub enum TierMsg {
    /// Reserve space for a block about to be written; evicts clean blocks if
    /// needed. Answers the evicted blocks, or a no-space error.
    Reserve(u64, RpcReplyPort<Result<Vec<BlockId>, ErrorInfo>>),
    /// Give back an unused reservation.
    Release(u64),
    /// A reserved block was written: account it (reservation → block).
    Commit { block_id: BlockId, reserved: u64, length: u64, clean: bool, reply: RpcReplyPort<()> },
    /// Length of a block if this tier has it; marks it recently used.
    Lookup(BlockId, RpcReplyPort<Option<u64>>),
    /// Delete a block; answers whether it was here.
    Remove(BlockId, RpcReplyPort<bool>),
    /// Mark a block clean (persisted, evictable) or dirty.
    SetClean(BlockId, bool),
    /// Pin or unpin a block (pinned blocks are never evicted).
    SetPinned(BlockId, bool),
    /// Usage for heartbeats and reports.
    Usage(RpcReplyPort<TierUsage>),
    /// Every block on the tier.
    List(RpcReplyPort<Vec<BlockId>>),
}

#[derive(Debug, Clone, Copy)]
struct Entry {
    length: u64,
    clean: bool,
    pinned: bool,
}

/// The actor.
pub struct TierActor;

/// Actor state.
pub struct TierState {
    cfg: TierConfig,
    lru: LruCache<BlockId, Entry>,
    used: u64,
    reserved: u64,
}

impl TierState {
    fn remove(&mut self, id: BlockId) -> bool {
        match self.lru.pop(&id) {
            Some(e) => {
                self.used -= e.length;
                if let Err(err) = blockfile::remove(&self.cfg.dir, id) {
                    tracing::error!(block = id, error = %err, "cannot delete block files");
                }
                true
            }
            None => false,
        }
    }
}

impl Actor for TierActor {
    type Msg = TierMsg;
    type State = TierState;
    type Arguments = TierConfig;

    async fn pre_start(
        &self,
        _myself: ActorRef<Self::Msg>,
        cfg: TierConfig,
    ) -> Result<Self::State, ActorProcessingErr> {
        std::fs::create_dir_all(&cfg.dir).map_err(|e| format!("creating tier dir {}: {e}", cfg.dir.display()))?;
        let mut lru = LruCache::unbounded();
        let mut used = 0;
        // Oldest first, so the most recently written block ends most recent.
        for (id, _) in blockfile::scan(&cfg.dir)? {
            match blockfile::read_meta(&cfg.dir, id) {
                Ok(meta) => {
                    used += meta.length;
                    lru.put(id, Entry { length: meta.length, clean: false, pinned: false });
                }
                Err(e) => {
                    tracing::error!(tier = %cfg.name, block = id, error = %e, "dropping unreadable block at start-up");
                    let _ = blockfile::remove(&cfg.dir, id);
                }
            }
        }
        tracing::info!(tier = %cfg.name, blocks = lru.len(), used, capacity = cfg.capacity_bytes, "tier loaded");
        Ok(TierState { cfg, lru, used, reserved: 0 })
    }

    async fn handle(
        &self,
        _myself: ActorRef<Self::Msg>,
        msg: Self::Msg,
        st: &mut Self::State,
    ) -> Result<(), ActorProcessingErr> {
        match msg {
            TierMsg::Reserve(bytes, reply) => {
                let mut evicted = Vec::new();
                while st.used + st.reserved + bytes > st.cfg.capacity_bytes {
                    // Least recently used clean, unpinned block.
                    let victim = st.lru.iter().rev().find(|(_, e)| e.clean && !e.pinned).map(|(id, _)| *id);
                    match victim {
                        Some(id) => {
                            st.remove(id);
                            evicted.push(id);
                        }
                        None => break,
                    }
                }
                if !evicted.is_empty() {
                    tracing::debug!(tier = %st.cfg.name, n = evicted.len(), "evicted clean blocks");
                }
                let r = if st.used + st.reserved + bytes <= st.cfg.capacity_bytes {
                    st.reserved += bytes;
                    Ok(evicted)
                } else {
                    Err(ErrorInfo::new(
                        ErrorCode::NoSpace,
                        format!(
                            "tier {} has {} of {} bytes free and nothing evictable; {bytes} needed",
                            st.cfg.name,
                            st.cfg.capacity_bytes.saturating_sub(st.used + st.reserved),
                            st.cfg.capacity_bytes
                        ),
                    ))
                };
                let _ = reply.send(r);
            }
            TierMsg::Release(bytes) => st.reserved = st.reserved.saturating_sub(bytes),
            TierMsg::Commit { block_id, reserved, length, clean, reply } => {
                st.reserved = st.reserved.saturating_sub(reserved);
                if let Some(old) = st.lru.put(block_id, Entry { length, clean, pinned: false }) {
                    st.used -= old.length;
                }
                st.used += length;
                let _ = reply.send(());
            }
            TierMsg::Lookup(id, reply) => {
                let _ = reply.send(st.lru.get(&id).map(|e| e.length));
            }
            TierMsg::Remove(id, reply) => {
                let _ = reply.send(st.remove(id));
            }
            TierMsg::SetClean(id, clean) => {
                if let Some(e) = st.lru.peek_mut(&id) {
                    e.clean = clean;
                }
            }
            TierMsg::SetPinned(id, pinned) => {
                if let Some(e) = st.lru.peek_mut(&id) {
                    e.pinned = pinned;
                }
            }
            TierMsg::Usage(reply) => {
                let _ = reply.send(TierUsage {
                    tier: st.cfg.name.clone(),
                    capacity_bytes: st.cfg.capacity_bytes,
                    used_bytes: st.used,
                    blocks: st.lru.len() as u64,
                });
            }
            TierMsg::List(reply) => {
                let _ = reply.send(st.lru.iter().map(|(id, _)| *id).collect());
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::worker::blockfile::BlockWriter;

    async fn put(
        t: &ActorRef<TierMsg>,
        dir: &std::path::Path,
        id: BlockId,
        len: usize,
    ) -> Result<Vec<BlockId>, ErrorInfo> {
        let evicted = ractor::call_t!(t, TierMsg::Reserve, 1000, len as u64).unwrap()?;
        let mut w = BlockWriter::create(dir, id).unwrap();
        w.write(&vec![1u8; len]).unwrap();
        w.finish(false).unwrap();
        ractor::call!(t, |reply| TierMsg::Commit {
            block_id: id,
            reserved: len as u64,
            length: len as u64,
            clean: false,
            reply
        })
        .unwrap();
        Ok(evicted)
    }

    /// A full tier refuses dirty data with NoSpace, evicts clean blocks in
    /// LRU order, never evicts pinned ones, and reloads its blocks at start.
    #[tokio::test]
    async fn full_tier_evicts_only_clean_unpinned_blocks() {
        let d = tempfile::tempdir().unwrap();
        let cfg = TierConfig { name: "SSD".into(), dir: d.path().to_path_buf(), capacity_bytes: 3000, durable: false };
        let (t, h) = Actor::spawn(None, TierActor, cfg.clone()).await.unwrap();
        for id in 1..=3 {
            put(&t, d.path(), id, 1000).await.unwrap();
        }
        let e = put(&t, d.path(), 4, 1000).await.unwrap_err();
        assert_eq!(e.code, ErrorCode::NoSpace);
        // Blocks 1 and 2 become clean; 1 is pinned. Touch 2 so 3 is... dirty anyway.
        t.cast(TierMsg::SetClean(1, true)).unwrap();
        t.cast(TierMsg::SetClean(2, true)).unwrap();
        t.cast(TierMsg::SetPinned(1, true)).unwrap();
        assert_eq!(put(&t, d.path(), 4, 1000).await.unwrap(), vec![2]);
        assert_eq!(ractor::call_t!(t, TierMsg::Lookup, 1000, 2).unwrap(), None);
        assert_eq!(ractor::call_t!(t, TierMsg::Lookup, 1000, 1).unwrap(), Some(1000));
        assert!(!blockfile::meta_path(d.path(), 2).exists());
        assert_eq!(put(&t, d.path(), 5, 1000).await.unwrap_err().code, ErrorCode::NoSpace);
        t.stop(None);
        h.await.unwrap();
        // Restart: the three committed blocks are found again.
        let (t, h) = Actor::spawn(None, TierActor, cfg).await.unwrap();
        let usage = ractor::call_t!(t, TierMsg::Usage, 1000).unwrap();
        assert_eq!((usage.blocks, usage.used_bytes), (3, 3000));
        t.stop(None);
        h.await.unwrap();
    }
}
