//! FUSE for Strata: [`fs::StrataFs`] is the filesystem layer (inode table,
//! open files, write staging) and runs without a kernel; [`adapter`] is the
//! thin `fuser::Filesystem` over it; [`mount`] mounts it.
//!
//! Semantics: reads come from the cluster; writes go to a local staging file
//! per open handle and are published atomically on flush/fsync/close
//! (`CreateDetached` + `SwapContent`, keeping the inode number), which gives
//! close-to-open consistency across mounts and supports overwrite, random
//! writes, append, truncate and sparse files.

pub mod adapter;
pub mod errno;
pub mod fs;

use std::path::{Path, PathBuf};
use std::time::Duration;

use fuser::{Config, MountOption, SessionACL};
use strata_client::Client;

/// Mount settings.
#[derive(Clone, Debug)]
pub struct MountConfig {
    /// How long the kernel may cache attributes and names.
    pub ttl: Duration,
    /// Directory for write staging files.
    pub staging_dir: PathBuf,
    /// Kernel request threads (default: one per CPU, 2 to 8).
    pub threads: usize,
    /// Block size of files written through the mount.
    pub block_size: u64,
    /// Let other users use the mount (allow_other).
    pub allow_other: bool,
    /// Bytes of clean copies of written files kept in the staging
    /// directory after close, for later opens (0: none).
    pub copy_bytes: u64,
}

impl MountConfig {
    /// Defaults with staging under `staging_dir`.
    pub fn new(staging_dir: PathBuf) -> Self {
        MountConfig {
            ttl: Duration::from_secs(1),
            staging_dir,
            // More threads than CPUs only queue for them: on 2 cores the
            // workload took 8.9 s with 2 threads and 9.4 s with 4 (each
            // request is woken on a thread that must then wait for a CPU).
            threads: std::thread::available_parallelism().map_or(2, |n| n.get().clamp(2, 8)),
            block_size: strata_protocol::DEFAULT_BLOCK_SIZE,
            allow_other: true,
            copy_bytes: 1 << 30,
        }
    }
}

/// A mounted filesystem; unmounts on [`Mount::unmount`] (or drop).
pub struct Mount {
    session: Option<fuser::BackgroundSession>,
    /// Where it is mounted.
    pub mountpoint: PathBuf,
}

impl Mount {
    /// Whether the kernel mount is still served (false once someone ran `umount`).
    pub fn is_mounted(&self) -> bool {
        self.session.as_ref().is_some_and(|s| !s.guard.is_finished())
    }

    /// Unmounts and waits for the request threads to finish.
    pub fn unmount(mut self) -> std::io::Result<()> {
        match self.session.take() {
            Some(s) => s.umount_and_join(),
            None => Ok(()),
        }
    }
}

impl Drop for Mount {
    fn drop(&mut self) {
        if let Some(s) = self.session.take() {
            let _ = s.umount_and_join();
        }
    }
}

/// Mounts Strata at `mountpoint`. Must be called outside the tokio runtime
/// threads' async context (it blocks for the mount handshake); `rt` runs the
/// client calls.
pub fn mount(
    client: Client,
    rt: tokio::runtime::Handle,
    mountpoint: &Path,
    cfg: MountConfig,
) -> std::io::Result<Mount> {
    std::fs::create_dir_all(mountpoint)?;
    std::fs::create_dir_all(&cfg.staging_dir)?;
    let notifier = std::sync::Arc::new(std::sync::OnceLock::new());
    let fs = fs::StrataFs::new(client, rt, cfg.clone(), notifier.clone());
    let mut c = Config::default();
    c.mount_options = vec![
        MountOption::FSName("strata".into()),
        MountOption::Subtype("strata".into()),
        MountOption::DefaultPermissions,
        MountOption::RW,
    ];
    if cfg.allow_other {
        c.acl = SessionACL::All;
    }
    c.n_threads = Some(cfg.threads.max(1));
    c.clone_fd = true;
    let session = fuser::Session::new(adapter::Adapter::new(fs), mountpoint, &c)?;
    let _ = notifier.set(session.notifier());
    let bg = session.spawn()?;
    Ok(Mount { session: Some(bg), mountpoint: mountpoint.to_path_buf() })
}
