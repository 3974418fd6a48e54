//! Loading UFS metadata into the namespace as a mount's sync policy says.

use std::sync::Arc;

use strata_protocol::journal::{ApplyResult, JournalEntry};
use strata_protocol::messages::FileType;
use strata_protocol::ufs::{self as pufs, UfsEntry};
use strata_protocol::{now_ms, ErrorCode, ErrorInfo};

use super::super::namespace::{InodeRecord, NEVER_SYNCED};
use super::Mounts;

fn needs_sync(rec: &InodeRecord, interval_ms: i64, now: i64) -> bool {
    let synced = rec.ufs.as_ref().map(|u| u.synced_ms).unwrap_or(NEVER_SYNCED);
    if synced == NEVER_SYNCED {
        return true;
    }
    match interval_ms {
        i if i < 0 => false,
        0 => true,
        i => now.saturating_sub(synced) >= i,
    }
}

/// The most UFS entries one journal entry of a sync carries (names are at
/// most 255 bytes: a part stays far below the bound on a replication
/// message).
const SYNC_PART: usize = 5_000;

impl Mounts {
    /// One sync at a time per directory: concurrent misses wait for it.
    pub(super) fn sync_lock(&self, dir: &str) -> Arc<tokio::sync::Mutex<()>> {
        let mut locks = self.sync_locks.lock();
        if locks.len() > 4096 {
            locks.retain(|_, l| Arc::strong_count(l) > 1);
        }
        locks.entry(dir.to_string()).or_default().clone()
    }

    /// Journals a UFS listing of `dir` in parts of at most [`SYNC_PART`]
    /// entries, in name order (a listing of any size, no entry too large
    /// to replicate); the last part marks the directory synced.
    async fn propose_listing(&self, dir: &str, mut entries: Vec<UfsEntry>, now: i64) -> Result<(), ErrorInfo> {
        entries.sort_by(|a, b| a.name.cmp(&b.name));
        entries.dedup_by(|a, b| a.name == b.name);
        let parts = entries.len().div_ceil(SYNC_PART).max(1);
        let mut rest = entries.into_iter();
        let mut after = None;
        for i in 0..parts {
            let part: Vec<UfsEntry> = rest.by_ref().take(SYNC_PART).collect();
            let next = part.last().map(|e| e.name.clone());
            let entry = JournalEntry::UfsSyncPart {
                dir: dir.to_string(),
                entries: part,
                after: after.take(),
                last: i + 1 == parts,
                time_ms: now,
            };
            if let ApplyResult::Freed { blocks } = self.journal.propose(entry).await? {
                self.workers.free(blocks);
            }
            after = next;
        }
        Ok(())
    }

    /// Brings the namespace up to date with the UFS for an access to `path`:
    /// every directory from the mount point down to `path`'s parent (and `path`
    /// itself when `list`) is listed from the UFS if the mount's sync policy
    /// says it is due. A UFS that cannot be reached leaves already loaded
    /// metadata in place (logged) and fails only what was never loaded.
    pub async fn ensure_synced(&self, path: &str, list: bool) -> Result<(), ErrorInfo> {
        let Some(m) = self.mount_of(path).await? else { return Ok(()) };
        let rel = pufs::key_of(path, &m.path);
        let comps: Vec<&str> = rel.split('/').filter(|c| !c.is_empty()).collect();
        let n = if list { comps.len() } else { comps.len().saturating_sub(1) };
        let mut dirs = vec![m.path.clone()];
        for i in 0..n {
            dirs.push(format!("{}/{}", m.path, comps[..=i].join("/")));
        }
        for dir in dirs {
            let Some(rec) = self.lookup(&dir).await? else { return Ok(()) };
            if rec.attr.file_type != FileType::Directory {
                return Ok(());
            }
            let now = now_ms();
            if !needs_sync(&rec, m.options.sync_interval_ms, now) {
                continue;
            }
            let lock = self.sync_lock(&dir);
            let _g = lock.lock().await;
            let Some(rec) = self.lookup(&dir).await? else { return Ok(()) };
            if !needs_sync(&rec, m.options.sync_interval_ms, now) {
                continue; // another access synced it while this one waited
            }
            let entries = match self.ufs.list_dir(&m.spec, &pufs::key_of(&dir, &m.path)).await {
                Ok(e) => e,
                Err(e) if e.code == ErrorCode::NotFound => Vec::new(),
                Err(e) => {
                    let loaded = rec.ufs.as_ref().is_some_and(|u| u.synced_ms != NEVER_SYNCED);
                    if loaded {
                        tracing::warn!(dir = %dir, error = %e, "UFS listing failed; serving loaded metadata");
                        continue;
                    }
                    return Err(e);
                }
            };
            self.propose_listing(&dir, entries, now).await?;
        }
        Ok(())
    }
}
