//! Separate master and worker processes joined over the mesh: a worker
//! killed with -9 and started again re-registers, reports its blocks and
//! serves them; a worker with the wrong cluster secret is refused.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use strata_chaos::Cluster;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_worker_rejoins_and_serves_its_blocks() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = Cluster::start(Path::new(BIN), dir.path(), 1, "test-secret-1").unwrap();
    let m = cluster.master_addr().to_string();
    let c = client(&m, 256 * 1024).await;
    let data = bytes(1_000_000, 7);
    let mut w = c.create("/f", false).await.unwrap();
    w.write(&data).await.unwrap();
    w.close().await.unwrap();
    assert!(c.read_all("/f").await.unwrap() == data);

    cluster.workers[0].kill();
    // The master marks it lost, then reading fails with a clear error.
    eventually("worker marked lost", Duration::from_secs(20), || async {
        c.report().await.unwrap().workers.iter().all(|w| !w.live)
    })
    .await;
    let e = c.read_all("/f").await.unwrap_err();
    assert!(matches!(e.code(), strata_client::ErrorCode::BlockNotFound | strata_client::ErrorCode::Unavailable), "{e}");

    cluster.workers[0].restart(Duration::from_secs(60)).unwrap();
    eventually("worker live again with its blocks", Duration::from_secs(20), || async {
        let r = c.report().await.unwrap();
        r.workers.len() == 1 && r.workers[0].live && r.workers[0].blocks == 4
    })
    .await;
    assert!(c.read_all("/f").await.unwrap() == data, "blocks served after restart");
}

#[test]
fn worker_with_wrong_secret_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = Cluster::start(Path::new(BIN), dir.path(), 0, "right-secret").unwrap();
    let err = match cluster.start_worker("wrong-secret") {
        Ok(_) => panic!("a worker with the wrong secret joined"),
        Err(e) => format!("{e:#}"),
    };
    assert!(err.contains("cluster secret"), "{err}");
    let (ok, out, _) = strata(cluster.master_addr(), &["report", "--json"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["workers"].as_array().unwrap().len(), 0, "no worker registered");
}

/// A worker lost for longer than `--worker-forget-after-ms` is forgotten
/// (no longer in reports); started again, it registers anew with its blocks.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_long_lost_worker_is_forgotten_and_registers_anew() {
    let dir = tempfile::tempdir().unwrap();
    let extra = ["--worker-forget-after-ms", "1000"];
    let mut cluster = Cluster::start_with(Path::new(BIN), dir.path(), 1, "test-secret-forget", &extra).unwrap();
    let c = client(cluster.master_addr(), 256 * 1024).await;
    let data = bytes(600_000, 9);
    let mut w = c.create("/f", false).await.unwrap();
    w.write(&data).await.unwrap();
    w.close().await.unwrap();
    cluster.workers[0].kill();
    eventually("the lost worker forgotten", Duration::from_secs(20), || async {
        c.report().await.unwrap().workers.is_empty()
    })
    .await;
    cluster.workers[0].restart(Duration::from_secs(60)).unwrap();
    eventually("the worker registered again with its blocks", Duration::from_secs(20), || async {
        let r = c.report().await.unwrap();
        r.workers.len() == 1 && r.workers[0].live && r.workers[0].blocks == 3
    })
    .await;
    assert!(c.read_all("/f").await.unwrap() == data);
}
