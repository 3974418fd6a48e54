//! Benchmarks of the replicated journal, each against a baseline from the
//! same run:
//!
//! - `failover`: three masters; the leader is killed with -9, and the time
//!   to the first successful mutation is measured, `kills` times (the killed
//!   master is restarted and caught up before the next kill). Printed as
//!   median, min and max, against the election timeout.
//! - `catch-up`: three masters holding `files` empty files (made under
//!   directory leases, in batches); every master snapshots; a follower is
//!   wiped and restarted: its catch-up (installing the leader's snapshot)
//!   against the leader's snapshot build, and each master's resident
//!   memory.
//! - `ha-meta`: create and stat ops/s from 1 and from N concurrent clients,
//!   against one master and against three (one Raft group), in the same run;
//!   stat also with stale reads (served by any master) on three.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strata_chaos::HaCluster;
use strata_client::{Client, ClientConfig};

/// openraft's election timeout range in the masters' config, in ms.
const ELECTION_TIMEOUT_MS: (u64, u64) = (400, 800);

async fn connect(masters: &str, stale_reads: bool) -> Result<Client> {
    let mut c = ClientConfig::new(masters);
    c.rpc_timeout = Duration::from_secs(2);
    c.failover_timeout = Duration::from_secs(30);
    c.stale_reads = stale_reads;
    Ok(Client::connect(c).await?)
}

async fn leader(c: &Client) -> Result<u64> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(r) = c.report().await {
            if let Some(m) = r.masters.iter().find(|m| m.role == "leader") {
                return Ok(m.id);
            }
        }
        if Instant::now() > deadline {
            bail!("no leader within 30 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Waits until every master has applied the leader's whole log.
async fn all_caught_up(c: &Client, masters: usize) -> Result<()> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(r) = c.report().await {
            if let Some(l) = r.masters.iter().find(|m| m.role == "leader") {
                if r.masters.len() == masters && r.masters.iter().all(|m| m.applied_index == l.last_log_index) {
                    return Ok(());
                }
            }
        }
        if Instant::now() > deadline {
            bail!("the masters did not catch up within 60 s");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `failover`: kill -9 the leader `kills` times; time to the next successful mutation.
pub async fn failover(bin: &Path, dir: &Path, kills: usize) -> Result<()> {
    let mut cluster = HaCluster::start(bin, &dir.join("failover"), 3, 0, "bench-failover").context("3 masters")?;
    let list = cluster.master_list();
    let c = connect(&list, false).await?;
    c.mkdir("/warm", true).await?;
    let mut times = Vec::new();
    for k in 0..kills {
        all_caught_up(&c, 3).await?;
        let id = leader(&c).await?;
        let probe = connect(&list, false).await?;
        let killed = Instant::now();
        cluster.masters[(id - 1) as usize].kill();
        let mut n = 0u64;
        loop {
            n += 1;
            if probe.mkdir(&format!("/probe-{k}-{n}"), false).await.is_ok() {
                break;
            }
            if killed.elapsed() > Duration::from_secs(60) {
                bail!("no mutation succeeded within 60 s of killing leader {id}");
            }
        }
        let t = killed.elapsed();
        println!("kill {:>2}: leader {id} killed -> first successful mutation in {:>6.0} ms", k + 1, ms(t));
        times.push(t);
        cluster.masters[(id - 1) as usize].restart(Duration::from_secs(60))?;
    }
    times.sort();
    let med = if times.len() % 2 == 1 {
        ms(times[times.len() / 2])
    } else {
        (ms(times[times.len() / 2 - 1]) + ms(times[times.len() / 2])) / 2.0
    };
    println!(
        "failover over {} kills: median {:.0} ms, min {:.0} ms, max {:.0} ms; median / max election timeout ({} ms) = {:.2}",
        times.len(),
        med,
        ms(times[0]),
        ms(times[times.len() - 1]),
        ELECTION_TIMEOUT_MS.1,
        med / ELECTION_TIMEOUT_MS.1 as f64
    );
    Ok(())
}

/// A process's resident memory in MiB (from /proc).
fn rss_mib(pid: u32) -> f64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let kib: f64 = status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    kib / 1024.0
}

/// `catch-up`: see the module doc.
pub async fn catch_up(bin: &Path, dir: &Path, files: usize) -> Result<()> {
    let args = ["--log-keep", "1000"];
    let mut cluster = HaCluster::start_with(bin, &dir.join("catch-up"), 3, 0, "bench-catch-up", &args)?;
    let list = cluster.master_list();
    let c = connect(&list, false).await?;
    let made = Instant::now();
    for d in 0..files.div_ceil(1000) {
        let dir = format!("/c{d:05}");
        c.mkdir(&dir, false).await?;
        let (generation, _) = c.lease(&dir).await?.context("a lease")?;
        for i in 0..1000.min(files - d * 1000) {
            let path = format!("{dir}/f{i:04}");
            if !c.queue_create_empty(generation, &path, 1 << 20).await? {
                c.create(&path, false).await?.close().await?;
            }
        }
    }
    c.flush_queued().await?;
    let made = made.elapsed();
    all_caught_up(&c, 3).await?;
    let id = leader(&c).await?;
    let addrs: Vec<String> = list.split(',').map(str::to_string).collect();
    let lead = &addrs[(id - 1) as usize];
    let built = Instant::now();
    let info = c.take_snapshot(lead).await?;
    let built = built.elapsed();
    for a in addrs.iter().filter(|a| *a != lead) {
        c.take_snapshot(a).await?;
    }
    println!(
        "{files} files made in {:.1} s ({:.0}/s); leader's log at {}, snapshot at {}",
        made.as_secs_f64(),
        files as f64 / made.as_secs_f64(),
        info.status.last_log_index,
        info.snapshot_index
    );
    for (i, m) in cluster.masters.iter().enumerate() {
        println!("master {} resident memory: {:.0} MiB", i + 1, m.pid().map(rss_mib).unwrap_or(0.0));
    }
    let follower = (1..=3u64).find(|f| *f != id).context("a follower")?;
    let fnode = &mut cluster.masters[(follower - 1) as usize];
    fnode.kill();
    std::fs::remove_dir_all(HaCluster::master_dir(&dir.join("catch-up"), follower))?;
    let caught = Instant::now();
    fnode.restart(Duration::from_secs(120))?;
    let target = c.journal_info(lead, false).await?.status.last_log_index;
    let faddr = &addrs[(follower - 1) as usize];
    loop {
        if let Ok(j) = c.journal_info(faddr, false).await {
            if j.status.applied_index >= target {
                break;
            }
        }
        if caught.elapsed() > Duration::from_secs(1800) {
            bail!("the wiped follower did not catch up within 30 min");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let caught = caught.elapsed();
    let (a, b) = (c.journal_info(lead, true).await?, c.journal_info(faddr, true).await?);
    let (da, db) = (a.digest.context("digest")?, b.digest.context("digest")?);
    println!(
        "snapshot built by the leader in {:.0} ms; wiped follower restarted and caught up in {:.0} ms ({:.2}× the build); \
         state digests {} ({} rows)",
        ms(built),
        ms(caught),
        ms(caught) / ms(built).max(1.0),
        match (da.applied_index == db.applied_index, da.digest == db.digest) {
            (true, true) => "equal",
            (true, false) => "DIFFER",
            (false, _) => "not compared (the masters were at different indices)",
        },
        da.rows
    );
    println!(
        "the caught-up follower's resident memory: {:.0} MiB",
        cluster.masters[(follower - 1) as usize].pid().map(rss_mib).unwrap_or(0.0)
    );
    Ok(())
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Runs `op(client, client index, file index)` for `files` files split over
/// `clients` concurrent clients; returns ops/s.
async fn run<F, Fut>(clients: &[Client], files: usize, op: F) -> Result<f64>
where
    F: Fn(Client, usize, usize) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = Result<()>> + Send,
{
    let per = files / clients.len();
    let t = Instant::now();
    let mut tasks = tokio::task::JoinSet::new();
    for (ci, c) in clients.iter().enumerate() {
        let (c, op) = (c.clone(), op.clone());
        tasks.spawn(async move {
            for i in 0..per {
                op(c.clone(), ci, i).await?;
            }
            anyhow::Ok(())
        });
    }
    while let Some(r) = tasks.join_next().await {
        r??;
    }
    Ok((per * clients.len()) as f64 / t.elapsed().as_secs_f64())
}

/// One row per (masters, clients): create and stat ops/s.
struct Row {
    masters: usize,
    clients: usize,
    create: f64,
    stat: f64,
    stale_stat: Option<f64>,
}

async fn measure(masters: &str, n_masters: usize, clients: usize, files: usize, round: usize) -> Result<Row> {
    let mut cs = Vec::new();
    for _ in 0..clients {
        cs.push(connect(masters, false).await?);
    }
    let base = format!("/r{round}");
    for ci in 0..clients {
        cs[0].mkdir(&format!("{base}/c{ci}"), true).await?;
    }
    let b = base.clone();
    let create = run(&cs, files, move |c, ci, i| {
        let p = format!("{b}/c{ci}/f{i}");
        async move {
            c.create(&p, false).await?.close().await?;
            Ok(())
        }
    })
    .await?;
    let b = base.clone();
    let stat = run(&cs, files, move |c, ci, i| {
        let p = format!("{b}/c{ci}/f{i}");
        async move {
            c.stat(&p).await?;
            Ok(())
        }
    })
    .await?;
    let stale_stat = if n_masters > 1 {
        let mut ss = Vec::new();
        for k in 0..clients {
            // Spread the stale readers over the masters: each starts at a different one.
            let mut list: Vec<&str> = masters.split(',').collect();
            let n = list.len();
            list.rotate_left(k % n);
            ss.push(connect(&list.join(","), true).await?);
        }
        let b = base.clone();
        Some(
            run(&ss, files, move |c, ci, i| {
                let p = format!("{b}/c{ci}/f{i}");
                async move {
                    c.stat(&p).await?;
                    Ok(())
                }
            })
            .await?,
        )
    } else {
        None
    };
    Ok(Row { masters: n_masters, clients, create, stat, stale_stat })
}

/// `ha-meta`: create and stat ops/s, 1 vs `clients` clients, 1 vs 3 masters.
pub async fn ha_meta(bin: &Path, dir: &Path, files: usize, clients: usize) -> Result<()> {
    let mut rows = Vec::new();
    for n_masters in [1usize, 3] {
        let cluster = HaCluster::start(bin, &dir.join(format!("m{n_masters}")), n_masters, 0, "bench-ha-meta")
            .with_context(|| format!("{n_masters} masters"))?;
        let list = cluster.master_list();
        for (round, k) in [1usize, clients].into_iter().enumerate() {
            rows.push(measure(&list, n_masters, k, files, round).await?);
        }
    }
    let find = |m: usize, c: usize| rows.iter().find(|r| r.masters == m && r.clients == c);
    println!("{files} files per row, create = create + complete (one journal commit), stat = linearizable read");
    println!(
        "{:>7} {:>7} {:>10} {:>10} {:>16} {:>12} {:>12}",
        "masters", "clients", "create/s", "stat/s", "stale stat/s", "create vs 1m", "stat vs 1m"
    );
    for r in &rows {
        let base = find(1, r.clients).expect("1-master row");
        println!(
            "{:>7} {:>7} {:>10.0} {:>10.0} {:>16} {:>12.2} {:>12.2}",
            r.masters,
            r.clients,
            r.create,
            r.stat,
            r.stale_stat.map(|s| format!("{s:.0}")).unwrap_or_else(|| "-".into()),
            r.create / base.create,
            r.stat / base.stat,
        );
    }
    for m in [1usize, 3] {
        if let (Some(one), Some(many)) = (find(m, 1), find(m, clients)) {
            println!(
                "{m} master(s): {clients} clients / 1 client = {:.2} (create), {:.2} (stat)",
                many.create / one.create,
                many.stat / one.stat
            );
        }
    }
    Ok(())
}
