//! Benchmarks of the replicated journal, each against a baseline from the
//! same run:
//!
//! - `failover`: three masters; the leader is killed with -9, and the time
//!   to the first successful mutation is measured, `kills` times (the killed
//!   master is restarted and caught up before the next kill). Printed as
//!   median, min and max, against the election timeout.
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
