//! Blocks outlive workers: every block is written as a chain of copies,
//! a lost worker's blocks are copied again from the survivors, extra
//! copies are trimmed when it returns, a corrupt copy is read around,
//! dropped and replaced, and a write short of workers fails clearly
//! (strict) or is repaired once workers join (degraded). Real `strata`
//! processes on 127.0.0.1.

mod common;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use common::*;
use strata_chaos::Cluster;
use strata_client::{Client, FileReplication};

const BLOCK: u64 = 256 * 1024;

async fn write(c: &Client, path: &str, data: &[u8]) -> Result<(), strata_client::ClientError> {
    let mut w = c.create(path, false).await?;
    w.write(data).await?;
    w.close().await.map(|_| ())
}

async fn infos(c: &Client, paths: &[String]) -> Vec<FileReplication> {
    let mut out = Vec::new();
    for p in paths {
        out.push(c.replication(p).await.unwrap());
    }
    out
}

/// Whether every block of every file has exactly (or, `at_least`, at
/// least) `n` live copies on distinct workers.
fn all_have(infos: &[FileReplication], n: usize, at_least: bool) -> bool {
    infos.iter().flat_map(|f| &f.blocks).all(|b| {
        let mut ids: Vec<u64> = b.copies.iter().map(|(w, _)| w.worker_id).collect();
        ids.sort();
        ids.dedup();
        ids.len() == b.copies.len() && if at_least { b.copies.len() >= n } else { b.copies.len() == n }
    })
}

/// The data dir of the cluster's worker with id `id`.
fn worker_dir(root: &Path, id: u64) -> (usize, PathBuf) {
    for i in 0..16 {
        let d = root.join(format!("worker{i}"));
        if std::fs::read_to_string(d.join("worker/worker.id")).is_ok_and(|s| s.trim() == id.to_string()) {
            return (i, d);
        }
    }
    panic!("no worker dir holds id {id}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lost_workers_blocks_are_copied_again_and_trimmed_when_it_returns() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(Path::new(BIN), dir.path(), 3, "test-secret-repl").unwrap();
    let c = client(cluster.master_addr(), BLOCK).await;
    let paths: Vec<String> = (0..6).map(|i| format!("/f{i}")).collect();
    let datas: Vec<Vec<u8>> = (0..6).map(|i| bytes(1_000_000 + i * 1000, i as u64)).collect();
    for (p, d) in paths.iter().zip(&datas) {
        write(&c, p, d).await.unwrap();
    }
    // Written as two copies (the cluster's default for data that exists
    // nowhere else), on two workers.
    let before = infos(&c, &paths).await;
    assert!(all_have(&before, 2, false), "{before:#?}");
    assert!(before.iter().all(|f| (f.min, f.max) == (2, 2)));

    // kill -9 the worker holding the most copies.
    let r = c.report().await.unwrap();
    let victim = r.workers.iter().max_by_key(|w| w.blocks).unwrap().addr.worker_id;
    let (i, _) = worker_dir(dir.path(), victim);
    cluster.workers[i].kill();
    let t0 = Instant::now();
    eventually("every block back at two live copies", Duration::from_secs(30), || async {
        let now = infos(&c, &paths).await;
        all_have(&now, 2, false)
            && now.iter().flat_map(|f| &f.blocks).all(|b| b.copies.iter().all(|(w, _)| w.worker_id != victim))
    })
    .await;
    eprintln!("repaired {} s after kill -9 (lost timeout 3 s)", t0.elapsed().as_secs_f64());
    for (p, d) in paths.iter().zip(&datas) {
        assert!(c.read_all(p).await.unwrap() == *d, "{p} reads back after the repair");
    }

    // The worker returns with its old copies: three of some blocks now,
    // trimmed back to two.
    cluster.workers[i].restart(Duration::from_secs(60)).unwrap();
    eventually("the returned worker registered", Duration::from_secs(20), || async {
        c.report().await.unwrap().workers.iter().all(|w| w.live)
    })
    .await;
    eventually("extra copies trimmed to two", Duration::from_secs(30), || async {
        let r = c.report().await.unwrap();
        all_have(&infos(&c, &paths).await, 2, false) && r.over_replicated == 0 && r.under_replicated == 0
    })
    .await;
    for (p, d) in paths.iter().zip(&datas) {
        assert!(c.read_all(p).await.unwrap() == *d, "{p} reads back after the trim");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_corrupt_copy_is_read_around_dropped_and_replaced() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(Path::new(BIN), dir.path(), 3, "test-secret-corrupt").unwrap();
    let c = client(cluster.master_addr(), BLOCK).await;
    let data = bytes(1_000_000, 42);
    write(&c, "/f", &data).await.unwrap();
    let info = c.replication("/f").await.unwrap();
    let block = &info.blocks[1];
    assert_eq!(block.copies.len(), 2, "{info:#?}");
    let (bad, tier) = &block.copies[0];
    let (_, wdir) = worker_dir(dir.path(), bad.worker_id);
    let file = strata_protocol::blockfile::data_path(&wdir.join(tier.to_lowercase()), block.block_id);
    let mut raw = std::fs::read(&file).unwrap();
    raw[100_000] ^= 0x40;
    std::fs::write(&file, raw).unwrap();

    // Read around it: the other copy serves, whatever the order.
    for _ in 0..3 {
        assert!(c.read_all("/f").await.unwrap() == data, "served by the good copy");
    }
    // The bad copy is dropped and a good one made; every copy serves the
    // block whole.
    let pool = strata_client::data::DataPool::new(Duration::from_secs(10));
    eventually("the corrupt copy replaced", Duration::from_secs(30), || async {
        let info = c.replication("/f").await.unwrap();
        let b = &info.blocks[1];
        if b.copies.len() != 2 {
            return false;
        }
        for (w, _) in &b.copies {
            match pool.read_block(w, b.block_id, 0, b.length).await {
                Ok(bytes) if bytes[..] == data[BLOCK as usize..(BLOCK + b.length) as usize] => {}
                _ => return false,
            }
        }
        true
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_write_short_of_workers_fails_when_strict_and_joins_repair_degraded_ones() {
    let dir = tempfile::tempdir().unwrap();
    // Strict: two copies or no write.
    let mut strict = Cluster::start_with(
        Path::new(BIN),
        &dir.path().join("strict"),
        1,
        "test-secret-strict",
        &["--strict-replicas"],
    )
    .unwrap();
    let c = client(strict.master_addr(), BLOCK).await;
    let e = write(&c, "/f", &bytes(600_000, 1)).await.unwrap_err();
    assert!(e.to_string().contains("2 copies are required and only 1 workers are live"), "{e}");
    let w = strict.start_worker("test-secret-strict").unwrap();
    strict.workers.push(w);
    eventually("two workers live", Duration::from_secs(20), || async {
        c.report().await.unwrap().workers.iter().filter(|w| w.live).count() == 2
    })
    .await;
    let data = bytes(600_000, 2);
    write(&c, "/f2", &data).await.unwrap();
    assert!(all_have(&[c.replication("/f2").await.unwrap()], 2, false));
    assert!(c.read_all("/f2").await.unwrap() == data);

    // Degraded (the default): one copy while one worker is live, the
    // second made once another joins.
    let mut degraded = Cluster::start(Path::new(BIN), &dir.path().join("degraded"), 1, "test-secret-degraded").unwrap();
    let c = client(degraded.master_addr(), BLOCK).await;
    let data = bytes(600_000, 3);
    write(&c, "/g", &data).await.unwrap();
    let info = c.replication("/g").await.unwrap();
    assert!(info.blocks.iter().all(|b| b.copies.len() == 1 && b.state == "under"), "{info:#?}");
    eventually("the report counts the under-replicated blocks", Duration::from_secs(20), || async {
        c.report().await.unwrap().under_replicated == info.blocks.len() as u64
    })
    .await;
    let w = degraded.start_worker("test-secret-degraded").unwrap();
    degraded.workers.push(w);
    eventually("the blocks copied to the new worker", Duration::from_secs(30), || async {
        all_have(&[c.replication("/g").await.unwrap()], 2, false) && c.report().await.unwrap().under_replicated == 0
    })
    .await;
    assert!(c.read_all("/g").await.unwrap() == data);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn decommissioning_the_only_holder_of_100_files_loses_no_read() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(Path::new(BIN), dir.path(), 3, "test-secret-decom").unwrap();
    let m = cluster.master_addr().to_string();
    let c = client(&m, BLOCK).await;
    c.mkdir("/one", false).await.unwrap();
    c.set_replicas("/one", strata_client::Replicas { min: 1, max: 1 }, false).await.unwrap();
    let paths: Vec<String> = (0..100).map(|i| format!("/one/f{i}")).collect();
    let datas: Vec<Vec<u8>> = (0..100).map(|i| bytes(100_000 + i, i as u64)).collect();
    for (p, d) in paths.iter().zip(&datas) {
        write(&c, p, d).await.unwrap();
    }
    let held = infos(&c, &paths).await;
    assert!(all_have(&held, 1, false), "one copy each");
    // The worker holding the most of them: its copies are their only ones.
    let r = c.report().await.unwrap();
    let victim = r.workers.iter().max_by_key(|w| w.blocks).unwrap().addr.worker_id;
    let on_victim = held.iter().filter(|f| f.blocks[0].copies[0].0.worker_id == victim).count();
    assert!(on_victim > 10, "{on_victim} files on the victim");

    // A reader loops over every file meanwhile.
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (c, stop, paths, datas) = (c.clone(), stop.clone(), paths.clone(), datas.clone());
        tokio::spawn(async move {
            let (mut reads, mut failures) = (0u64, Vec::new());
            while !stop.load(std::sync::atomic::Ordering::SeqCst) {
                for (p, d) in paths.iter().zip(&datas) {
                    match c.read_all(p).await {
                        Ok(b) if b == *d => reads += 1,
                        Ok(_) => failures.push(format!("{p}: wrong bytes")),
                        Err(e) => failures.push(format!("{p}: {e}")),
                    }
                }
            }
            (reads, failures)
        })
    };
    let id = format!("{victim:016x}");
    let (ok, out, err) = strata(&m, &["admin", "worker", "decommission", &id]);
    assert!(ok, "{out}{err}");
    // New blocks go elsewhere at once.
    eventually("the decommission seen by placement", Duration::from_secs(10), || async {
        c.report().await.unwrap().workers.iter().any(|w| w.addr.worker_id == victim && w.state != "live")
    })
    .await;
    write(&c, "/one/new", &bytes(100_000, 999)).await.unwrap();
    let new = c.replication("/one/new").await.unwrap();
    assert!(new.blocks[0].copies.iter().all(|(w, _)| w.worker_id != victim), "{new:#?}");
    eventually("the worker decommissioned", Duration::from_secs(60), || async {
        let r = c.report().await.unwrap();
        r.workers.iter().any(|w| w.addr.worker_id == victim && w.state == "decommissioned" && w.blocks_left == 0)
    })
    .await;
    stop.store(true, std::sync::atomic::Ordering::SeqCst);
    let (reads, failures) = reader.await.unwrap();
    assert!(
        failures.is_empty(),
        "{} failed reads of {reads}: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    assert!(reads >= 100, "{reads} reads");

    // Stopped: nothing is lost.
    let (i, _) = worker_dir(dir.path(), victim);
    cluster.workers[i].kill();
    for (p, d) in paths.iter().zip(&datas) {
        assert!(c.read_all(p).await.unwrap() == *d, "{p} without the decommissioned worker");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_repair_carries_on_under_a_new_leader() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = strata_chaos::HaCluster::start(Path::new(BIN), dir.path(), 3, 3, "test-secret-ha-repl").unwrap();
    let c = Client::connect(ha_config(&cluster.master_list())).await.unwrap();
    let paths: Vec<String> = (0..4).map(|i| format!("/h{i}")).collect();
    let datas: Vec<Vec<u8>> = (0..4).map(|i| bytes(1_000_000, 50 + i as u64)).collect();
    for (p, d) in paths.iter().zip(&datas) {
        write(&c, p, d).await.unwrap();
    }
    assert!(all_have(&infos(&c, &paths).await, 2, false));
    let r = c.report().await.unwrap();
    let victim = r.workers.iter().max_by_key(|w| w.blocks).unwrap().addr.worker_id;
    let leader = r.masters.iter().find(|m| m.role == "leader").unwrap().id;
    let (i, _) = worker_dir(dir.path(), victim);
    cluster.workers[i].kill();
    // The leader declares the worker lost and starts copying; it dies.
    eventually("the worker declared lost", Duration::from_secs(20), || async {
        c.report().await.is_ok_and(|r| r.workers.iter().any(|w| w.addr.worker_id == victim && !w.live))
    })
    .await;
    cluster.masters[(leader - 1) as usize].kill();
    eventually("every block back at two copies under the new leader", Duration::from_secs(40), || async {
        let mut all = Vec::new();
        for p in &paths {
            match c.replication(p).await {
                Ok(f) => all.push(f),
                Err(_) => return false,
            }
        }
        all_have(&all, 2, false)
            && all.iter().flat_map(|f| &f.blocks).all(|b| b.copies.iter().all(|(w, _)| w.worker_id != victim))
    })
    .await;
    for (p, d) in paths.iter().zip(&datas) {
        assert!(c.read_all(p).await.unwrap() == *d, "{p} after the repair");
    }
}

/// Files of one block each with one copy: how the blocks spread over the
/// workers.
async fn spread(c: &Client, dir: &str, n: usize) -> std::collections::HashMap<u64, usize> {
    c.mkdir(dir, false).await.unwrap();
    c.set_replicas(dir, strata_client::Replicas { min: 1, max: 1 }, false).await.unwrap();
    let mut per_worker = std::collections::HashMap::new();
    for i in 0..n {
        let p = format!("{dir}/f{i}");
        write(c, &p, &bytes(200_000, i as u64)).await.unwrap();
        for (w, _) in &c.replication(&p).await.unwrap().blocks[0].copies {
            *per_worker.entry(w.worker_id).or_insert(0) += 1;
        }
    }
    per_worker
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn placement_policies_spread_blocks_as_they_promise() {
    let dir = tempfile::tempdir().unwrap();
    // round-robin: every worker in turn.
    let rr = Cluster::start_with(
        Path::new(BIN),
        &dir.path().join("rr"),
        3,
        "test-secret-rr",
        &["--placement", "round-robin"],
    )
    .unwrap();
    let c = client(rr.master_addr(), BLOCK).await;
    let got = spread(&c, "/p", 12).await;
    assert!(got.len() == 3 && got.values().all(|n| *n == 4), "round-robin: {got:?}");

    // most-available: a worker holding a big block gets none of the next ones.
    let ma = Cluster::start_with(
        Path::new(BIN),
        &dir.path().join("ma"),
        3,
        "test-secret-ma",
        &["--placement", "most-available", "--replicas", "1"],
    )
    .unwrap();
    let c = client(ma.master_addr(), BLOCK).await;
    let mut w = c.create_with_block_size("/big", false, 64 << 20).await.unwrap();
    w.write(&bytes(40 << 20, 5)).await.unwrap();
    w.close().await.unwrap();
    let fullest = c.replication("/big").await.unwrap().blocks[0].copies[0].0.worker_id;
    eventually("the big block's usage reported by heartbeat", Duration::from_secs(10), || async {
        c.report()
            .await
            .unwrap()
            .workers
            .iter()
            .any(|w| w.addr.worker_id == fullest && w.tiers.iter().map(|t| t.used_bytes).sum::<u64>() >= 40 << 20)
    })
    .await;
    let got = spread(&c, "/p", 12).await;
    assert!(!got.contains_key(&fullest) && got.values().sum::<usize>() == 12, "most-available: {got:?}");

    // hash (cold UFS reads): readers of a cold block converge on one
    // worker, and a file's blocks spread over the workers.
    let ufs = dir.path().join("ufs");
    std::fs::create_dir_all(&ufs).unwrap();
    let data = bytes(2 << 20, 9);
    std::fs::write(ufs.join("cold.bin"), &data).unwrap();
    let uri = format!("file://{}", ufs.display());
    let (ok, out, err) = strata(ma.master_addr(), &["mount", "/u", &uri, "--block-size", "256KiB"]);
    assert!(ok, "{out}{err}");
    let readers: Vec<_> = (0..3)
        .map(|_| {
            let c = c.clone();
            tokio::spawn(async move { c.read_all("/u/cold.bin").await.unwrap() })
        })
        .collect();
    for r in readers {
        assert!(r.await.unwrap() == data);
    }
    let info = c.replication("/u/cold.bin").await.unwrap();
    assert!(info.blocks.iter().all(|b| b.copies.len() == 1), "one cached copy per block: {info:#?}");
    let workers: std::collections::HashSet<u64> = info.blocks.iter().map(|b| b.copies[0].0.worker_id).collect();
    assert!(workers.len() >= 2, "the blocks spread: {info:#?}");
}
