//! Three masters (one Raft group over the mesh) and two workers, as real
//! processes: the leader is killed with -9 while a client keeps writing
//! files; every acknowledged file is there afterwards, byte-exact, and
//! writes resume under the new leader. Prints the failover time (kill →
//! first successful mutation).

mod common;

use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use common::*;
use strata_chaos::HaCluster;
use strata_client::{Client, ClientConfig};

async fn ha_client(masters: &str) -> Client {
    Client::connect(ha_config(masters)).await.expect("client connects")
}

async fn leader(c: &Client) -> (u64, String) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = c.report().await {
            if let Some(m) = r.masters.iter().find(|m| m.role == "leader") {
                return (m.id, m.addr.clone());
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_during_writes_loses_nothing_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = HaCluster::start(Path::new(BIN), dir.path(), 3, 2, "ha-secret-1").unwrap();
    let c = ha_client(&cluster.master_list()).await;
    eventually("both workers registered", Duration::from_secs(20), || async {
        c.report().await.map(|r| r.workers.iter().filter(|w| w.live).count() == 2).unwrap_or(false)
    })
    .await;
    let r = c.report().await.unwrap();
    assert_eq!(r.masters.len(), 3, "{:?}", r.masters);

    let stop = Arc::new(AtomicBool::new(false));
    let acked = Arc::new(parking_lot::Mutex::new(Vec::<(String, Vec<u8>)>::new()));
    let writer = {
        let (c, stop, acked) = (c.clone(), stop.clone(), acked.clone());
        tokio::spawn(async move {
            let mut errors = 0;
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let p = format!("/f{i}");
                let data = bytes(100_000 + (i as usize % 7) * 1000, i);
                let r = async {
                    let mut w = c.create(&p, false).await?;
                    w.write(&data).await?;
                    w.close().await
                }
                .await;
                match r {
                    Ok(_) => acked.lock().push((p, data)),
                    Err(e) => {
                        if errors < 5 {
                            eprintln!("write of {p} failed: {e}");
                        }
                        errors += 1
                    }
                }
            }
            errors
        })
    };
    eventually("some writes before the kill", Duration::from_secs(30), || async { acked.lock().len() >= 15 }).await;

    let (id, _) = leader(&c).await;
    let killed_at = Instant::now();
    cluster.masters[(id - 1) as usize].kill();
    // Failover time: the first mutation that succeeds after the kill.
    let probe = ha_client(&cluster.master_list()).await;
    loop {
        if probe.mkdir("/probe", true).await.is_ok() {
            break;
        }
        assert!(killed_at.elapsed() < Duration::from_secs(30), "no mutation succeeded within 30 s of the kill");
    }
    let failover = killed_at.elapsed();
    eprintln!("failover: leader {id} killed -> first successful mutation in {failover:?}");
    let before = acked.lock().len();
    eventually("writes resume under the new leader", Duration::from_secs(30), || async {
        acked.lock().len() >= before + 15
    })
    .await;
    stop.store(true, Ordering::Relaxed);
    let errors = writer.await.unwrap();
    let (new_id, _) = leader(&c).await;
    assert_ne!(new_id, id, "a new leader took over");

    let acked = acked.lock().clone();
    eprintln!("{} files acknowledged, {errors} writes failed around the failover", acked.len());
    for (p, data) in &acked {
        let got = c.read_all(p).await.unwrap_or_else(|e| panic!("{p} acknowledged but unreadable: {e}"));
        assert!(&got == data, "{p} differs");
    }
    // Nothing unacknowledged is half-there: every file in the namespace is complete.
    for e in c.list("/").await.unwrap() {
        if e.attr.file_type == strata_client::FileType::File {
            let a = c.stat(&format!("/{}", e.name)).await.unwrap();
            assert!(a.complete || !acked.iter().any(|(p, _)| p == &format!("/{}", e.name)));
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn minority_stopped_keeps_serving_majority_stopped_refuses_then_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = HaCluster::start(Path::new(BIN), dir.path(), 3, 1, "ha-secret-2").unwrap();
    let c = ha_client(&cluster.master_list()).await;
    let (leader_id, _) = leader(&c).await;
    let followers: Vec<usize> = (0..3).filter(|i| *i as u64 + 1 != leader_id).collect();

    cluster.masters[followers[0]].pause().unwrap();
    c.mkdir("/one-stopped", false).await.expect("two of three masters serve");

    cluster.masters[followers[1]].pause().unwrap();
    let mut quick = ClientConfig::new(cluster.master_list());
    quick.rpc_timeout = Duration::from_secs(2);
    quick.failover_timeout = Duration::from_secs(3);
    let q = Client::connect(quick).await.unwrap();
    let e = q.mkdir("/two-stopped", false).await.expect_err("no quorum: no split brain");
    eprintln!("with two masters stopped: {e}");

    cluster.masters[followers[0]].resume().unwrap();
    cluster.masters[followers[1]].resume().unwrap();
    eventually("mutations succeed again", Duration::from_secs(30), || async { c.mkdir("/after", true).await.is_ok() })
        .await;
    assert!(c.stat("/one-stopped").await.is_ok());
}

/// A follower whose journal directory was wiped rejoins from its peers by
/// installing the leader's snapshot (snapshots every 100 entries, 10
/// entries kept behind each: the log it would need is purged), holds the
/// same state machine as the others (equal digests at one applied index),
/// can then serve as leader, and a restart of every master keeps the
/// namespace and the data identical.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn wiped_follower_rejoins_and_full_restart_keeps_everything() {
    let dir = tempfile::tempdir().unwrap();
    let args = ["--snapshot-entries", "100", "--log-keep", "10"];
    let mut cluster = HaCluster::start_with(Path::new(BIN), dir.path(), 3, 1, "ha-secret-3", &args).unwrap();
    let c = ha_client(&cluster.master_list()).await;
    eventually("worker registered", Duration::from_secs(20), || async {
        c.report().await.map(|r| r.workers.iter().any(|w| w.live)).unwrap_or(false)
    })
    .await;
    let mut files = Vec::new();
    for i in 0..120u64 {
        // Even files are small (kept inline by the masters), odd ones one block each.
        let len = if i % 2 == 0 { 3000 + i as usize } else { 70_000 + i as usize };
        let (p, data) = (format!("/s{i}"), bytes(len, i));
        let mut w = c.create(&p, false).await.unwrap();
        w.write(&data).await.unwrap();
        w.close().await.unwrap();
        files.push((p, data));
    }
    let (leader_id, _) = leader(&c).await;
    let follower = (1..=3u64).find(|i| *i != leader_id).unwrap();
    let fnode = &mut cluster.masters[(follower - 1) as usize];
    fnode.kill();
    std::fs::remove_dir_all(HaCluster::master_dir(dir.path(), follower)).unwrap();
    fnode.restart(Duration::from_secs(60)).unwrap();
    eventually("the wiped follower caught up", Duration::from_secs(30), || async {
        let r = c.report().await.unwrap();
        let last = r.masters.iter().find(|m| m.role == "leader").map(|m| m.last_log_index).unwrap_or(0);
        r.masters.iter().any(|m| m.id == follower && m.applied_index == last && last > 0)
    })
    .await;
    let journals = masters_agree(&c, &cluster.master_list()).await;
    let lead = journals.iter().find(|j| j.status.id == leader_id).expect("the leader answers");
    assert!(lead.purged_index > 100, "the leader purged its log behind a snapshot: {lead:?}");
    let wiped = journals.iter().find(|j| j.status.id == follower).expect("the follower answers");
    assert!(wiped.snapshot_index > 0 && wiped.purged_index > 0, "the follower installed a snapshot: {wiped:?}");
    // Make the rejoined follower's copy matter: stop the leader.
    cluster.masters[(leader_id - 1) as usize].kill();
    for (p, data) in &files {
        assert!(&c.read_all(p).await.unwrap() == data, "{p} after the leader died");
    }
    c.mkdir("/after-failover", false).await.unwrap();
    // Restart everything.
    for m in cluster.masters.iter_mut() {
        m.kill();
    }
    for m in cluster.masters.iter_mut() {
        m.respawn().unwrap();
    }
    for m in cluster.masters.iter_mut() {
        m.wait_ready(Duration::from_secs(60)).unwrap();
    }
    let c = ha_client(&cluster.master_list()).await;
    eventually("worker re-registered", Duration::from_secs(30), || async {
        c.report().await.map(|r| r.workers.iter().any(|w| w.live && w.blocks >= 60)).unwrap_or(false)
    })
    .await;
    for (p, data) in &files {
        assert!(&c.read_all(p).await.unwrap() == data, "{p} after a full restart");
    }
    assert!(c.stat("/after-failover").await.is_ok());
}

/// A lock survives the leader's death: its holder reclaims it from the new
/// leader (which keeps others' new locks waiting for a grace period
/// first), so another client is refused throughout, and gets the lock
/// once the holder lets it go.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_lock_is_reclaimed_from_a_new_leader() {
    use strata_client::{ErrorCode, LockKind, LockRequest};
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = HaCluster::start(Path::new(BIN), dir.path(), 3, 1, "ha-secret-locks").unwrap();
    let (holder, other) = (ha_client(&cluster.master_list()).await, ha_client(&cluster.master_list()).await);
    let inode = holder.mkdir("/locked", false).await.unwrap().inode;
    let lock = |owner, kind| LockRequest { inode, owner, start: 0, end: u64::MAX, kind, pid: 1 };
    holder.lock(lock(7, Some(LockKind::Write)), false).await.unwrap();
    let refused = |r: Result<(), strata_client::ClientError>| match r {
        Err(e) => e.code() == ErrorCode::WouldBlock,
        Ok(()) => false,
    };
    assert!(refused(other.lock(lock(8, Some(LockKind::Read)), false).await));

    let (id, _) = leader(&holder).await;
    let killed_at = Instant::now();
    cluster.masters[(id - 1) as usize].kill();
    // Through the election, the grace and the reclaim, and after: the lock
    // is never the other's. Failures other than WouldBlock are the election.
    let mut answered = 0;
    while killed_at.elapsed() < Duration::from_secs(9) {
        match other.lock(lock(8, Some(LockKind::Read)), false).await {
            Ok(()) => panic!("granted to another client {:?} after the leader died", killed_at.elapsed()),
            Err(e) if e.code() == ErrorCode::WouldBlock => answered += 1,
            Err(_) => {}
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert!(answered > 10, "the new leader answered only {answered} times");
    let (new_id, _) = leader(&holder).await;
    assert_ne!(new_id, id);
    holder.lock(lock(7, None), false).await.unwrap();
    other.lock(lock(8, Some(LockKind::Read)), false).await.unwrap();
}

/// A FUSE mount of a three-master cluster goes on through the leader's
/// death: what it wrote before is there, it writes, renames, lists and
/// deletes after (each call waits out the election), and a lock it holds
/// is reclaimed from the new leader, so another client is refused.
#[test]
fn a_mount_survives_the_leader_failing_over() {
    use strata_client::{ErrorCode, LockKind, LockRequest};
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = HaCluster::start(Path::new(BIN), dir.path(), 3, 1, "ha-secret-fuse").unwrap();
    let c = rt.block_on(ha_client(&cluster.master_list()));
    rt.block_on(eventually("the worker registered", Duration::from_secs(20), || async {
        c.report().await.map(|r| r.workers.iter().any(|w| w.live)).unwrap_or(false)
    }));
    let mnt = dir.path().join("mnt");
    let args = ["fuse".to_string(), "--master".into(), cluster.master_list(), mnt.display().to_string()];
    let _mount = strata_chaos::Node::start(
        Path::new(BIN),
        &args,
        "mount: ",
        &dir.path().join("fuse.log"),
        Duration::from_secs(60),
    )
    .expect("strata fuse mounts (needs root and /dev/fuse)");
    let size = |i: u64| if i.is_multiple_of(2) { 1_000 + i as usize } else { 150_000 + i as usize };
    std::fs::create_dir(mnt.join("d")).unwrap();
    for i in 0..10 {
        std::fs::write(mnt.join(format!("d/f{i}")), bytes(size(i), i)).unwrap();
    }
    let locked =
        std::fs::OpenOptions::new().read(true).write(true).create(true).truncate(false).open(mnt.join("lock")).unwrap();
    fcntl_lock(&locked, libc::F_SETLK, libc::F_WRLCK, 0, 0).unwrap();
    let inode = rt.block_on(c.stat("/lock")).unwrap().inode;

    // The kill comes while the mount writes under its lease: the blocks of
    // the files it closes are written behind, and the worker cannot commit
    // them until a new leader knows it (the mount writes them again; once,
    // a file so written was left empty).
    let (id, _) = rt.block_on(leader(&c));
    let killed_at = Instant::now();
    cluster.masters[(id - 1) as usize].kill();
    for i in 10..20 {
        std::fs::write(mnt.join(format!("d/f{i}")), bytes(size(i), i)).unwrap();
    }
    eprintln!("mount: first writes after the leader's kill done in {:?}", killed_at.elapsed());
    std::fs::rename(mnt.join("d/f0"), mnt.join("d/renamed")).unwrap();
    std::fs::remove_file(mnt.join("d/f1")).unwrap();
    let mut names: Vec<String> =
        std::fs::read_dir(mnt.join("d")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names.len(), 19, "{names:?}");
    assert!(names.contains(&"renamed".to_string()) && !names.contains(&"f1".to_string()));
    for i in 2..20 {
        let got = std::fs::read(mnt.join(format!("d/f{i}"))).unwrap();
        if got != bytes(size(i), i) {
            let log = std::fs::read_to_string(dir.path().join("fuse.log")).unwrap_or_default();
            let tail: Vec<&str> = log.lines().rev().take(30).collect();
            panic!(
                "d/f{i}: {} bytes, want {}; zeros {}\n{}",
                got.len(),
                size(i),
                got.iter().filter(|b| **b == 0).count(),
                tail.into_iter().rev().collect::<Vec<_>>().join("\n")
            );
        }
    }
    assert!(std::fs::read(mnt.join("d/renamed")).unwrap() == bytes(size(0), 0));
    let (new_id, _) = rt.block_on(leader(&c));
    assert_ne!(new_id, id);
    // The mount's lock was reclaimed: another client is refused until it goes.
    let other = LockRequest { inode, owner: 1, start: 0, end: u64::MAX, kind: Some(LockKind::Read), pid: 1 };
    let e = rt.block_on(c.lock(other, false)).unwrap_err();
    assert_eq!(e.code(), ErrorCode::WouldBlock, "{e}");
    drop(locked);
    rt.block_on(c.lock(other, false)).unwrap();
    // Another client sees what the mount wrote after the failover once the
    // mount sent it (its changes under a lease are queued; the new leader
    // took them after its grace): an fsync of the directory waits for that.
    std::fs::File::open(mnt.join("d")).unwrap().sync_all().unwrap();
    assert!(rt.block_on(c.read_all("/d/f19")).unwrap() == bytes(size(19), 19));
    assert!(rt.block_on(c.stat("/d/f1")).is_err(), "the unlink reached the new leader");
}

/// A follower paused (SIGSTOP) while 200 MiB of 60 KiB files (kept inline
/// in the journal) are written by four writers catches up once it resumes:
/// the leader's AppendEntries stay under the byte bound (never one mesh
/// frame over the limit), writes are acknowledged before, during and after
/// the pause, the resumed follower disrupts nobody (the term does not
/// move), and all three state machines end equal.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_paused_follower_catches_up_without_disrupting_the_leader() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = HaCluster::start(Path::new(BIN), dir.path(), 3, 1, "ha-secret-6").unwrap();
    let c = ha_client(&cluster.master_list()).await;
    let (leader_id, leader_addr) = leader(&c).await;
    let term = c.journal_info(&leader_addr, false).await.unwrap().status.term;
    let follower = (0..3).find(|i| *i as u64 + 1 != leader_id).unwrap();
    c.mkdir("/in", false).await.unwrap();

    const FILES: u64 = 3400; // 3400 × 60 KiB ≈ 200 MiB
    let write = |range: std::ops::Range<u64>| {
        let c = c.clone();
        tokio::spawn(async move {
            for i in range {
                let (p, data) = (format!("/in/f{i}"), bytes(60 * 1024, i));
                let t = Instant::now();
                let mut w = c.create(&p, false).await.unwrap_or_else(|e| panic!("create {p}: {e}"));
                w.write(&data).await.unwrap();
                w.close().await.unwrap_or_else(|e| panic!("close {p}: {e}"));
                assert!(t.elapsed() < Duration::from_secs(10), "{p} took {:?} to be acknowledged", t.elapsed());
            }
        })
    };
    let spawn_all = |from: u64, to: u64| {
        let per = (to - from) / 4;
        (0..4).map(|k| write(from + k * per..from + (k + 1) * per)).collect::<Vec<_>>()
    };
    for t in spawn_all(0, 400) {
        t.await.unwrap();
    }
    cluster.masters[follower].pause().unwrap();
    for t in spawn_all(400, FILES) {
        t.await.unwrap();
    }
    cluster.masters[follower].resume().unwrap();
    let during = spawn_all(FILES, FILES + 400);
    for t in during {
        t.await.unwrap();
    }
    let journals = masters_agree(&c, &cluster.master_list()).await;
    for j in &journals {
        assert_eq!(j.status.term, term, "the term moved: {j:?}");
        assert_eq!(j.status.leader, Some(leader_id), "the leadership moved: {j:?}");
    }
    for i in (0..FILES + 400).step_by(97) {
        assert!(c.read_all(&format!("/in/f{i}")).await.unwrap() == bytes(60 * 1024, i), "/in/f{i}");
    }
}

/// A master killed (-9) while a FUSE mount creates small files, started
/// again two seconds later: every file whose close returned 0 is there
/// afterwards, byte-exact, and an fsync of the directory returns 0. (The
/// mount's queued changes outlive the master's absence: a batch whose
/// fate is unknown is sent again until the master answers, and the master
/// applies each batch number once.)
#[test]
fn a_master_restart_loses_nothing_a_mount_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = strata_chaos::Cluster::start(Path::new(BIN), dir.path(), 1, "restart-secret").unwrap();
    let master = cluster.master_addr().to_string();
    mount_survives(dir.path(), &master, || {
        cluster.master.kill();
        std::thread::sleep(Duration::from_secs(2));
        cluster.master.respawn().unwrap();
        cluster.master.wait_ready(Duration::from_secs(60)).unwrap();
    });
}

/// The same with three masters and the leader killed (and started again
/// two seconds later, a follower by then).
#[test]
fn a_leader_killed_under_a_mount_loses_nothing_it_acknowledged() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = HaCluster::start(Path::new(BIN), dir.path(), 3, 1, "restart-secret-3").unwrap();
    let masters = cluster.master_list();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(ha_client(&masters));
    let (id, _) = rt.block_on(leader(&c));
    mount_survives(dir.path(), &masters, || {
        let m = &mut cluster.masters[(id - 1) as usize];
        m.kill();
        std::thread::sleep(Duration::from_secs(2));
        m.restart(Duration::from_secs(60)).unwrap();
    });
}

/// Mounts `masters` under `dir`, creates 3,000 small files through the
/// mount while `fault` runs (from 1 s in), then checks the directory's
/// fsync returns 0 and every file whose close returned 0 reads byte-exact.
fn mount_survives(dir: &Path, masters: &str, fault: impl FnOnce()) {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let c = rt.block_on(ha_client(masters));
    rt.block_on(eventually("the worker registered", Duration::from_secs(20), || async {
        c.report().await.map(|r| r.workers.iter().any(|w| w.live)).unwrap_or(false)
    }));
    let mnt = dir.join("mnt");
    let args = ["fuse".to_string(), "--master".into(), masters.to_string(), mnt.display().to_string()];
    let _mount =
        strata_chaos::Node::start(Path::new(BIN), &args, "mount: ", &dir.join("fuse.log"), Duration::from_secs(60))
            .expect("strata fuse mounts (needs root and /dev/fuse)");
    std::fs::create_dir(mnt.join("d")).unwrap();
    let size = |i: u64| 500 + (i as usize % 3000);
    let writer = {
        let mnt = mnt.clone();
        std::thread::spawn(move || {
            let mut acked = Vec::new();
            let started = Instant::now();
            for i in 0..3000u64 {
                if std::fs::write(mnt.join(format!("d/f{i}")), bytes(size(i), i)).is_ok() {
                    acked.push(i);
                }
                if started.elapsed() > Duration::from_secs(60) {
                    break;
                }
                // Spread over the fault (1 s to 3 s in).
                std::thread::sleep(Duration::from_millis(2));
            }
            acked
        })
    };
    std::thread::sleep(Duration::from_secs(1));
    fault();
    let acked = writer.join().unwrap();
    eprintln!("{} of 3000 files acknowledged by the mount", acked.len());
    std::fs::File::open(mnt.join("d")).unwrap().sync_all().expect("fsync of the directory");
    let c = rt.block_on(ha_client(masters));
    for i in acked {
        let p = format!("/d/f{i}");
        let got = rt.block_on(c.read_all(&p)).unwrap_or_else(|e| panic!("{p} acknowledged but unreadable: {e}"));
        assert!(got == bytes(size(i), i), "{p} differs");
    }
}
