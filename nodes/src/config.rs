//! Node configuration: a TOML file (template: `etc/strata.toml`), then
//! command-line flags on top. Keys are kebab-case; sizes accept integers
//! (bytes) or strings with a unit (`64MiB`, `10GiB`).

use std::path::{Path, PathBuf};

use serde::{Deserialize, Deserializer};

/// A size in bytes, written as an integer or with a unit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Bytes(pub u64);

/// Parses `123`, `64KiB`, `64MiB`, `10GiB`, `1TiB` (also KB/MB/GB/TB as powers of 1000, and K/M/G/T as binary).
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num.parse().map_err(|_| format!("{s:?} is not a size (examples: 4096, 64MiB, 10GiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "K" | "KiB" => 1 << 10,
        "M" | "MiB" => 1 << 20,
        "G" | "GiB" => 1 << 30,
        "T" | "TiB" => 1 << 40,
        "KB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => return Err(format!("unknown size unit {other:?} in {s:?}")),
    };
    n.checked_mul(mult).ok_or_else(|| format!("{s:?} is too large"))
}

impl<'de> Deserialize<'de> for Bytes {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Bytes(n)),
            Raw::S(s) => parse_size(&s).map(Bytes).map_err(serde::de::Error::custom),
        }
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct Config {
    /// Shared secret of the server mesh; nodes with another secret are refused.
    pub cluster_secret: String,
    /// Root of this node's state (journal, worker id, disk tiers).
    pub data_dir: PathBuf,
    /// Master settings.
    pub master: MasterConfig,
    /// Worker settings.
    pub worker: WorkerConfig,
    /// Client settings.
    pub client: ClientSection,
}

/// `[master]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct MasterConfig {
    /// Raft id.
    pub id: u64,
    /// Address to bind and advertise.
    pub host: String,
    /// Client RPC port.
    pub rpc_port: u16,
    /// Mesh port.
    pub mesh_port: u16,
    /// Journal entries between snapshots.
    pub snapshot_entries: u64,
    /// Journal entries kept behind the latest snapshot; a follower further
    /// behind catches up by installing the snapshot.
    pub log_keep: u64,
    /// Heartbeat silence after which a worker is lost.
    pub worker_lost_timeout_ms: u64,
    /// A lost worker silent this much longer is forgotten (dropped from
    /// reports; it registers anew if it comes back).
    pub worker_forget_after_ms: u64,
    /// Copies kept of blocks that exist nowhere else (files outside UFS
    /// mounts, not yet persisted), for files that set none themselves.
    pub replicas: u8,
    /// Accept a write with fewer copies than its minimum while fewer
    /// workers are live (the block is repaired once they are); `false`
    /// fails such writes.
    pub degraded_writes: bool,
    /// How new blocks are placed: `local-first`, `round-robin`,
    /// `most-available`, `capacity-weighted` or `hash` (a mount may choose
    /// its own).
    pub placement: strata_protocol::ufs::PlacementPolicy,
    /// The other initial masters, `ID=HOST:RPC_PORT:MESH_PORT`.
    pub peers: Vec<String>,
    /// Join an existing group (wait to be added by the leader) instead of
    /// initializing one.
    pub join: bool,
}

/// `[worker]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct WorkerConfig {
    /// Address to bind and advertise.
    pub host: String,
    /// Data port.
    pub data_port: u16,
    /// Mesh port.
    pub mesh_port: u16,
    /// The masters' mesh addresses, comma-separated.
    pub master_mesh: String,
    /// Heartbeat period.
    pub heartbeat_interval_ms: u64,
    /// Tiers, fastest first. Empty: MEM in /dev/shm and SSD under data-dir.
    pub tiers: Vec<TierSection>,
}

/// `[[worker.tiers]]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "kebab-case")]
pub struct TierSection {
    /// `MEM`, `SSD` or `HDD`.
    pub name: String,
    /// Directory for block files.
    pub path: PathBuf,
    /// Capacity.
    pub capacity: Bytes,
}

/// `[client]`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields, rename_all = "kebab-case")]
pub struct ClientSection {
    /// Master client address.
    pub master: String,
    /// Block size of new files.
    pub block_size: Bytes,
    /// Reads from any master's local state, without a read barrier.
    pub stale_reads: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            cluster_secret: "strata-dev-secret".into(),
            data_dir: default_data_dir(),
            master: MasterConfig::default(),
            worker: WorkerConfig::default(),
            client: ClientSection::default(),
        }
    }
}

impl Default for MasterConfig {
    fn default() -> Self {
        MasterConfig {
            id: 1,
            host: "127.0.0.1".into(),
            rpc_port: 19998,
            mesh_port: 19997,
            snapshot_entries: 20_000,
            log_keep: 5_000,
            worker_lost_timeout_ms: 10_000,
            worker_forget_after_ms: 1_800_000,
            replicas: 2,
            degraded_writes: true,
            placement: Default::default(),
            peers: Vec::new(),
            join: false,
        }
    }
}

impl Default for WorkerConfig {
    fn default() -> Self {
        WorkerConfig {
            host: "127.0.0.1".into(),
            data_port: 29999,
            mesh_port: 29997,
            master_mesh: "127.0.0.1:19997".into(),
            heartbeat_interval_ms: 1000,
            tiers: Vec::new(),
        }
    }
}

impl Default for ClientSection {
    fn default() -> Self {
        ClientSection {
            master: "127.0.0.1:19998".into(),
            block_size: Bytes(strata_protocol::DEFAULT_BLOCK_SIZE),
            stale_reads: false,
        }
    }
}

/// `$STRATA_HOME`, else `$HOME/.strata`.
pub fn default_data_dir() -> PathBuf {
    if let Some(h) = std::env::var_os("STRATA_HOME") {
        return PathBuf::from(h);
    }
    let home = std::env::var_os("HOME").map(PathBuf::from).unwrap_or_else(|| PathBuf::from("/var/lib"));
    home.join(".strata")
}

impl Config {
    /// Reads a config file (missing keys take defaults).
    pub fn load(path: &Path) -> Result<Config, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("reading {}: {e}", path.display()))?;
        toml::from_str(&text).map_err(|e| format!("{}: {e}", path.display()))
    }

    /// Checks values that parse but make no sense.
    pub fn validate(&self) -> Result<(), String> {
        if self.cluster_secret.len() < 8 {
            return Err("cluster-secret must be at least 8 characters".into());
        }
        if self.master.id == 0 {
            return Err("master.id must be at least 1".into());
        }
        if self.master.snapshot_entries < 100 {
            return Err("master.snapshot-entries must be at least 100".into());
        }
        if self.master.worker_lost_timeout_ms < 3 * self.worker.heartbeat_interval_ms {
            return Err("master.worker-lost-timeout-ms must be at least 3 heartbeat intervals".into());
        }
        if !(1..=strata_protocol::messages::MAX_REPLICAS).contains(&self.master.replicas) {
            return Err(format!("master.replicas must be 1..={}", strata_protocol::messages::MAX_REPLICAS));
        }
        if self.worker.heartbeat_interval_ms == 0 {
            return Err("worker.heartbeat-interval-ms must be positive".into());
        }
        let bs = self.client.block_size.0;
        if !(strata_protocol::MIN_BLOCK_SIZE..=strata_protocol::MAX_BLOCK_SIZE).contains(&bs) {
            return Err(format!("client.block-size {bs} is outside 4KiB..=4GiB"));
        }
        for p in &self.master.peers {
            let peer = parse_peer(p)?;
            if peer.id == self.master.id {
                return Err(format!("master.peers lists this master's own id {}", peer.id));
            }
        }
        let mut seen = std::collections::HashSet::new();
        for t in &self.worker.tiers {
            if !matches!(t.name.as_str(), "MEM" | "SSD" | "HDD") {
                return Err(format!("tier name {:?} must be MEM, SSD or HDD", t.name));
            }
            if !seen.insert(t.name.clone()) {
                return Err(format!("tier {} is configured twice", t.name));
            }
            if t.capacity.0 < strata_protocol::MIN_BLOCK_SIZE {
                return Err(format!("tier {} capacity is below 4KiB", t.name));
            }
        }
        Ok(())
    }
}

/// Another master: its Raft id, client address and mesh address.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Peer {
    /// Raft id.
    pub id: u64,
    /// Client RPC address.
    pub rpc: String,
    /// Mesh address.
    pub mesh: String,
}

/// Parses `ID=HOST:RPC_PORT:MESH_PORT`.
pub fn parse_peer(s: &str) -> Result<Peer, String> {
    let bad = || format!("peer {s:?} must look like 2=10.0.0.2:19998:19997");
    let (id, rest) = s.split_once('=').ok_or_else(bad)?;
    let id: u64 = id.trim().parse().map_err(|_| bad())?;
    let mut parts = rest.rsplitn(3, ':');
    let (mesh, rpc, host) =
        (parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?, parts.next().ok_or_else(bad)?);
    let (rpc, mesh): (u16, u16) = (rpc.parse().map_err(|_| bad())?, mesh.parse().map_err(|_| bad())?);
    if id == 0 || host.is_empty() {
        return Err(bad());
    }
    Ok(Peer { id, rpc: format!("{host}:{rpc}"), mesh: format!("{host}:{mesh}") })
}

/// Parses a `NAME:PATH:SIZE` tier flag.
pub fn parse_tier(s: &str) -> Result<TierSection, String> {
    let mut parts = s.splitn(3, ':');
    match (parts.next(), parts.next(), parts.next()) {
        (Some(name), Some(path), Some(size)) if !path.is_empty() => {
            Ok(TierSection { name: name.to_uppercase(), path: PathBuf::from(path), capacity: Bytes(parse_size(size)?) })
        }
        _ => Err(format!("tier {s:?} must look like MEM:/dev/shm/strata:1GiB")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_and_template() {
        assert_eq!(parse_size("64MiB").unwrap(), 64 << 20);
        assert_eq!(parse_size("4096").unwrap(), 4096);
        assert!(parse_size("12XB").is_err());
        let template = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../etc/strata.toml")).unwrap();
        let c: Config = toml::from_str(&template).unwrap();
        c.validate().unwrap();
        assert_eq!(c.worker.tiers.len(), 2);
        let bad: Result<Config, _> = toml::from_str("no-such-key = 1");
        assert!(bad.is_err());
        let p = parse_peer("2=10.0.0.2:19998:19997").unwrap();
        assert_eq!((p.id, p.rpc.as_str(), p.mesh.as_str()), (2, "10.0.0.2:19998", "10.0.0.2:19997"));
        assert!(parse_peer("x=1:2:3").is_err());
        let t = parse_tier("ssd:/tmp/x:10GiB").unwrap();
        assert_eq!((t.name.as_str(), t.capacity.0), ("SSD", 10 << 30));
    }
}
