//! TTLs: per file or directory, or per mount; applied by the leader's MountSyncer.

use strata_protocol::journal::{ApplyResult, JournalEntry};
use strata_protocol::messages::FileType;
use strata_protocol::ufs as pufs;
use strata_protocol::{now_ms, ErrorInfo};

use super::super::namespace_actor::NamespaceMsg;
use super::Mounts;

impl Mounts {
    /// Applies TTLs: a file's own TTL (`strata ttl`, `Attr.ttl`) or else the
    /// TTL of the mount it is under, to each complete file not modified for
    /// that long. The pass walks every mount with a TTL, and the whole
    /// namespace once a per-inode TTL has ever been set. Free skips pinned and
    /// unpersisted files (evicting blocks no worker holds any more is a no-op,
    /// so a freed file costs nothing on later passes); delete goes through the
    /// UFS first when the file is under a mount, like a client's delete;
    /// persist writes files not in the UFS yet. A directory with its own
    /// delete TTL is removed once it is empty and unchanged for its TTL.
    pub(super) async fn ttl_pass(&self) -> Result<(), ErrorInfo> {
        let now = now_ms();
        let ms = self.mounts().await?;
        let roots: Vec<String> = if self.ns.call(NamespaceMsg::TtlUsed).await?? {
            vec!["/".to_string()]
        } else {
            ms.iter().filter(|m| m.options.ttl_ms > 0).map(|m| m.path.clone()).collect()
        };
        for root in roots {
            let mut evicted = Vec::new();
            for (p, rec) in self.ns.call(|r| NamespaceMsg::Walk(root.clone(), r)).await?? {
                let m = ms.iter().find(|m| pufs::is_under(&p, &m.path));
                let (ttl_ms, action) = match (rec.attr.ttl, m) {
                    (Some(t), _) => (t.ttl_ms, t.action),
                    (None, Some(m)) if m.options.ttl_ms > 0 => (m.options.ttl_ms, m.options.ttl_action),
                    _ => continue,
                };
                if now.saturating_sub(rec.attr.mtime_ms) < ttl_ms as i64 {
                    continue;
                }
                match rec.attr.file_type {
                    FileType::File if rec.attr.complete => {}
                    FileType::Directory
                        if rec.attr.ttl.is_some()
                            && action == pufs::TtlAction::Delete
                            && rec.attr.size == 0
                            && p != "/"
                            && m.is_none_or(|m| m.path != p) =>
                    {
                        self.ttl_delete(&p, now).await;
                        continue;
                    }
                    _ => continue,
                }
                let persisted = rec.is_persisted();
                match action {
                    pufs::TtlAction::Free => {
                        if persisted && !rec.attr.pinned {
                            evicted.extend(rec.blocks.iter().copied());
                        }
                    }
                    pufs::TtlAction::Persist => {
                        let Some(m) = m else { continue };
                        if !persisted {
                            if let Err(e) = self.persist_file(m, &p, &rec).await {
                                tracing::warn!(path = %p, error = %e, "TTL persist failed; next pass retries");
                            }
                        }
                    }
                    pufs::TtlAction::Delete => self.ttl_delete(&p, now).await,
                }
            }
            self.workers.evict(evicted);
        }
        Ok(())
    }

    /// Deletes a file (or an empty directory) whose TTL expired: from the UFS
    /// first when it is under a mount, then from the namespace.
    pub(super) async fn ttl_delete(&self, p: &str, now: i64) {
        let r = match self.before_delete(p, false, false).await {
            Ok(pending) => {
                self.journal_change(
                    pending,
                    JournalEntry::Delete { path: p.to_string(), recursive: false, time_ms: now },
                )
                .await
            }
            Err(e) => Err(e),
        };
        match r {
            Ok(ApplyResult::Freed { blocks }) => {
                self.workers.free(blocks);
                tracing::info!(path = %p, "TTL expired: deleted");
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(path = %p, error = %e, "TTL delete failed; next pass retries"),
        }
    }
}
