//! `replication`: a master and three workers (real processes). Write
//! throughput with 1, 2 and 3 copies of every block (chained: the client
//! sends each block once), as a ratio to 1 copy; then the repair rate:
//! `kill -9` of the worker holding the most bytes, time until every block
//! is back at two copies, against `cp` of as many bytes on the same disk;
//! then the decommission of the fullest survivor: time until it may be
//! stopped.

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use strata_chaos::Cluster;
use strata_client::{Client, ClientConfig, Replicas};

fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

fn pattern(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let mut out = vec![0u8; len];
    for b in out.chunks_mut(8) {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
    }
    out
}

async fn write(c: &Client, path: &str, mib: u64, chunk: &[u8]) -> Result<Duration> {
    let t = Instant::now();
    let mut w = c.create(path, true).await?;
    for _ in 0..mib / 8 {
        w.write(chunk).await?;
    }
    w.close().await?;
    Ok(t.elapsed())
}

/// The cluster report once `ready` holds for it (polled; 60 s at most).
async fn until(
    c: &Client,
    ready: impl Fn(&strata_client::ClusterReport) -> bool,
) -> Result<strata_client::ClusterReport> {
    let t = Instant::now();
    loop {
        let r = c.report().await?;
        if ready(&r) {
            return Ok(r);
        }
        if t.elapsed() > Duration::from_secs(60) {
            bail!("the cluster did not get there in 60 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

/// Whether every block of `path` has at least `n` live copies, none on `not_on`.
async fn at_least(c: &Client, path: &str, n: usize, not_on: u64) -> Result<bool> {
    let r = c.replication(path).await?;
    Ok(r.blocks.iter().all(|b| b.copies.len() >= n && b.copies.iter().all(|(w, _)| w.worker_id != not_on)))
}

/// Runs the benchmark with files of `mib` MiB (a multiple of 8) and a
/// repair of `repair_mib` MiB of two-copy data.
pub async fn replication(bin: &Path, dir: &Path, mib: u64, repair_mib: u64) -> Result<()> {
    let root = dir.join("replication");
    let mut cluster = Cluster::start(bin, &root, 3, "bench-replication").context("a master and 3 workers")?;
    let mut cfg = ClientConfig::new(cluster.master_addr());
    cfg.rpc_timeout = Duration::from_secs(60);
    cfg.data_timeout = Duration::from_secs(120);
    let c = Client::connect(cfg).await?;
    let chunk = pattern(8 << 20, 7);
    for n in 1..=3u8 {
        c.mkdir(&format!("/r{n}"), false).await?;
        c.set_replicas(&format!("/r{n}"), Replicas { min: n, max: n }, false).await?;
    }
    // Each count twice, in the order 1 2 3 3 2 1; the faster run counts.
    let mut best = [Duration::MAX; 3];
    for (round, n) in [1u8, 2, 3, 3, 2, 1].into_iter().enumerate() {
        let path = format!("/r{n}/f{round}");
        let d = write(&c, &path, mib, &chunk).await?;
        let r = c.replication(&path).await?;
        if !r.blocks.iter().all(|b| b.copies.len() == usize::from(n)) {
            bail!("{path}: not every block has {n} copies");
        }
        best[usize::from(n - 1)] = best[usize::from(n - 1)].min(d);
        c.delete(&path, false).await?;
    }
    println!("write {mib} MiB, 64 MiB blocks, 3 workers on one host");
    for (i, d) in best.iter().enumerate() {
        println!(
            "{} cop{}  {:>8.1} MiB/s   time ratio to 1 copy {:.2}",
            i + 1,
            if i == 0 { "y " } else { "ies" },
            rate(mib << 20, *d),
            d.as_secs_f64() / best[0].as_secs_f64()
        );
    }

    // Repair: two copies of `repair_mib`, kill -9 the worker holding most.
    let files = (repair_mib / 256).max(1);
    for i in 0..files {
        write(&c, &format!("/r2/rep{i}"), (repair_mib / files).max(8), &chunk).await?;
    }
    // The workers' usage, as their heartbeats report it, covers both copies.
    let written = (2 * files * (repair_mib / files).max(8)) << 20;
    let report =
        until(&c, |r| r.workers.iter().flat_map(|w| &w.tiers).map(|t| t.used_bytes).sum::<u64>() >= written).await?;
    let victim = report.workers.iter().max_by_key(|w| w.tiers.iter().map(|t| t.used_bytes).sum::<u64>()).unwrap();
    let held: u64 = victim.tiers.iter().map(|t| t.used_bytes).sum();
    let id = victim.addr.worker_id;
    let index = (0..cluster.workers.len())
        .find(|i| {
            std::fs::read_to_string(root.join(format!("worker{i}/worker/worker.id")))
                .is_ok_and(|s| s.trim() == id.to_string())
        })
        .context("the victim's data dir")?;
    cluster.workers[index].kill();
    let killed = Instant::now();
    let mut lost_at = None;
    loop {
        if lost_at.is_none() && c.report().await?.workers.iter().any(|w| w.addr.worker_id == id && !w.live) {
            lost_at = Some(killed.elapsed());
        }
        let mut done = lost_at.is_some();
        for i in 0..files {
            done = done && at_least(&c, &format!("/r2/rep{i}"), 2, id).await?;
        }
        if done {
            break;
        }
        if killed.elapsed() > Duration::from_secs(600) {
            bail!("not repaired within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let total = killed.elapsed();
    let lost = lost_at.expect("set before done");
    let repair = total - lost;

    // Baseline: cp of as many bytes on the same disk (and its fsync).
    let src = dir.join("cp-src.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        for _ in 0..held.div_ceil(8 << 20) {
            f.write_all(&chunk)?;
        }
        f.flush()?;
        f.get_ref().sync_all()?;
    }
    let t = Instant::now();
    std::fs::copy(&src, dir.join("cp-dst.bin"))?;
    std::fs::File::open(dir.join("cp-dst.bin"))?.sync_all()?;
    let cp = t.elapsed();
    println!(
        "repair of {:.0} MiB after kill -9: {:.2} s (lost after {:.2} s, copies made in {:.2} s = {:.1} MiB/s); \
         cp of as many bytes {:.2} s ({:.1} MiB/s); copy-phase ratio to cp {:.2}",
        held as f64 / (1 << 20) as f64,
        total.as_secs_f64(),
        lost.as_secs_f64(),
        repair.as_secs_f64(),
        rate(held, repair),
        cp.as_secs_f64(),
        rate(held, cp),
        repair.as_secs_f64() / cp.as_secs_f64()
    );

    // Decommission the fullest survivor (the third worker restarted first,
    // so its blocks have somewhere to go).
    cluster.workers[index].restart(Duration::from_secs(60))?;
    let report = until(&c, |r| r.workers.iter().all(|w| w.live)).await?;
    let target = report
        .workers
        .iter()
        .filter(|w| w.live && w.addr.worker_id != id)
        .max_by_key(|w| w.tiers.iter().map(|t| t.used_bytes).sum::<u64>())
        .context("a live worker")?;
    let (target, held) = (target.addr.worker_id, target.tiers.iter().map(|t| t.used_bytes).sum::<u64>());
    let t = Instant::now();
    c.decommission(target, true).await?;
    loop {
        let r = c.report().await?;
        if r.workers.iter().any(|w| w.addr.worker_id == target && w.state == "decommissioned") {
            break;
        }
        if t.elapsed() > Duration::from_secs(600) {
            bail!("not decommissioned within 600 s");
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let d = t.elapsed();
    println!(
        "decommission of a worker holding {:.0} MiB: {:.2} s ({:.1} MiB/s)",
        held as f64 / (1 << 20) as f64,
        d.as_secs_f64(),
        rate(held, d)
    );
    Ok(())
}
