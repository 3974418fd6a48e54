//! `strata fs …` and `strata report`.

use std::time::Duration;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use strata_client::{Attr, Client, ClientConfig, FileType};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::cli::{ClientArgs, FsCmd};
use crate::config::Config;

const COPY_BUF: usize = 8 * 1024 * 1024;

/// Connects using `--master`, `STRATA_MASTER`, the config, or the local default.
pub async fn connect(cfg: &Config, args: &ClientArgs) -> Result<Client> {
    let master = args.master.clone().unwrap_or_else(|| cfg.client.master.clone());
    let mut cc = ClientConfig::new(master.clone());
    cc.block_size = cfg.client.block_size.0;
    cc.stale_reads = args.stale_reads || cfg.client.stale_reads;
    cc.uid = process_uid();
    cc.gid = process_gid();
    Client::connect(cc).await.with_context(|| format!("connecting to the master at {master}"))
}

/// The caller's uid, read without `unsafe` (owner of `/proc/self`).
fn process_uid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::uid(&m)).unwrap_or(0)
}

/// The caller's gid.
fn process_gid() -> u32 {
    std::fs::metadata("/proc/self").map(|m| std::os::unix::fs::MetadataExt::gid(&m)).unwrap_or(0)
}

fn bar(len: u64, what: &str) -> ProgressBar {
    let pb = ProgressBar::new(len);
    pb.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {bytes}/{total_bytes} {bytes_per_sec} eta {eta}")
            .expect("valid template")
            .progress_chars("=> "),
    );
    pb.set_message(what.to_string());
    pb
}

fn mode_string(a: &Attr) -> String {
    let t = match a.file_type {
        FileType::Directory => 'd',
        FileType::Symlink => 'l',
        FileType::File => '-',
        FileType::Fifo => 'p',
        FileType::Socket => 's',
        FileType::CharDevice => 'c',
        FileType::BlockDevice => 'b',
    };
    let mut s = String::from(t);
    for shift in [6, 3, 0] {
        let bits = (a.mode >> shift) & 7;
        s.push(if bits & 4 != 0 { 'r' } else { '-' });
        s.push(if bits & 2 != 0 { 'w' } else { '-' });
        s.push(if bits & 1 != 0 { 'x' } else { '-' });
    }
    s
}

fn time_string(ms: i64) -> String {
    let t = std::time::UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
    humantime::format_rfc3339_seconds(t).to_string()
}

/// Runs an `fs` subcommand.
pub async fn run(cfg: &Config, args: &ClientArgs, cmd: FsCmd) -> Result<()> {
    let client = connect(cfg, args).await?;
    match cmd {
        FsCmd::Ls { path, json } => {
            let entries = client.list(&path).await?;
            if json {
                let v: Vec<_> = entries.iter().map(|e| serde_json::json!({ "name": e.name, "attr": e.attr })).collect();
                println!("{}", serde_json::to_string_pretty(&v)?);
            } else {
                for e in entries {
                    let a = &e.attr;
                    let target = a.symlink_target.as_ref().map(|t| format!(" -> {t}")).unwrap_or_default();
                    println!(
                        "{} {:>5} {:>5} {:>12} {} {}{}",
                        mode_string(a),
                        a.uid,
                        a.gid,
                        a.size,
                        time_string(a.mtime_ms),
                        e.name,
                        target
                    );
                }
            }
        }
        FsCmd::Mkdir { path, parents } => {
            client.mkdir(&path, parents).await?;
        }
        FsCmd::Put { local, remote, block_size, force } => {
            let mut f = tokio::fs::File::open(&local).await.with_context(|| format!("opening {}", local.display()))?;
            let len = f.metadata().await?.len();
            let mut w = match block_size {
                Some(bs) => client.create_with_block_size(&remote, force, bs).await?,
                None => client.create(&remote, force).await?,
            };
            let pb = bar(len, "put");
            let mut buf = vec![0u8; COPY_BUF];
            loop {
                let n = f.read(&mut buf).await.with_context(|| format!("reading {}", local.display()))?;
                if n == 0 {
                    break;
                }
                w.write(&buf[..n]).await?;
                pb.inc(n as u64);
            }
            w.close().await?;
            pb.finish_and_clear();
        }
        FsCmd::Get { remote, local } => {
            let mut r = client.open(&remote).await?;
            let tmp = local.with_extension("strata-part");
            let mut f = tokio::fs::File::create(&tmp).await.with_context(|| format!("creating {}", tmp.display()))?;
            let pb = bar(r.len(), "get");
            let mut buf = vec![0u8; COPY_BUF];
            loop {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                f.write_all(&buf[..n]).await?;
                pb.inc(n as u64);
            }
            f.flush().await?;
            drop(f);
            tokio::fs::rename(&tmp, &local).await.with_context(|| format!("renaming into {}", local.display()))?;
            pb.finish_and_clear();
        }
        FsCmd::Cat { path } => {
            let mut r = client.open(&path).await?;
            let mut out = tokio::io::stdout();
            let mut buf = vec![0u8; COPY_BUF];
            loop {
                let n = r.read(&mut buf).await?;
                if n == 0 {
                    break;
                }
                out.write_all(&buf[..n]).await?;
            }
            out.flush().await?;
        }
        FsCmd::Rm { path, recursive } => client.delete(&path, recursive).await?,
        FsCmd::Mv { src, dst } => client.rename(&src, &dst).await?,
        FsCmd::Setrep { path, min, max, recursive } => {
            let a = client.set_replicas(&path, strata_client::Replicas { min, max }, recursive).await?;
            println!("{path}: {}", replicas_string(a.replicas));
        }
        FsCmd::Stat { path, json } => {
            let a = client.stat(&path).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&a)?);
            } else {
                println!("path:       {path}");
                println!("inode:      {}", a.inode);
                println!("type:       {:?}", a.file_type);
                println!("mode:       {} ({:o})", mode_string(&a), a.mode);
                println!("owner:      {}:{}", a.uid, a.gid);
                println!("size:       {}", a.size);
                println!("block size: {}", a.block_size);
                println!("complete:   {}", a.complete);
                println!("pinned:     {}", a.pinned);
                println!("replicas:   {}", replicas_string(a.replicas));
                match &a.ttl {
                    Some(t) => println!(
                        "ttl:        {} ({})",
                        humantime::format_duration(Duration::from_millis(t.ttl_ms)),
                        t.action
                    ),
                    None => println!("ttl:        none"),
                }
                println!("modified:   {}", time_string(a.mtime_ms));
                if let Some(t) = &a.symlink_target {
                    println!("target:     {t}");
                }
            }
        }
        FsCmd::Du { path } => {
            let mut total = 0u64;
            let mut files = 0u64;
            let mut stack = vec![path.clone()];
            while let Some(dir) = stack.pop() {
                for e in client.list(&dir).await? {
                    match e.attr.file_type {
                        FileType::Directory => stack.push(format!("{}/{}", dir.trim_end_matches('/'), e.name)),
                        FileType::File => {
                            total += e.attr.size;
                            files += 1;
                        }
                        _ => {}
                    }
                }
            }
            println!("{total}\t{files} files\t{path}");
        }
    }
    Ok(())
}

/// `strata report`.
pub async fn report(cfg: &Config, args: &ClientArgs, json: bool) -> Result<()> {
    let client = connect(cfg, args).await?;
    let r = client.report().await?;
    let journals = journals(&client, false).await?;
    if json {
        #[derive(serde::Serialize)]
        struct Out<'a> {
            #[serde(flatten)]
            report: &'a strata_protocol::messages::ClusterReport,
            /// Each master's journal as that master sees it.
            journals: &'a [strata_protocol::messages::JournalInfo],
        }
        println!("{}", serde_json::to_string_pretty(&Out { report: &r, journals: &journals })?);
        return Ok(());
    }
    println!("journals:");
    for j in &journals {
        print_journal(j);
    }
    println!("masters:");
    for m in &r.masters {
        println!(
            "  #{} {} {} {} term {} last log {} applied {} leader {}",
            m.id,
            m.addr,
            if m.voter { "voter" } else { "learner" },
            m.role,
            m.term,
            m.last_log_index,
            m.applied_index,
            m.leader.map(|l| l.to_string()).unwrap_or_else(|| "-".into())
        );
    }
    println!("inodes: {}", r.inodes);
    println!(
        "blocks: {} under-replicated, {} over-replicated, {} missing",
        r.under_replicated, r.over_replicated, r.missing
    );
    println!("workers: {} ({} live)", r.workers.len(), r.workers.iter().filter(|w| w.live).count());
    for w in &r.workers {
        println!(
            "  {:016x} {}:{} {} blocks {} last heartbeat {} ms ago",
            w.addr.worker_id,
            w.addr.host,
            w.addr.data_port,
            match (w.state.as_str(), w.blocks_left) {
                ("decommissioning", n) => format!("decommissioning ({n} blocks left)"),
                ("lost", _) => "LOST".to_string(),
                (s, _) => s.to_string(),
            },
            w.blocks,
            w.last_heartbeat_ms_ago
        );
        for t in &w.tiers {
            println!(
                "    {:<4} {:>14} / {:>14} bytes used ({:.1}%), {} blocks",
                t.tier,
                t.used_bytes,
                t.capacity_bytes,
                100.0 * t.used_bytes as f64 / t.capacity_bytes.max(1) as f64,
                t.blocks
            );
        }
    }
    Ok(())
}

/// `strata mount [PATH URI ...]`.
pub async fn mount(cfg: &Config, a: crate::cli::MountArgs) -> Result<()> {
    use strata_client::{MountInfo, MountOptions, UfsSpec};
    let client = connect(cfg, &a.client).await?;
    let (Some(path), Some(uri)) = (a.path, a.uri) else {
        let mounts = client.mounts().await?;
        if a.json {
            println!("{}", serde_json::to_string_pretty(&mounts)?);
            return Ok(());
        }
        for m in mounts {
            let sync = match m.options.sync_interval_ms {
                i if i < 0 => "never".to_string(),
                0 => "always".to_string(),
                i => humantime::format_duration(Duration::from_millis(i as u64)).to_string(),
            };
            let opts: Vec<String> = m.spec.options.iter().map(|(k, v)| format!("{k}={v}")).collect();
            println!(
                "{} on {} write={} read={} sync={} block={} replicas={}{} {}",
                m.spec.uri,
                m.path,
                m.options.write_type,
                m.options.read_type,
                sync,
                m.options.block_size,
                m.options.replicas,
                if m.options.ttl_ms > 0 {
                    format!(
                        " ttl={} ttl-action={}",
                        humantime::format_duration(Duration::from_millis(m.options.ttl_ms)),
                        m.options.ttl_action
                    )
                } else {
                    String::new()
                },
                opts.join(",")
            );
        }
        return Ok(());
    };
    let sync_interval_ms = match a.sync.as_str() {
        "never" => -1,
        "always" => 0,
        s => humantime::parse_duration(s)
            .with_context(|| format!("--sync {s:?}: use never, always or a duration like 30s"))?
            .as_millis() as i64,
    };
    let ttl_ms = match &a.ttl {
        None => 0,
        Some(s) => humantime::parse_duration(s)
            .with_context(|| format!("--ttl {s:?}: use a duration like 30s or 1h"))?
            .as_millis()
            .max(1) as u64,
    };
    let mut options = Vec::new();
    for o in &a.options {
        let (k, v) = o.split_once('=').with_context(|| format!("--option {o:?}: expected KEY=VALUE"))?;
        options.push((k.trim().to_string(), v.to_string()));
    }
    options.sort();
    let info = MountInfo {
        path: path.clone(),
        spec: UfsSpec { uri: uri.clone(), options },
        options: MountOptions {
            write_type: a.write_type.parse().map_err(anyhow::Error::msg)?,
            read_type: a.read_type.parse().map_err(anyhow::Error::msg)?,
            sync_interval_ms,
            block_size: a.block_size,
            replicas: a.replicas.max(1),
            ttl_ms,
            ttl_action: a.ttl_action.parse().map_err(anyhow::Error::msg)?,
            placement: a.placement.as_deref().map(str::parse).transpose().map_err(anyhow::Error::msg)?,
        },
    };
    client.mount(info).await.with_context(|| format!("mounting {uri} at {path}"))?;
    println!("mounted {uri} at {path}");
    Ok(())
}

/// `strata unmount PATH`.
pub async fn unmount(cfg: &Config, a: crate::cli::PathArgs) -> Result<()> {
    let client = connect(cfg, &a.client).await?;
    client.unmount(&a.path).await.with_context(|| format!("unmounting {}", a.path))?;
    println!("unmounted {}", a.path);
    Ok(())
}

/// `strata free PATH`.
pub async fn free(cfg: &Config, a: crate::cli::PathArgs) -> Result<()> {
    let client = connect(cfg, &a.client).await?;
    client.free(&a.path).await.with_context(|| format!("freeing {}", a.path))?;
    Ok(())
}

/// `strata persist PATH`.
pub async fn persist(cfg: &Config, a: crate::cli::PathArgs) -> Result<()> {
    let client = connect(cfg, &a.client).await?;
    client.persist(&a.path).await.with_context(|| format!("persisting {}", a.path))?;
    Ok(())
}

/// Replica counts as set (0: the default).
fn replicas_string(r: strata_client::Replicas) -> String {
    let n = |v: u8| if v == 0 { "default".to_string() } else { v.to_string() };
    format!("min {} max {}", n(r.min), n(r.max))
}

/// `strata info PATH [--json]`.
pub async fn info(cfg: &Config, a: crate::cli::InfoArgs) -> Result<()> {
    let client = connect(cfg, &a.client).await?;
    let r = client.replication(&a.path).await.with_context(|| format!("info of {}", a.path))?;
    if a.json {
        println!("{}", serde_json::to_string_pretty(&r)?);
        return Ok(());
    }
    let max = if r.max == u8::MAX { "unbounded".to_string() } else { r.max.to_string() };
    println!("{}: {} bytes, {} blocks", a.path, r.attr.size, r.blocks.len());
    println!("copies:    min {} max {max}{}", r.min, if r.persisted { " (persisted to its UFS)" } else { "" });
    for b in &r.blocks {
        let copies: Vec<String> = b
            .copies
            .iter()
            .map(|(w, tier)| {
                format!("{}@{}:{}/{}", w.worker_id, w.host, w.data_port, if tier.is_empty() { "?" } else { tier })
            })
            .collect();
        println!("{:016x} {:>12} {:<8} {}", b.block_id, b.length, b.state, copies.join(" "));
    }
    Ok(())
}

/// `strata pin PATH` / `strata unpin PATH`.
pub async fn set_pin(cfg: &Config, a: crate::cli::PathArgs, pinned: bool) -> Result<()> {
    let client = connect(cfg, &a.client).await?;
    let what = if pinned { "pinning" } else { "unpinning" };
    client.set_pin(&a.path, pinned).await.with_context(|| format!("{what} {}", a.path))?;
    Ok(())
}

/// `strata ttl PATH DUR [--action A]` / `strata ttl PATH --clear`.
pub async fn set_ttl(cfg: &Config, a: crate::cli::TtlArgs) -> Result<()> {
    let ttl = match (&a.duration, a.clear) {
        (_, true) | (None, _) => None,
        (Some(s), false) => {
            let d =
                humantime::parse_duration(s).with_context(|| format!("TTL {s:?}: use a duration like 30s or 1h"))?;
            if d.is_zero() {
                anyhow::bail!("TTL {s:?}: must be longer than 0 (use --clear to remove a TTL)");
            }
            Some(strata_client::FileTtl {
                ttl_ms: (d.as_millis() as u64).max(1),
                action: a.action.parse().map_err(anyhow::Error::msg)?,
            })
        }
    };
    let client = connect(cfg, &a.client).await?;
    client.set_ttl(&a.path, ttl).await.with_context(|| format!("setting the TTL of {}", a.path))?;
    Ok(())
}

/// Every file at or below `root` with its size.
async fn files_under(client: &Client, root: &str) -> Result<Vec<(String, u64)>> {
    let mut out = Vec::new();
    let mut stack = vec![root.to_string()];
    while let Some(p) = stack.pop() {
        let a = client.stat(&p).await.with_context(|| format!("stat {p}"))?;
        match a.file_type {
            FileType::File => out.push((p, a.size)),
            FileType::Directory => {
                for e in client.list(&p).await.with_context(|| format!("listing {p}"))? {
                    let child = if p == "/" { format!("/{}", e.name) } else { format!("{p}/{}", e.name) };
                    match e.attr.file_type {
                        FileType::File => out.push((child, e.attr.size)),
                        FileType::Directory => stack.push(child),
                        _ => {}
                    }
                }
            }
            _ => {}
        }
    }
    Ok(out)
}

/// `strata load PATH`: fetches every uncached block, four files at a time.
pub async fn load(cfg: &Config, a: crate::cli::PathArgs) -> Result<()> {
    let client = connect(cfg, &a.client).await?;
    let files = files_under(&client, &a.path).await?;
    let total: u64 = files.iter().map(|f| f.1).sum();
    let count = files.len();
    let pb = bar(total, "load");
    let started = std::time::Instant::now();
    let sem = std::sync::Arc::new(tokio::sync::Semaphore::new(4));
    let mut tasks = tokio::task::JoinSet::new();
    for (p, size) in files {
        let (client, pb, sem) = (client.clone(), pb.clone(), sem.clone());
        tasks.spawn(async move {
            let _permit = sem.acquire_owned().await;
            let fetched = client.load_file(&p).await.with_context(|| format!("loading {p}"))?;
            pb.inc(size);
            Ok::<u64, anyhow::Error>(fetched)
        });
    }
    let mut fetched = 0;
    while let Some(r) = tasks.join_next().await {
        fetched += r??;
    }
    pb.finish_and_clear();
    let secs = started.elapsed().as_secs_f64().max(1e-6);
    println!(
        "loaded {} files, {} bytes fetched from the UFS in {:.2} s ({:.1} MiB/s)",
        count,
        fetched,
        secs,
        fetched as f64 / secs / (1 << 20) as f64
    );
    Ok(())
}

/// `strata admin master add|remove`.
pub async fn admin(cfg: &Config, a: crate::cli::AdminArgs) -> Result<()> {
    use crate::cli::{AdminCmd, JournalCmd, MasterCmd, WorkerCmd};
    let client = connect(cfg, &a.client).await?;
    match a.cmd {
        AdminCmd::Master(MasterCmd::Add { peer }) => {
            client.add_master(peer.id, &peer.rpc, &peer.mesh).await?;
            println!("master {} added as a voter ({}, mesh {})", peer.id, peer.rpc, peer.mesh);
        }
        AdminCmd::Master(MasterCmd::Remove { id }) => {
            client.remove_master(id).await?;
            println!("master {id} removed");
        }
        AdminCmd::Journal(JournalCmd::Info { digest, json }) => {
            let infos = journals(&client, digest).await?;
            if json {
                println!("{}", serde_json::to_string_pretty(&infos)?);
            } else {
                for j in &infos {
                    print_journal(j);
                }
            }
        }
        AdminCmd::Worker(WorkerCmd::Decommission { id, wait }) => {
            client.decommission(id, true).await?;
            println!("worker {id:016x}: decommissioning");
            if wait {
                loop {
                    let r = client.report().await?;
                    let w = r.workers.iter().find(|w| w.addr.worker_id == id).context("the worker left the report")?;
                    if w.state == "decommissioned" {
                        println!("worker {id:016x}: decommissioned; it may be stopped");
                        break;
                    }
                    println!("worker {id:016x}: {}, {} blocks left", w.state, w.blocks_left);
                    tokio::time::sleep(Duration::from_secs(1)).await;
                }
            }
        }
        AdminCmd::Worker(WorkerCmd::Recommission { id }) => {
            client.decommission(id, false).await?;
            println!("worker {id:016x}: takes blocks again");
        }
        AdminCmd::Journal(JournalCmd::Snapshot) => {
            for m in client.report().await?.masters {
                match client.take_snapshot(&m.addr).await {
                    Ok(j) => print_journal(&j),
                    Err(e) => println!("  #{} {}: {e}", m.id, m.addr),
                }
            }
        }
    }
    Ok(())
}

/// Every master's journal, each asked directly (a master that does not
/// answer is left out).
async fn journals(client: &Client, digest: bool) -> Result<Vec<strata_protocol::messages::JournalInfo>> {
    let mut out = Vec::new();
    for m in client.report().await?.masters {
        match client.journal_info(&m.addr, digest).await {
            Ok(j) => out.push(j),
            Err(e) => eprintln!("master #{} at {}: {e}", m.id, m.addr),
        }
    }
    Ok(out)
}

fn print_journal(j: &strata_protocol::messages::JournalInfo) {
    let s = &j.status;
    let digest =
        j.digest.as_ref().map(|d| format!(" digest {:016x} at {} ({} rows)", d.digest, d.applied_index, d.rows));
    println!(
        "  #{} {} {} term {} last log {} applied {} snapshot {} purged {}{}",
        s.id,
        s.addr,
        s.role,
        s.term,
        s.last_log_index,
        s.applied_index,
        j.snapshot_index,
        j.purged_index,
        digest.unwrap_or_default()
    );
}
