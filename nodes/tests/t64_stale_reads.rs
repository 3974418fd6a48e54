//! Stale reads: with `stale_reads`, stat, list and block locations are served
//! by any master from its local state. Three masters and a worker; the
//! leader and one follower are stopped (SIGSTOP: no quorum, no new leader).
//! A linearizable read fails with an error within its failover timeout; a
//! stale read is served by the remaining follower, and the file's bytes
//! come back exact. After SIGCONT everything serves again.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use strata_chaos::HaCluster;
use strata_client::Client;

async fn client(masters: &str, stale_reads: bool) -> Client {
    let mut c = ha_config(masters);
    c.rpc_timeout = Duration::from_secs(2);
    c.failover_timeout = Duration::from_secs(6);
    c.stale_reads = stale_reads;
    Client::connect(c).await.expect("client connects")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn follower_serves_stale_reads_without_a_quorum() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = HaCluster::start(Path::new(BIN), dir.path(), 3, 1, "ha-secret-stale").unwrap();
    let list = cluster.master_list();
    let c = client(&list, false).await;
    eventually("worker registered", Duration::from_secs(20), || async {
        c.report().await.map(|r| r.workers.iter().any(|w| w.live)).unwrap_or(false)
    })
    .await;
    c.mkdir("/d", false).await.unwrap();
    let data = bytes(300_000, 7);
    let mut w = c.create("/d/f", false).await.unwrap();
    w.write(&data).await.unwrap();
    w.close().await.unwrap();
    // Every follower has applied everything (a stale read could otherwise miss it).
    eventually("followers caught up", Duration::from_secs(20), || async {
        let Ok(r) = c.report().await else { return false };
        let Some(l) = r.masters.iter().find(|m| m.role == "leader") else { return false };
        r.masters.iter().all(|m| m.applied_index == l.last_log_index)
    })
    .await;
    let r = c.report().await.unwrap();
    let leader = r.masters.iter().find(|m| m.role == "leader").expect("a leader").id;

    let followers: Vec<u64> = (1..=3).filter(|i| *i != leader).collect();
    cluster.masters[(leader - 1) as usize].pause().unwrap();
    cluster.masters[(followers[0] - 1) as usize].pause().unwrap();
    let survivor = followers[1];
    eprintln!("leader {leader} and follower {} stopped; master {survivor} runs", followers[0]);

    let t = Instant::now();
    let lin = client(&list, false).await;
    let e = lin.stat("/d/f").await.expect_err("a linearizable read needs the leader and a quorum");
    eprintln!("linearizable stat failed after {:?}: {e}", t.elapsed());

    let t = Instant::now();
    let stale = client(&list, true).await;
    let a = stale.stat("/d/f").await.expect("a stale stat is served by the running follower");
    assert_eq!(a.size, data.len() as u64);
    let names: Vec<String> = stale.list("/d").await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, vec!["f".to_string()]);
    assert!(stale.read_all("/d/f").await.unwrap() == data, "stale read returns the file's bytes");
    eprintln!("stale stat, list and read served in {:?} with two of three masters stopped", t.elapsed());
    // The CLI flag does the same.
    let (ok, out, err) = strata(&list, &["fs", "stat", "/d/f", "--stale-reads"]);
    assert!(ok && out.contains(&data.len().to_string()), "strata fs stat --stale-reads: {out}{err}");
    // Mutations are never stale: still refused without a quorum.
    assert!(stale.mkdir("/no-quorum", false).await.is_err());

    cluster.masters[(leader - 1) as usize].resume().unwrap();
    cluster.masters[(followers[0] - 1) as usize].resume().unwrap();
    eventually("mutations succeed again", Duration::from_secs(30), || async { c.mkdir("/after", true).await.is_ok() })
        .await;
    assert!(lin.stat("/d/f").await.is_ok());
    eventually("stale reads see the new directory", Duration::from_secs(10), || async {
        stale.stat("/after").await.is_ok()
    })
    .await;
}
