//! Writing files to their UFS through a worker (the master never carries
//! file bytes), as a mount's write type says, and dropping cached copies
//! of what is safe there.

use std::time::Duration;

use strata_protocol::frame::{read_frame, write_frame, FrameKind};
use strata_protocol::journal::JournalEntry;
use strata_protocol::messages::{DataRequest, DataResponse, FileType, WorkerAddr};
use strata_protocol::ufs::{self as pufs, Fingerprint, MountInfo, WriteType};
use strata_protocol::{now_ms, ErrorCode, ErrorInfo};
use tokio::io::AsyncWriteExt;

use super::super::namespace::InodeRecord;
use super::super::namespace_actor::NamespaceMsg;
use super::super::workers::{BlockList, WorkerManagerMsg};
use super::syncer::SyncerMsg;
use super::Mounts;
use crate::mesh::Wire;

/// Sends one request to a worker's data port and waits for its answer.
async fn worker_request(w: &WorkerAddr, req: &DataRequest, patience: Duration) -> Result<DataResponse, ErrorInfo> {
    let addr = format!("{}:{}", w.host, w.data_port);
    let io = |e: std::io::Error| ErrorInfo::new(ErrorCode::Unavailable, format!("worker {addr}: {e}"));
    let fut = async {
        let mut s = tokio::net::TcpStream::connect(&addr).await.map_err(io)?;
        write_frame(&mut s, FrameKind::Request, req)
            .await
            .map_err(|e| ErrorInfo::new(ErrorCode::Unavailable, e.to_string()))?;
        s.flush().await.map_err(io)?;
        match read_frame::<_, DataResponse>(&mut s, 64 * 1024).await {
            Ok(Some((_, r))) => Ok(r),
            Ok(None) => Err(ErrorInfo::new(ErrorCode::Unavailable, format!("worker {addr} closed the connection"))),
            Err(e) => Err(ErrorInfo::new(ErrorCode::Unavailable, format!("worker {addr}: {e}"))),
        }
    };
    tokio::time::timeout(patience, fut)
        .await
        .map_err(|_| ErrorInfo::new(ErrorCode::Timeout, format!("worker {addr} did not answer in {patience:?}")))?
}

impl Mounts {
    /// Writes a complete file to its UFS through a worker and journals it as
    /// persisted. Returns the blocks that are now clean.
    pub async fn persist_file(&self, m: &MountInfo, path: &str, rec: &InodeRecord) -> Result<Vec<u64>, ErrorInfo> {
        if !rec.attr.complete {
            return Err(ErrorInfo::new(ErrorCode::InvalidState, format!("{path} is still being written")));
        }
        if rec.is_persisted() {
            return Ok(Vec::new());
        }
        let blocks = self.workers.file_blocks(rec.clone()).await?.blocks;
        if let Some(b) = blocks.iter().find(|b| b.workers.is_empty()) {
            return Err(ErrorInfo::new(
                ErrorCode::BlockNotFound,
                format!("block {:016x} of {path} has no live copy to persist", b.block_id),
            ));
        }
        let mut candidates: Vec<WorkerAddr> = blocks.first().map(|b| b.workers.clone()).unwrap_or_default();
        if candidates.is_empty() {
            candidates = self.workers.place(String::new(), 0, None, 0).await?;
        }
        let req = DataRequest::Persist {
            spec: m.spec.clone(),
            key: pufs::key_of(path, &m.path),
            blocks: blocks.clone(),
            length: rec.attr.size,
        };
        let patience = Duration::from_secs(60) + Duration::from_millis(rec.attr.size / (1 << 20) * 100);
        let mut last = ErrorInfo::new(ErrorCode::NoWorkers, "no live worker to persist through");
        let mut fp: Option<Fingerprint> = None;
        for w in candidates.iter().take(3) {
            match worker_request(w, &req, patience).await {
                Ok(DataResponse::Persisted(f)) => {
                    fp = Some(f);
                    break;
                }
                Ok(DataResponse::Error(e)) => last = e,
                Ok(other) => last = ErrorInfo::new(ErrorCode::Protocol, format!("unexpected answer {other:?}")),
                Err(e) => last = e,
            }
        }
        let fingerprint = fp.ok_or(last)?;
        let ids: Vec<u64> = rec.blocks.clone();
        self.journal
            .propose(JournalEntry::Persisted {
                inode: rec.attr.inode,
                blocks: ids.clone(),
                fingerprint,
                time_ms: now_ms(),
            })
            .await?;
        self.workers.tell(WorkerManagerMsg::Clean(Wire(BlockList(ids.clone()))));
        Ok(ids)
    }

    /// What a completed write under a mount needs before it is acknowledged.
    /// A file renamed or replaced meanwhile (`path` no longer names `inode`) is
    /// left to whoever wrote the new one.
    pub async fn after_write(&self, path: &str, inode: u64) -> Result<(), ErrorInfo> {
        let Some(m) = self.mount_of(path).await? else { return Ok(()) };
        let Some(rec) = self.lookup(path).await?.filter(|r| r.attr.inode == inode) else { return Ok(()) };
        match m.options.write_type {
            WriteType::Cache => Ok(()),
            WriteType::CacheThrough => self.persist_file(&m, path, &rec).await.map(|_| ()),
            WriteType::Through => {
                let blocks = self.persist_file(&m, path, &rec).await?;
                self.workers.evict(blocks);
                Ok(())
            }
            WriteType::AsyncThrough => {
                if let Some(s) = self.syncer() {
                    let _ = s.cast(SyncerMsg::Enqueue(path.to_string()));
                }
                Ok(())
            }
        }
    }

    /// Persists every complete, unpersisted file at or below `path`.
    pub async fn persist_tree(&self, path: &str) -> Result<u64, ErrorInfo> {
        let m = self
            .mount_of(path)
            .await?
            .ok_or_else(|| ErrorInfo::new(ErrorCode::InvalidArgument, format!("{path} is not under a mount")))?;
        let mut n = 0;
        for (p, rec) in self.ns.call(|r| NamespaceMsg::Walk(path.to_string(), r)).await?? {
            if rec.attr.file_type == FileType::File && rec.attr.complete && !rec.is_persisted() {
                self.persist_file(&m, &p, &rec).await?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Drops cached copies of the persisted files at or below `path`; files
    /// not in the UFS keep theirs (they are the only copy), and so do pinned
    /// files (unpin them first).
    pub async fn free_tree(&self, path: &str) -> Result<u64, ErrorInfo> {
        self.mount_of(path)
            .await?
            .ok_or_else(|| ErrorInfo::new(ErrorCode::InvalidArgument, format!("{path} is not under a mount")))?;
        let mut blocks = Vec::new();
        let mut files = 0;
        for (_, rec) in self.ns.call(|r| NamespaceMsg::Walk(path.to_string(), r)).await?? {
            if rec.attr.file_type == FileType::File && !rec.attr.pinned && rec.is_persisted() {
                blocks.extend(rec.blocks.iter().copied());
                files += 1;
            }
        }
        self.workers.evict(blocks);
        Ok(files)
    }

    /// Persists the file now at `p` (gone or already persisted: done).
    pub(super) async fn persist_path(&self, p: &str) -> Result<(), ErrorInfo> {
        let Some(m) = self.mount_of(p).await? else { return Ok(()) };
        let Some(rec) = self.lookup(p).await? else { return Ok(()) };
        if rec.attr.file_type != FileType::File || !rec.attr.complete {
            return Ok(());
        }
        self.persist_file(&m, p, &rec).await.map(|_| ())
    }
}
