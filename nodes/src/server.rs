//! Running node roles: bind ports, start the mesh, start the root
//! supervisor with the role's children, print a ready line, and stop
//! cleanly on SIGINT/SIGTERM.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use ractor::{Actor, ActorRef};
use strata_actors::faults::Faults;
use strata_actors::master::journal::Journal;
use strata_actors::master::raft::MasterNode;
use strata_actors::master::replication::ReplicationConfig;
use strata_actors::master::{self, MasterOptions};
use strata_actors::mesh::Mesh;
use strata_actors::supervisor::{ChildSpec, NodeSupervisor, Scope, SupervisorMsg};
use strata_actors::worker::{self, tier::TierConfig, worker_actor, WorkerOptions};
use tokio::signal::unix::{signal, SignalKind};

use crate::cli::CommonServer;
use crate::config::Config;

/// Applies flags shared by all roles.
pub fn apply_common(cfg: &mut Config, c: &CommonServer) {
    if let Some(d) = &c.data_dir {
        cfg.data_dir = d.clone();
    }
    if let Some(s) = &c.secret {
        cfg.cluster_secret = s.clone();
    }
}

fn bind(host: &str, port: u16) -> anyhow::Result<Arc<std::net::TcpListener>> {
    let l = std::net::TcpListener::bind((host, port)).with_context(|| format!("binding {host}:{port}"))?;
    Ok(Arc::new(l))
}

/// The worker's tiers: configured, or MEM in /dev/shm plus SSD under the data dir.
fn tiers(cfg: &Config) -> Vec<TierConfig> {
    if !cfg.worker.tiers.is_empty() {
        return cfg
            .worker
            .tiers
            .iter()
            .map(|t| TierConfig {
                name: t.name.clone(),
                dir: t.path.clone(),
                capacity_bytes: t.capacity.0,
                durable: t.name != "MEM",
            })
            .collect();
    }
    let data = cfg.data_dir.join("worker");
    // One MEM directory per data dir, so two local clusters never share one.
    let tag = crc32c::crc32c(cfg.data_dir.to_string_lossy().as_bytes());
    let mem = if Path::new("/dev/shm").is_dir() {
        Path::new("/dev/shm").join(format!("strata-{tag:08x}"))
    } else {
        data.join("mem")
    };
    vec![
        TierConfig { name: "MEM".into(), dir: mem, capacity_bytes: 1 << 30, durable: false },
        TierConfig { name: "SSD".into(), dir: data.join("ssd"), capacity_bytes: 16 << 30, durable: true },
    ]
}

fn master_options(cfg: &Config, client_addr: String) -> anyhow::Result<MasterOptions> {
    // Port 0 (picked by the OS) is not known here: leave the mesh address
    // out of the membership; such a master is found through `--peers` only.
    let mesh_addr =
        if cfg.master.mesh_port == 0 { String::new() } else { format!("{}:{}", cfg.master.host, cfg.master.mesh_port) };
    let mut members = std::collections::BTreeMap::new();
    for p in &cfg.master.peers {
        let peer = crate::config::parse_peer(p).map_err(anyhow::Error::msg)?;
        members.insert(peer.id, MasterNode { addr: peer.rpc, mesh: peer.mesh });
    }
    if !members.is_empty() {
        members.insert(cfg.master.id, MasterNode { addr: client_addr.clone(), mesh: mesh_addr.clone() });
    }
    Ok(MasterOptions {
        node_id: cfg.master.id,
        data_dir: cfg.data_dir.join("master"),
        client_addr,
        mesh_addr,
        members,
        join: cfg.master.join,
        removed: Arc::new(tokio::sync::Notify::new()),
        snapshot_entries: cfg.master.snapshot_entries,
        log_keep: cfg.master.log_keep,
        worker_lost_timeout: Duration::from_millis(cfg.master.worker_lost_timeout_ms),
        worker_forget_after: Duration::from_millis(cfg.master.worker_forget_after_ms),
        replication: ReplicationConfig {
            default_min: cfg.master.replicas,
            degraded_writes: cfg.master.degraded_writes,
            placement: cfg.master.placement,
            ..ReplicationConfig::default()
        },
        faults: Faults::from_env().map_err(anyhow::Error::msg)?,
        fatal: Arc::new(tokio::sync::watch::channel(None).0),
    })
}

/// Keeps this master on the mesh with every other master: the configured
/// peers and every member of the group's membership (which carries the mesh
/// address of masters added at run time). A master whose RaftServer is not
/// visible is (re)joined, so restarted and new masters are found. Also
/// notices this master's removal: once it has been a member, a committed
/// membership without it means the leader removed it (an uncommitted one
/// could still be truncated away, e.g. this master's own addition). A
/// master not started with `--join` counts as having been a member: one
/// restarted on the data dir of a removed master stops too, instead of
/// running outside the group.
fn keep_peers_joined(
    journal: Journal,
    mesh: Mesh,
    me: u64,
    joining: bool,
    peers: Vec<crate::config::Peer>,
    removed: Arc<tokio::sync::Notify>,
) {
    tokio::spawn(async move {
        let mut was_member = !joining;
        loop {
            let mut targets: std::collections::BTreeMap<u64, String> =
                peers.iter().map(|p| (p.id, p.mesh.clone())).collect();
            if let Some(view) = journal.membership().await {
                if view.nodes.contains_key(&me) {
                    was_member = true;
                } else if was_member && view.committed && !view.nodes.is_empty() {
                    tracing::warn!(id = me, "this master is no longer in the group's membership; stopping");
                    removed.notify_one();
                    return;
                }
                // Peers that were removed are no longer dialled.
                if !view.nodes.is_empty() {
                    targets.retain(|id, _| view.nodes.contains_key(id));
                }
                for (id, node) in view.nodes {
                    if !node.mesh.is_empty() {
                        targets.insert(id, node.mesh);
                    }
                }
            }
            targets.remove(&me);
            for (id, addr) in &targets {
                if ractor::pg::get_members(&strata_actors::master::raft_net::group(*id)).is_empty() {
                    let _ = mesh.join(addr, Duration::from_secs(2)).await;
                }
            }
            tokio::time::sleep(Duration::from_millis(500)).await;
        }
    });
}

async fn wait_until<F, Fut>(what: &str, timeout: Duration, mut check: F) -> anyhow::Result<()>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        if tokio::time::Instant::now() > deadline {
            bail!("{what} not ready within {timeout:?}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    Ok(())
}

async fn journal_ready(journal: &Journal) -> bool {
    matches!(journal.status().await, Some(s) if s.leader.is_some() && s.applied_index > 0)
}

async fn worker_registered(scope: &Scope) -> bool {
    match ractor::registry::where_is(scope.name(worker_actor::ROLE)) {
        Some(w) => matches!(
            ractor::call_t!(ActorRef::<worker_actor::WorkerMsg>::from(w), worker_actor::WorkerMsg::Registered, 1000),
            Ok(true)
        ),
        None => false,
    }
}

fn ready_line(line: &str) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "{line}");
    let _ = out.flush();
}

async fn supervise(specs: Vec<ChildSpec>) -> anyhow::Result<(ActorRef<SupervisorMsg>, tokio::task::JoinHandle<()>)> {
    Actor::spawn(Some("strata.supervisor".into()), NodeSupervisor, specs)
        .await
        .map_err(|e| anyhow!("starting the node: {e}"))
}

/// Runs until SIGINT/SIGTERM (clean stop), until the supervisor gives up,
/// or until a master reports it can no longer serve (`fatal`: its Raft
/// core stopped); a FUSE mount is unmounted first.
async fn run_until_signal(
    sup: ActorRef<SupervisorMsg>,
    handle: tokio::task::JoinHandle<()>,
    mesh: Mesh,
    mount: Option<strata_fuse::Mount>,
    removed: Option<(Arc<tokio::sync::Notify>, PathBuf)>,
    fatal: Option<Arc<tokio::sync::watch::Sender<Option<String>>>>,
) -> anyhow::Result<()> {
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    let mut handle = handle;
    let removed = async {
        match removed {
            Some((r, marker)) => {
                r.notified().await;
                marker
            }
            None => std::future::pending().await,
        }
    };
    let fatal = async {
        let Some(tx) = fatal else { return std::future::pending().await };
        let mut rx = tx.subscribe();
        let why = match rx.wait_for(|f| f.is_some()).await {
            Ok(why) => why.clone().unwrap_or_default(),
            Err(_) => std::future::pending().await,
        };
        why
    };
    let outcome = tokio::select! {
        _ = term.recv() => Ok(()),
        _ = int.recv() => Ok(()),
        marker = removed => {
            // The leader stops replicating to a removed master before it sees
            // the final membership: remember the removal, or a restart on this
            // data dir would run outside the group with a stale view of it.
            if let Err(e) = std::fs::write(&marker, b"removed from the master group\n") {
                tracing::warn!(error = %e, marker = %marker.display(), "could not record the removal");
            }
            ready_line("removed: this master left the group");
            Ok(())
        }
        _ = &mut handle => Err(anyhow!("the node supervisor stopped: a child kept failing (see the log)")),
        why = fatal => Err(anyhow!("this master cannot serve any more ({why}); exiting so that it is restarted")),
    };
    tracing::info!("stopping");
    unmount(mount).await;
    if outcome.is_ok() {
        let _ = sup.stop_and_wait(Some("signal".into()), Some(Duration::from_secs(10))).await;
    }
    mesh.stop();
    outcome
}

/// Written into a master's data dir when the leader removes it.
fn removed_marker(master_dir: &Path) -> PathBuf {
    master_dir.join("REMOVED")
}

/// `strata master`.
pub async fn run_master(cfg: Config) -> anyhow::Result<()> {
    let marker = removed_marker(&cfg.data_dir.join("master"));
    if marker.exists() {
        bail!(
            "master {} was removed from the master group ({} exists): its data dir holds no valid state; \
             delete {} to start it afresh with --join and add it again (strata admin master add)",
            cfg.master.id,
            marker.display(),
            cfg.data_dir.display()
        );
    }
    let listener = bind(&cfg.master.host, cfg.master.rpc_port)?;
    let addr = format!("{}:{}", cfg.master.host, listener.local_addr()?.port());
    let mesh =
        Mesh::start(&format!("master-{}", cfg.master.id), &cfg.master.host, cfg.master.mesh_port, &cfg.cluster_secret)
            .await?;
    let peers: Vec<crate::config::Peer> = cfg
        .master
        .peers
        .iter()
        .map(|p| crate::config::parse_peer(p))
        .collect::<Result<_, _>>()
        .map_err(anyhow::Error::msg)?;
    let opts = master_options(&cfg, addr.clone())?;
    let (specs, services) = master::children(&opts, listener).map_err(anyhow::Error::msg)?;
    let journal = services.journal.clone();
    keep_peers_joined(journal.clone(), mesh.clone(), cfg.master.id, cfg.master.join, peers, opts.removed.clone());
    let (sup, handle) = supervise(specs).await?;
    if cfg.master.join {
        // Not a member yet: serve (answering "not leader") until the leader adds this master.
        tracing::info!(id = cfg.master.id, "waiting to be added to the group (strata admin master add)");
    } else {
        wait_until("the journal", Duration::from_secs(60), || journal_ready(&journal)).await?;
    }
    ready_line(&format!("master: {addr}"));
    let marker = removed_marker(&opts.data_dir);
    run_until_signal(sup, handle, mesh, None, Some((opts.removed, marker)), Some(opts.fatal)).await
}

/// `strata worker`.
pub async fn run_worker(cfg: Config) -> anyhow::Result<()> {
    let dir = cfg.data_dir.join("worker");
    let id = worker::worker_id(&dir).with_context(|| format!("worker id in {}", dir.display()))?;
    let listener = bind(&cfg.worker.host, cfg.worker.data_port)?;
    let data_addr = format!("{}:{}", cfg.worker.host, listener.local_addr()?.port());
    let mesh =
        Mesh::start(&format!("worker-{id:x}"), &cfg.worker.host, cfg.worker.mesh_port, &cfg.cluster_secret).await?;
    let masters: Vec<String> =
        cfg.worker.master_mesh.split(',').map(|a| a.trim().to_string()).filter(|a| !a.is_empty()).collect();
    // Join every master at once; one is enough to start, the WorkerActor
    // keeps joining the others.
    let mut joins = tokio::task::JoinSet::new();
    for m in masters.clone() {
        let mesh = mesh.clone();
        joins.spawn(async move { mesh.join(&m, Duration::from_secs(15)).await });
    }
    let mut joined = Err(anyhow!("no master mesh address configured"));
    while let Some(r) = joins.join_next().await {
        match r {
            Ok(Ok(())) => joined = Ok(()),
            Ok(Err(e)) if joined.is_err() => {
                joined = Err(anyhow::Error::new(e)
                    .context("joining the cluster (is a master up, and is the cluster secret the same?)"))
            }
            _ => {}
        }
    }
    joined?;
    let opts = WorkerOptions {
        data_dir: dir,
        host: cfg.worker.host.clone(),
        tiers: tiers(&cfg),
        mesh: Some((mesh.clone(), masters)),
        heartbeat_interval: Duration::from_millis(cfg.worker.heartbeat_interval_ms),
    };
    let (specs, scope) = worker::children(&opts, listener).map_err(anyhow::Error::msg)?;
    let (sup, handle) = supervise(specs).await?;
    wait_until("worker registration", Duration::from_secs(60), || worker_registered(&scope)).await?;
    ready_line(&format!("worker: {data_addr}"));
    run_until_signal(sup, handle, mesh, None, None, None).await
}

/// `strata local`: a master and a worker in one process, mounted at `mount`.
pub async fn run_local(cfg: Config, mount: Option<PathBuf>) -> anyhow::Result<()> {
    let host = cfg.master.host.clone();
    let listener = bind(&host, cfg.master.rpc_port)?;
    let addr = format!("{host}:{}", listener.local_addr()?.port());
    let data_listener = bind(&host, cfg.worker.data_port)?;
    let mesh = Mesh::start("local", &host, cfg.master.mesh_port, &cfg.cluster_secret).await?;
    let mopts = master_options(&cfg, addr.clone())?;
    let (mut specs, services) = master::children(&mopts, listener).map_err(anyhow::Error::msg)?;
    let opts = WorkerOptions {
        data_dir: cfg.data_dir.join("worker"),
        host: host.clone(),
        tiers: tiers(&cfg),
        mesh: None,
        heartbeat_interval: Duration::from_millis(cfg.worker.heartbeat_interval_ms),
    };
    let (worker_specs, scope) = worker::children(&opts, data_listener).map_err(anyhow::Error::msg)?;
    specs.extend(worker_specs);
    let (sup, handle) = supervise(specs).await?;
    wait_until("the journal", Duration::from_secs(60), || journal_ready(&services.journal)).await?;
    wait_until("the worker", Duration::from_secs(60), || worker_registered(&scope)).await?;
    ready_line(&format!("master: {addr}"));
    let mounted = match mount {
        Some(dir) => {
            let staging = cfg.data_dir.join("fuse-staging");
            match mount_fs(&addr, cfg.client.block_size.0, &dir, staging, Duration::from_secs(1)).await {
                Ok(m) => {
                    ready_line(&format!("mount: {}", dir.display()));
                    Some(m)
                }
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "no FUSE mount; the cluster serves without it");
                    None
                }
            }
        }
        None => None,
    };
    run_until_signal(sup, handle, mesh, mounted, None, Some(mopts.fatal)).await
}

/// Mounts the cluster at `addr` on `dir`.
async fn mount_fs(
    addr: &str,
    block_size: u64,
    dir: &Path,
    staging: PathBuf,
    ttl: Duration,
) -> anyhow::Result<strata_fuse::Mount> {
    let mut cc = strata_client::ClientConfig::new(addr);
    cc.block_size = block_size;
    let client = strata_client::Client::connect(cc).await?;
    // A leftover staging dir holds nothing published: start clean.
    let _ = std::fs::remove_dir_all(&staging);
    let mut mc = strata_fuse::MountConfig::new(staging);
    mc.ttl = ttl;
    mc.block_size = block_size;
    let rt = tokio::runtime::Handle::current();
    let dir = dir.to_path_buf();
    let shown = dir.display().to_string();
    tokio::task::spawn_blocking(move || strata_fuse::mount(client, rt, &dir, mc))
        .await?
        .with_context(|| format!("mounting FUSE at {shown}"))
}

async fn unmount(mount: Option<strata_fuse::Mount>) {
    if let Some(m) = mount {
        let shown = m.mountpoint.display().to_string();
        match tokio::task::spawn_blocking(move || m.unmount()).await {
            Ok(Ok(())) => tracing::info!(mountpoint = %shown, "unmounted"),
            Ok(Err(e)) => tracing::warn!(mountpoint = %shown, error = %e, "unmount failed"),
            Err(e) => tracing::warn!(error = %e, "unmount task failed"),
        }
    }
}

/// `strata fuse MOUNTPOINT`: mounts a cluster until SIGINT/SIGTERM.
pub async fn run_fuse(cfg: &Config, a: crate::cli::FuseArgs) -> anyhow::Result<()> {
    let addr = a.client.master.clone().unwrap_or_else(|| cfg.client.master.clone());
    let staging =
        a.staging_dir.unwrap_or_else(|| std::env::temp_dir().join(format!("strata-fuse-{}", std::process::id())));
    let m = mount_fs(&addr, cfg.client.block_size.0, &a.mountpoint, staging.clone(), Duration::from_millis(a.ttl_ms))
        .await?;
    ready_line(&format!("mount: {}", a.mountpoint.display()));
    let mut term = signal(SignalKind::terminate())?;
    let mut int = signal(SignalKind::interrupt())?;
    // Also stop when the mount goes away (`umount MOUNTPOINT`).
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = term.recv() => break,
            _ = int.recv() => break,
            _ = tick.tick() => if !m.is_mounted() { break },
        }
    }
    unmount(Some(m)).await;
    let _ = std::fs::remove_dir_all(&staging);
    Ok(())
}
