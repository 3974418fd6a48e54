//! Command-line definitions.

use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};

use crate::config::{self, Config};

/// Strata: a distributed file cache.
#[derive(Parser, Debug)]
#[command(name = "strata", version, about)]
pub struct Cli {
    /// Configuration file (TOML; template in etc/strata.toml).
    #[arg(long, global = true, env = "STRATA_CONFIG")]
    pub config: Option<PathBuf>,
    /// Command.
    #[command(subcommand)]
    pub command: Command,
}

/// Commands.
#[derive(Subcommand, Debug)]
pub enum Command {
    /// Run a master (journal, namespace, worker registry, client port).
    Master(MasterArgs),
    /// Run a worker (storage tiers and data port).
    Worker(WorkerArgs),
    /// Run a master and a worker in one process on an embedded default data dir.
    Local(LocalArgs),
    /// Mount a cluster with FUSE (until SIGINT/SIGTERM).
    Fuse(FuseArgs),
    /// Filesystem commands against a cluster.
    Fs(FsArgs),
    /// Workers, capacity per tier, block counts, masters.
    Report(ReportArgs),
    /// Mount a UFS (`s3://bucket/prefix`, `file:///dir`) into the namespace;
    /// without arguments, list the mounts.
    Mount(MountArgs),
    /// Remove a mount and its cached data from the namespace (the UFS keeps its data).
    Unmount(PathArgs),
    /// Warm the cache with a file or tree from its UFS (progress bar).
    Load(PathArgs),
    /// Drop cached copies of persisted files (the UFS keeps the data).
    Free(PathArgs),
    /// Write files not yet in their UFS to it now.
    Persist(PathArgs),
    /// Pin a file or tree: its cached blocks are never evicted (files
    /// created later under a pinned directory are pinned too).
    Pin(PathArgs),
    /// Unpin a file or tree: its blocks may be evicted again once persisted.
    Unpin(PathArgs),
    /// Set a file's or tree's TTL: once a file has not been modified for
    /// DURATION, the action applies (overrides the mount's TTL; files created
    /// later under the directory get it too). `--clear` removes it.
    Ttl(TtlArgs),
    /// A file's blocks: each one's copies (worker, tier) and whether it
    /// has as many as it should.
    Info(InfoArgs),
    /// Cluster administration.
    Admin(AdminArgs),
}

/// `strata info`.
#[derive(Args, Debug)]
pub struct InfoArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// A file.
    pub path: String,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

/// `strata ttl`.
#[derive(Args, Debug)]
pub struct TtlArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Path (file or directory; recursive).
    pub path: String,
    /// Time since the last modification (`30s`, `1h`, `7d`).
    #[arg(required_unless_present = "clear", conflicts_with = "clear")]
    pub duration: Option<String>,
    /// free | delete | persist: what happens to a file whose TTL expired.
    #[arg(long, default_value = "free", conflicts_with = "clear")]
    pub action: String,
    /// Remove the TTL (the mount's TTL, if any, applies again).
    #[arg(long)]
    pub clear: bool,
}

/// `strata admin`.
#[derive(Args, Debug)]
pub struct AdminArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Subcommand.
    #[command(subcommand)]
    pub cmd: AdminCmd,
}

/// `strata admin` subcommands.
#[derive(Subcommand, Debug)]
pub enum AdminCmd {
    /// The masters of the Raft group.
    #[command(subcommand)]
    Master(MasterCmd),
    /// Each master's journal.
    #[command(subcommand)]
    Journal(JournalCmd),
    /// Workers: decommission and recommission.
    #[command(subcommand)]
    Worker(WorkerCmd),
}

/// `strata admin worker` subcommands.
#[derive(Subcommand, Debug)]
pub enum WorkerCmd {
    /// Stop placing blocks on a worker and copy every block it holds to
    /// other workers; `strata report` shows the blocks left, and the
    /// worker as `decommissioned` once it may be stopped with nothing lost.
    Decommission {
        /// Worker id, as `strata report` shows it (16 hex digits).
        #[arg(value_parser = parse_worker_id)]
        id: u64,
        /// Wait (showing progress) until it may be stopped.
        #[arg(long)]
        wait: bool,
    },
    /// Undo a decommission: the worker takes new blocks again.
    Recommission {
        /// Worker id (16 hex digits).
        #[arg(value_parser = parse_worker_id)]
        id: u64,
    },
}

/// A worker id as reports print it (16 hex digits), or in decimal.
fn parse_worker_id(s: &str) -> Result<u64, String> {
    let hex = s.strip_prefix("0x").unwrap_or(s);
    if hex.len() == 16 {
        return u64::from_str_radix(hex, 16).map_err(|e| format!("worker id {s:?}: {e}"));
    }
    s.parse().map_err(|e| format!("worker id {s:?}: {e} (use the 16 hex digits `strata report` shows)"))
}

/// `strata admin journal` subcommands.
#[derive(Subcommand, Debug)]
pub enum JournalCmd {
    /// Each master's last log, applied, snapshot and purged index; with
    /// `--digest`, a digest of each one's state machine (equal on masters
    /// at the same applied index).
    Info {
        /// Also digest each master's state machine (a walk over all of it).
        #[arg(long)]
        digest: bool,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
    /// Every master takes a journal snapshot now (and purges its log
    /// behind it, keeping the configured tail).
    Snapshot,
}

/// `strata admin master` subcommands: one membership change at a time.
#[derive(Subcommand, Debug)]
pub enum MasterCmd {
    /// Add a running master (started with `--join`): learner until it has
    /// caught up with the journal, then voter.
    Add {
        /// `ID=HOST:RPC_PORT:MESH_PORT`.
        #[arg(value_parser = config::parse_peer)]
        peer: config::Peer,
    },
    /// Remove a master from the group; it stops serving and exits.
    Remove {
        /// Raft id.
        id: u64,
    },
}

/// `strata mount`.
#[derive(Args, Debug)]
pub struct MountArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Namespace path to mount at (created if missing; must be empty).
    pub path: Option<String>,
    /// UFS URI: `s3://bucket/prefix`, `file:///dir`, or another OpenDAL `scheme://...`.
    pub uri: Option<String>,
    /// cache | through | cache-through | async-through.
    #[arg(long, default_value = "cache-through")]
    pub write_type: String,
    /// cache | cache-promote | no-cache.
    #[arg(long, default_value = "cache")]
    pub read_type: String,
    /// Metadata sync: `never`, `always`, or an interval (`30s`, `5m`).
    #[arg(long, default_value = "never")]
    pub sync: String,
    /// Block size of files loaded from the UFS.
    #[arg(long, value_parser = config::parse_size, default_value = "64MiB")]
    pub block_size: u64,
    /// Copies of async-through blocks kept on workers until persisted.
    #[arg(long, default_value_t = 2)]
    pub replicas: u32,
    /// Placement of new blocks under the mount: local-first, round-robin,
    /// most-available, capacity-weighted or hash (default: the cluster's).
    #[arg(long)]
    pub placement: Option<String>,
    /// Files not modified for this long (`1h`, `30s`) get `--ttl-action`.
    #[arg(long)]
    pub ttl: Option<String>,
    /// free | delete | persist: what happens to a file whose TTL expired.
    #[arg(long, default_value = "free")]
    pub ttl_action: String,
    /// Backend option `KEY=VALUE` (repeat): endpoint, region, access_key_id,
    /// secret_access_key, … (see OpenDAL's service docs).
    #[arg(long = "option", short = 'o')]
    pub options: Vec<String>,
    /// Machine-readable listing.
    #[arg(long)]
    pub json: bool,
}

/// A command on one path.
#[derive(Args, Debug)]
pub struct PathArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Path.
    pub path: String,
}

impl Command {
    /// Whether this command runs a server (logs at info by default).
    pub fn is_server(&self) -> bool {
        matches!(self, Command::Master(_) | Command::Worker(_) | Command::Local(_) | Command::Fuse(_))
    }
}

/// Flags shared by server roles.
#[derive(Args, Debug, Clone)]
pub struct CommonServer {
    /// Data directory (overrides `data-dir`).
    #[arg(long)]
    pub data_dir: Option<PathBuf>,
    /// Cluster secret (overrides `cluster-secret`).
    #[arg(long, env = "STRATA_CLUSTER_SECRET")]
    pub secret: Option<String>,
}

/// `strata master`.
#[derive(Args, Debug)]
pub struct MasterArgs {
    #[command(flatten)]
    pub common: CommonServer,
    /// Raft id.
    #[arg(long)]
    pub id: Option<u64>,
    /// Address to bind and advertise.
    #[arg(long)]
    pub host: Option<String>,
    /// Client RPC port (0 picks a free one).
    #[arg(long)]
    pub rpc_port: Option<u16>,
    /// Mesh port (0 picks a free one).
    #[arg(long)]
    pub mesh_port: Option<u16>,
    /// Heartbeat silence after which a worker is lost, in ms.
    #[arg(long)]
    pub worker_lost_timeout_ms: Option<u64>,
    /// A lost worker silent this much longer is forgotten, in ms.
    #[arg(long)]
    pub worker_forget_after_ms: Option<u64>,
    /// Take a journal snapshot after this many entries.
    #[arg(long)]
    pub snapshot_entries: Option<u64>,
    /// Journal entries kept behind the latest snapshot.
    #[arg(long)]
    pub log_keep: Option<u64>,
    /// Copies kept of blocks that exist nowhere else (default 2).
    #[arg(long)]
    pub replicas: Option<u8>,
    /// Fail writes that cannot reach their minimum copies (instead of
    /// writing fewer and repairing later).
    #[arg(long)]
    pub strict_replicas: bool,
    /// Placement of new blocks: local-first, round-robin, most-available,
    /// capacity-weighted or hash.
    #[arg(long)]
    pub placement: Option<String>,
    /// The other initial masters: `ID=HOST:RPC_PORT:MESH_PORT`, comma-separated.
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// Join a running group: initialize nothing, serve once the leader has
    /// added this master (`strata admin master add`).
    #[arg(long)]
    pub join: bool,
}

/// `strata worker`.
#[derive(Args, Debug)]
pub struct WorkerArgs {
    #[command(flatten)]
    pub common: CommonServer,
    /// Address to bind and advertise.
    #[arg(long)]
    pub host: Option<String>,
    /// Data port (0 picks a free one).
    #[arg(long)]
    pub data_port: Option<u16>,
    /// Mesh port (0 picks a free one).
    #[arg(long)]
    pub mesh_port: Option<u16>,
    /// The masters' mesh addresses, comma-separated.
    #[arg(long)]
    pub master_mesh: Option<String>,
    /// A tier, `NAME:PATH:SIZE` (repeat, fastest first); replaces configured tiers.
    #[arg(long = "tier", value_parser = config::parse_tier)]
    pub tiers: Vec<config::TierSection>,
    /// Heartbeat period in ms.
    #[arg(long)]
    pub heartbeat_interval_ms: Option<u64>,
}

/// `strata local`.
#[derive(Args, Debug)]
pub struct LocalArgs {
    #[command(flatten)]
    pub common: CommonServer,
    /// Client RPC port (0 picks a free one).
    #[arg(long)]
    pub rpc_port: Option<u16>,
    /// Data port (0 picks a free one).
    #[arg(long)]
    pub data_port: Option<u16>,
    /// Mesh port (0 picks a free one).
    #[arg(long)]
    pub mesh_port: Option<u16>,
    /// A tier, `NAME:PATH:SIZE` (repeat, fastest first).
    #[arg(long = "tier", value_parser = config::parse_tier)]
    pub tiers: Vec<config::TierSection>,
    /// Where to mount the filesystem (default: DATA_DIR/mnt).
    #[arg(long)]
    pub mount: Option<PathBuf>,
    /// Do not mount the filesystem.
    #[arg(long, conflicts_with = "mount")]
    pub no_mount: bool,
}

/// `strata fuse`.
#[derive(Args, Debug)]
pub struct FuseArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Mount point (created if missing).
    pub mountpoint: PathBuf,
    /// Directory for write staging files (default: a fresh one under /tmp).
    #[arg(long)]
    pub staging_dir: Option<PathBuf>,
    /// Attribute and entry cache time in ms.
    #[arg(long, default_value_t = 1000)]
    pub ttl_ms: u64,
    /// Mount options (`mount -o` style; accepted for fstab, mostly ignored).
    #[arg(short = 'o')]
    pub options: Option<String>,
}

/// Where a client command finds the cluster.
#[derive(Args, Debug, Clone)]
pub struct ClientArgs {
    /// Master client address (default: the config's, else the local cluster).
    #[arg(long, env = "STRATA_MASTER", global = true)]
    pub master: Option<String>,
    /// Serve reads from any master's local state (possibly stale, no quorum needed).
    #[arg(long, global = true)]
    pub stale_reads: bool,
}

/// `strata fs`.
#[derive(Args, Debug)]
pub struct FsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Subcommand.
    #[command(subcommand)]
    pub cmd: FsCmd,
}

/// `strata fs` subcommands.
#[derive(Subcommand, Debug)]
pub enum FsCmd {
    /// List a directory.
    Ls {
        /// Path.
        path: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Create a directory.
    Mkdir {
        /// Path.
        path: String,
        /// Create parents; an existing directory is fine.
        #[arg(short, long)]
        parents: bool,
    },
    /// Copy a local file into Strata.
    Put {
        /// Local file.
        local: PathBuf,
        /// Strata path.
        remote: String,
        /// Block size (e.g. 64MiB).
        #[arg(long, value_parser = config::parse_size)]
        block_size: Option<u64>,
        /// Replace an existing file.
        #[arg(short, long)]
        force: bool,
    },
    /// Copy a Strata file to the local filesystem.
    Get {
        /// Strata path.
        remote: String,
        /// Local file.
        local: PathBuf,
    },
    /// Print a file.
    Cat {
        /// Path.
        path: String,
    },
    /// Remove a file or directory.
    Rm {
        /// Path.
        path: String,
        /// Remove directories and their contents.
        #[arg(short, long)]
        recursive: bool,
    },
    /// Rename (atomically; replaces a file at the destination).
    Mv {
        /// Source.
        src: String,
        /// Destination.
        dst: String,
    },
    /// Set how many copies of a file's (or tree's) blocks the cluster
    /// keeps on workers: at least MIN (repaired when a worker is lost), at
    /// most MAX (extra copies trimmed). 0 means the default: the cluster's
    /// `master.replicas` for data that exists nowhere else, none beyond
    /// the cache for data its UFS has. A directory passes it on to what
    /// is created in it.
    Setrep {
        /// Path.
        path: String,
        /// Copies kept at least (0: default).
        #[arg(long)]
        min: u8,
        /// Copies kept at most (0: default).
        #[arg(long, default_value_t = 0)]
        max: u8,
        /// Also everything below a directory.
        #[arg(short = 'R', long)]
        recursive: bool,
    },
    /// Show attributes.
    Stat {
        /// Path.
        path: String,
        /// Machine-readable output.
        #[arg(long)]
        json: bool,
    },
    /// Disk usage of a tree.
    Du {
        /// Path.
        path: String,
    },
}

/// `strata report`.
#[derive(Args, Debug)]
pub struct ReportArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Machine-readable output.
    #[arg(long)]
    pub json: bool,
}

fn load_config(path: &Option<PathBuf>) -> anyhow::Result<Config> {
    let c = match path {
        Some(p) => Config::load(p).map_err(anyhow::Error::msg)?,
        None => Config::default(),
    };
    Ok(c)
}

/// Runs a parsed command line.
pub async fn dispatch(cli: Cli) -> anyhow::Result<()> {
    let mut cfg = load_config(&cli.config)?;
    match cli.command {
        Command::Master(a) => {
            crate::server::apply_common(&mut cfg, &a.common);
            if let Some(v) = a.id {
                cfg.master.id = v;
            }
            if let Some(v) = a.host {
                cfg.master.host = v;
            }
            if let Some(v) = a.rpc_port {
                cfg.master.rpc_port = v;
            }
            if let Some(v) = a.mesh_port {
                cfg.master.mesh_port = v;
            }
            if let Some(v) = a.worker_lost_timeout_ms {
                cfg.master.worker_lost_timeout_ms = v;
            }
            if let Some(v) = a.worker_forget_after_ms {
                cfg.master.worker_forget_after_ms = v;
            }
            if !a.peers.is_empty() {
                cfg.master.peers = a.peers;
            }
            if let Some(v) = a.snapshot_entries {
                cfg.master.snapshot_entries = v;
            }
            if let Some(v) = a.log_keep {
                cfg.master.log_keep = v;
            }
            if let Some(v) = a.replicas {
                cfg.master.replicas = v;
            }
            if a.strict_replicas {
                cfg.master.degraded_writes = false;
            }
            if let Some(v) = a.placement {
                cfg.master.placement = v.parse().map_err(anyhow::Error::msg)?;
            }
            if a.join {
                cfg.master.join = true;
            }
            cfg.validate().map_err(anyhow::Error::msg).context("invalid configuration")?;
            crate::server::run_master(cfg).await
        }
        Command::Worker(a) => {
            crate::server::apply_common(&mut cfg, &a.common);
            if let Some(v) = a.host {
                cfg.worker.host = v;
            }
            if let Some(v) = a.data_port {
                cfg.worker.data_port = v;
            }
            if let Some(v) = a.mesh_port {
                cfg.worker.mesh_port = v;
            }
            if let Some(v) = a.master_mesh {
                cfg.worker.master_mesh = v;
            }
            if let Some(v) = a.heartbeat_interval_ms {
                cfg.worker.heartbeat_interval_ms = v;
            }
            if !a.tiers.is_empty() {
                cfg.worker.tiers = a.tiers;
            }
            cfg.validate().map_err(anyhow::Error::msg).context("invalid configuration")?;
            crate::server::run_worker(cfg).await
        }
        Command::Local(a) => {
            crate::server::apply_common(&mut cfg, &a.common);
            if let Some(v) = a.rpc_port {
                cfg.master.rpc_port = v;
            }
            if let Some(v) = a.data_port {
                cfg.worker.data_port = v;
            }
            if let Some(v) = a.mesh_port {
                cfg.master.mesh_port = v;
            }
            if !a.tiers.is_empty() {
                cfg.worker.tiers = a.tiers;
            }
            cfg.validate().map_err(anyhow::Error::msg).context("invalid configuration")?;
            let mount = if a.no_mount { None } else { Some(a.mount.unwrap_or_else(|| cfg.data_dir.join("mnt"))) };
            crate::server::run_local(cfg, mount).await
        }
        Command::Fuse(a) => crate::server::run_fuse(&cfg, a).await,
        Command::Fs(a) => crate::fs_cmd::run(&cfg, &a.client, a.cmd).await,
        Command::Report(a) => crate::fs_cmd::report(&cfg, &a.client, a.json).await,
        Command::Mount(a) => crate::fs_cmd::mount(&cfg, a).await,
        Command::Unmount(a) => crate::fs_cmd::unmount(&cfg, a).await,
        Command::Load(a) => crate::fs_cmd::load(&cfg, a).await,
        Command::Free(a) => crate::fs_cmd::free(&cfg, a).await,
        Command::Persist(a) => crate::fs_cmd::persist(&cfg, a).await,
        Command::Pin(a) => crate::fs_cmd::set_pin(&cfg, a, true).await,
        Command::Info(a) => crate::fs_cmd::info(&cfg, a).await,
        Command::Unpin(a) => crate::fs_cmd::set_pin(&cfg, a, false).await,
        Command::Ttl(a) => crate::fs_cmd::set_ttl(&cfg, a).await,
        Command::Admin(a) => crate::fs_cmd::admin(&cfg, a).await,
    }
}
