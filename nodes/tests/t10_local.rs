//! `strata local` end to end through the CLI: a 3.5-block file round-trips
//! byte-exact, the fs commands work, bad paths get clear errors, and a
//! stopped and restarted node still has its namespace and data.

mod common;

use std::time::Duration;

use common::*;

const BLOCK: u64 = 1 << 20;

#[test]
fn put_get_round_trip_and_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_local(dir.path(), 64 << 20, 1 << 30);
    let m = node.ready.clone();

    let data = bytes((3 * BLOCK + BLOCK / 2) as usize, 1);
    let src = dir.path().join("src.bin");
    std::fs::write(&src, &data).unwrap();
    let (ok, _, err) = strata(&m, &["fs", "mkdir", "-p", "/a/b"]);
    assert!(ok, "{err}");
    let (ok, _, err) = strata(&m, &["fs", "put", "--block-size", "1MiB", src.to_str().unwrap(), "/a/b/file.bin"]);
    assert!(ok, "{err}");
    let dst = dir.path().join("dst.bin");
    let (ok, _, err) = strata(&m, &["fs", "get", "/a/b/file.bin", dst.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(std::fs::read(&dst).unwrap() == data, "round trip is byte-exact");

    let (ok, out, _) = strata(&m, &["fs", "stat", "--json", "/a/b/file.bin"]);
    assert!(ok);
    let v: serde_json::Value = serde_json::from_str(&out).unwrap();
    assert_eq!(v["size"], data.len() as u64);
    assert_eq!(v["block_size"], BLOCK);
    assert_eq!(v["complete"], true);

    // put refuses to replace without --force, and replaces with it.
    let (ok, _, err) = strata(&m, &["fs", "put", src.to_str().unwrap(), "/a/b/file.bin"]);
    assert!(!ok && err.contains("already exists"), "{err}");

    let (ok, out, _) = strata(&m, &["fs", "ls", "/a/b"]);
    assert!(ok && out.contains("file.bin"), "{out}");
    let (ok, _, err) = strata(&m, &["fs", "mv", "/a/b/file.bin", "/a/moved.bin"]);
    assert!(ok, "{err}");
    let (ok, out, _) = strata(&m, &["fs", "du", "/a"]);
    assert!(ok && out.starts_with(&format!("{}\t1 files", data.len())), "{out}");
    let small = dir.path().join("small.txt");
    std::fs::write(&small, b"hello strata\n").unwrap();
    assert!(strata(&m, &["fs", "put", small.to_str().unwrap(), "/a/small.txt"]).0);
    let (ok, out, _) = strata(&m, &["fs", "cat", "/a/small.txt"]);
    assert!(ok);
    assert_eq!(out, "hello strata\n");
    let (ok, out, _) = strata(&m, &["report"]);
    assert!(ok && out.contains("live") && out.contains("leader"), "{out}");

    // Bad paths: clear errors.
    for (args, expect) in [
        (vec!["fs", "mkdir", "relative/dir"], "must be absolute"),
        (vec!["fs", "mkdir", "/a/../b"], "`.` and `..`"),
        (vec!["fs", "mkdir", "/a//b"], "empty path component"),
        (vec!["fs", "stat", "/missing"], "not found"),
        (vec!["fs", "rm", "/a"], "not empty"),
    ] {
        let (ok, _, err) = strata(&m, &args);
        assert!(!ok && err.contains(expect), "{args:?}: {err}");
    }
    let long = format!("/{}", "n".repeat(300));
    let (ok, _, err) = strata(&m, &["fs", "mkdir", &long]);
    assert!(!ok && err.contains("longer than 255"), "{err}");

    // Stop (SIGTERM) and start again: namespace and data are still there.
    assert!(node.stop(Duration::from_secs(20)), "clean shutdown");
    node.restart(Duration::from_secs(60)).unwrap();
    let m = node.ready.clone();
    let dst2 = dir.path().join("dst2.bin");
    let (ok, _, err) = strata(&m, &["fs", "get", "/a/moved.bin", dst2.to_str().unwrap()]);
    assert!(ok, "{err}");
    assert!(std::fs::read(&dst2).unwrap() == data, "data survives a restart");
    let (ok, out, _) = strata(&m, &["fs", "cat", "/a/small.txt"]);
    assert!(ok && out == "hello strata\n");
    let (ok, _, err) = strata(&m, &["fs", "rm", "-r", "/a"]);
    assert!(ok, "{err}");
    let (ok, out, _) = strata(&m, &["fs", "ls", "/"]);
    assert!(ok && out.trim().is_empty(), "{out}");
}

/// Many metadata operations through one client, checked against a model.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn namespace_operations_match_a_model() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_local(dir.path(), 64 << 20, 1 << 30);
    let c = client(&node.ready, 64 * 1024).await;
    c.mkdir("/d", false).await.unwrap();
    let mut expect = std::collections::BTreeMap::new();
    for i in 0..40u64 {
        let p = format!("/d/f{i}");
        let data = bytes((i * 3000) as usize, i);
        let mut w = c.create(&p, false).await.unwrap();
        w.write(&data).await.unwrap();
        w.close().await.unwrap();
        expect.insert(p, data);
    }
    // Rename over existing files, delete some.
    for i in (0..40u64).step_by(3) {
        let (src, dst) = (format!("/d/f{i}"), format!("/d/f{}", i + 1));
        c.rename(&src, &dst).await.unwrap();
        let v = expect.remove(&src).unwrap();
        expect.insert(dst, v);
    }
    for i in (0..40u64).step_by(5) {
        let p = format!("/d/f{i}");
        if expect.remove(&p).is_some() {
            c.delete(&p, false).await.unwrap();
        } else {
            assert_eq!(c.delete(&p, false).await.unwrap_err().code(), strata_client::ErrorCode::NotFound);
        }
    }
    let names: Vec<String> = c.list("/d").await.unwrap().into_iter().map(|e| format!("/d/{}", e.name)).collect();
    assert_eq!(names, expect.keys().cloned().collect::<Vec<_>>());
    for (p, data) in &expect {
        assert!(&c.read_all(p).await.unwrap() == data, "{p}");
    }
    let link = c.symlink("/d/f1", "/d/link").await.unwrap();
    assert_eq!(link.symlink_target.as_deref(), Some("/d/f1"));
    let attrs = strata_client::SetAttrs { mode: Some(0o700), uid: Some(12), gid: Some(34), ..Default::default() };
    let a = c.set_attr("/d", attrs).await.unwrap();
    assert_eq!((a.mode, a.uid, a.gid), (0o700, 12, 34));
    // Deleted files' blocks leave the worker.
    c.delete("/d", true).await.unwrap();
    eventually("blocks of deleted files are dropped", Duration::from_secs(20), || async {
        let r = c.report().await.unwrap();
        r.workers.iter().all(|w| w.blocks == 0 && w.tiers.iter().all(|t| t.blocks == 0))
    })
    .await;
}

/// Reads of blocks on a worker of this host come straight from its block
/// files: once a reader has opened a block, it keeps reading it with the
/// node frozen (SIGSTOP), where a reader without short-circuit times out.
/// A small file is kept inline by the master and comes whole with the open.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn short_circuit_reads_and_inline_small_files() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_local(dir.path(), 64 << 20, 1 << 30);
    let c = client(&node.ready, BLOCK).await;

    let small = bytes(5000, 3);
    let mut w = c.create("/small", false).await.unwrap();
    w.write(&small).await.unwrap();
    w.close().await.unwrap();
    let fb = c.blocks("/small").await.unwrap();
    assert!(fb.blocks.is_empty() && fb.inline.as_deref() == Some(&small[..]), "a small file is kept inline");

    let data = bytes(3 * BLOCK as usize, 4);
    let mut w = c.create("/big", false).await.unwrap();
    w.write(&data).await.unwrap();
    w.close().await.unwrap();
    assert_eq!(c.blocks("/big").await.unwrap().blocks.len(), 3);

    let mut local = c.open("/big").await.unwrap();
    let mut inline = c.open("/small").await.unwrap();
    let mut cfg = strata_client::ClientConfig::new(node.ready.clone());
    cfg.short_circuit = false;
    cfg.data_timeout = Duration::from_secs(2);
    cfg.rpc_timeout = Duration::from_secs(2);
    cfg.failover_timeout = Duration::from_secs(2);
    let remote_client = strata_client::Client::connect(cfg).await.unwrap();
    let mut remote = remote_client.open("/big").await.unwrap();
    // Open every block locally (random reads: one checksum chunk each).
    let mut buf = vec![0u8; 4096];
    for off in [10_000u64, BLOCK + 10_000, 2 * BLOCK + 10_000] {
        local.seek(off);
        assert_eq!(local.read(&mut buf).await.unwrap(), 4096);
        assert!(buf[..] == data[off as usize..off as usize + 4096]);
    }

    node.pause().unwrap();
    let frozen = async {
        for off in [BLOCK + 500_000, 700_000, 2 * BLOCK + 900_000] {
            local.seek(off);
            assert_eq!(local.read(&mut buf).await.unwrap(), 4096, "short-circuit read at {off}");
            assert!(buf[..] == data[off as usize..off as usize + 4096]);
        }
        let mut got = vec![0u8; 8192];
        assert_eq!(inline.read(&mut got).await.unwrap(), 5000);
        assert!(got[..5000] == small[..]);
    };
    let local_ok = tokio::time::timeout(Duration::from_secs(5), frozen).await;
    remote.seek(BLOCK + 500_000);
    let remote_r = tokio::time::timeout(Duration::from_secs(30), remote.read(&mut buf)).await;
    node.resume().unwrap();
    local_ok.expect("short-circuit and inline reads do not wait for the frozen node");
    assert!(!matches!(remote_r, Ok(Ok(_))), "a read through the frozen worker fails");
}

/// State-machine writes are not synced (they are replayed from the Raft
/// log): a node killed with SIGKILL loses nothing it acknowledged (the
/// restart replays what its state machine had not written); a clean stop
/// leaves the state machine on disk current without a replay.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_killed_node_replays_its_state_machine_and_a_stopped_one_wrote_it() {
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_local(dir.path(), 64 << 20, 1 << 30);
    let c = client(&node.ready, 64 * 1024).await;
    c.mkdir("/k", false).await.unwrap();
    for i in 0..30u64 {
        let mut w = c.create(&format!("/k/f{i}"), false).await.unwrap();
        w.write(&bytes(100 + i as usize, i)).await.unwrap();
        w.close().await.unwrap();
    }
    drop(c);
    node.kill();
    node.restart(Duration::from_secs(60)).unwrap();
    let c = client(&node.ready, 64 * 1024).await;
    for i in 0..30u64 {
        assert_eq!(c.read_all(&format!("/k/f{i}")).await.unwrap(), bytes(100 + i as usize, i), "f{i}");
    }
    c.mkdir("/k/after", false).await.unwrap();
    c.delete("/k/f0", false).await.unwrap();
    drop(c);
    assert!(node.stop(Duration::from_secs(20)), "clean shutdown");
    let db = strata_actors::master::store::open_db(&dir.path().join("master/meta")).expect("open the master db");
    let ns = strata_actors::master::namespace::Namespace::open(db).expect("open the namespace");
    assert!(ns.resolve("/k/after").is_ok(), "the last mkdir is in the stopped state machine");
    assert!(ns.resolve("/k/f0").is_err(), "the last delete is in the stopped state machine");
    assert!(ns.resolve("/k/f29").is_ok());
}

/// A few hundred lock requests waiting on one client (jobs of a parallel
/// build waiting on one lock file) leave its other calls room: beyond a
/// few they wait in the client, not in the master's slots for the
/// client's connection, which every other call of the client needs.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_lock_waits_leave_room_for_other_calls() {
    use std::sync::atomic::{AtomicBool, Ordering};
    use strata_client::{ErrorCode, LockKind, LockRequest};
    let dir = tempfile::tempdir().unwrap();
    let node = start_local(dir.path(), 64 << 20, 1 << 30);
    let (holder, waiters) = (client(&node.ready, BLOCK).await, client(&node.ready, BLOCK).await);
    holder.create("/lockfile", false).await.unwrap().close().await.unwrap();
    let inode = holder.stat("/lockfile").await.unwrap().inode;
    let write = move |owner| LockRequest { inode, owner, start: 0, end: u64::MAX, kind: Some(LockKind::Write), pid: 1 };
    holder.lock(write(1), false).await.unwrap();

    let stop = std::sync::Arc::new(AtomicBool::new(false));
    let tasks: Vec<_> = (0..400)
        .map(|owner| {
            let (c, stop) = (waiters.clone(), stop.clone());
            tokio::spawn(async move {
                // Each ask ends within the master's hold or the client's wait.
                while !stop.load(Ordering::Relaxed) {
                    match c.lock(write(100 + owner), true).await {
                        Err(e) if e.code() == ErrorCode::WouldBlock => {}
                        other => panic!("a held lock request answered {other:?}"),
                    }
                }
            })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(600)).await;
    let mut took = Vec::new();
    for _ in 0..10 {
        let t0 = std::time::Instant::now();
        waiters.stat("/lockfile").await.unwrap();
        took.push(t0.elapsed());
    }
    // A free lock is granted at once, not after the waits queued here.
    let free = holder.create("/free", false).await.unwrap().close().await.unwrap().inode;
    let t0 = std::time::Instant::now();
    waiters.lock(LockRequest { inode: free, ..write(1) }, true).await.unwrap();
    let granted = t0.elapsed();
    stop.store(true, Ordering::Relaxed);
    for t in tasks {
        t.await.unwrap();
    }
    took.sort();
    assert!(took[5] < Duration::from_millis(100), "stats beside 400 lock waits took {took:?}");
    assert!(granted < Duration::from_millis(100), "a free lock beside 400 waits took {granted:?}");
}
