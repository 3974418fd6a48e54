//! Run-time membership changes with real processes: three masters and a
//! worker; a fourth master started with `--join` is added with `strata admin
//! master add` (learner until caught up, then voter) and `strata report`
//! shows four voters with it caught up. The worker learns the new master
//! from its heartbeat replies (a client talking only to master 4 reads every
//! file). The old leader is killed with -9 and writes go on; the dead master
//! is removed, then a live follower, which exits by itself; a client holding
//! only the original master list still reads everything and writes.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::*;
use strata_chaos::HaCluster;
use strata_client::{Client, ClusterReport};

async fn ha_client(masters: &str, stale_reads: bool) -> Client {
    let mut c = ha_config(masters);
    c.stale_reads = stale_reads;
    Client::connect(c).await.expect("client connects")
}

/// `strata report --json` through the CLI.
fn cli_report(masters: &str) -> Option<ClusterReport> {
    let (ok, out, _) = strata(masters, &["report", "--json"]);
    if !ok {
        return None;
    }
    serde_json::from_str(&out).ok()
}

async fn write_file(c: &Client, p: &str, data: &[u8]) -> Result<(), strata_client::ClientError> {
    let mut w = c.create(p, false).await?;
    w.write(data).await?;
    w.close().await.map(|_| ())
}

async fn leader(c: &Client) -> u64 {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        if let Ok(r) = c.report().await {
            if let Some(m) = r.masters.iter().find(|m| m.role == "leader") {
                return m.id;
            }
        }
        assert!(Instant::now() < deadline, "no leader");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn add_master_kill_leader_remove_masters() {
    let started = Instant::now();
    let dir = tempfile::tempdir().unwrap();
    // Ten entries kept behind a snapshot: the new master catches up by one.
    let args = ["--log-keep", "10"];
    let mut cluster = HaCluster::start_with(Path::new(BIN), dir.path(), 3, 1, "ha-secret-members", &args).unwrap();
    let original = cluster.master_list();
    let c = ha_client(&original, false).await;
    eventually("worker registered", Duration::from_secs(20), || async {
        c.report().await.map(|r| r.workers.iter().any(|w| w.live)).unwrap_or(false)
    })
    .await;
    let mut files = Vec::new();
    for i in 0..20u64 {
        let (p, data) = (format!("/m{i}"), bytes(100_000 + i as usize * 1000, i));
        write_file(&c, &p, &data).await.unwrap();
        files.push((p, data));
    }

    // Every master snapshots now and purges its log behind it.
    let (ok, out, err) = strata(&original, &["admin", "journal", "snapshot"]);
    assert!(ok, "admin journal snapshot: {out}{err}");
    let (ok, out, err) = strata(&original, &["admin", "journal", "info", "--json"]);
    assert!(ok, "admin journal info: {out}{err}");
    let infos: Vec<strata_protocol::messages::JournalInfo> = serde_json::from_str(&out).unwrap();
    assert_eq!(infos.len(), 3, "{out}");
    assert!(infos.iter().all(|j| j.snapshot_index >= 40 && j.purged_index > 0), "every log purged: {out}");

    // Add master 4: it joins after the log was purged.
    let spec = cluster.start_joining_master().unwrap();
    let t = Instant::now();
    let (ok, out, err) = strata(&original, &["admin", "master", "add", &spec]);
    assert!(ok, "admin master add {spec}: {out}{err}\n{}", cluster.masters[3].log());
    eprintln!("master 4 added in {:?}: {}", t.elapsed(), out.trim());
    eventually("report shows 4 voters, master 4 caught up", Duration::from_secs(20), || async {
        let Some(r) = cli_report(&original) else { return false };
        let last = r.masters.iter().find(|m| m.role == "leader").map(|m| m.last_log_index).unwrap_or(0);
        r.masters.len() == 4
            && r.masters.iter().all(|m| m.voter)
            && r.masters.iter().any(|m| m.id == 4 && m.applied_index == last && last > 0)
    })
    .await;
    let (_, report, _) = strata(&original, &["report"]);
    eprintln!("{report}");

    // Master 4 has the namespace and, from the worker, every block location.
    let only4 = ha_client(&cluster.master_addrs[3], true).await;
    eventually("master 4 serves every file", Duration::from_secs(20), || async {
        for (p, data) in &files {
            match only4.read_all(p).await {
                Ok(got) if &got == data => {}
                _ => return false,
            }
        }
        true
    })
    .await;

    // Kill the old leader; writes go on under the new one.
    let old = leader(&c).await;
    cluster.masters[(old - 1) as usize].kill();
    let killed = Instant::now();
    for i in 20..30u64 {
        let (p, data) = (format!("/m{i}"), bytes(50_000 + i as usize, i));
        let deadline = Instant::now() + Duration::from_secs(30);
        // A write in flight at the kill may fail with an unknown outcome: retry under a new name.
        let mut attempt = 0;
        loop {
            let name = if attempt == 0 { p.clone() } else { format!("{p}.{attempt}") };
            match write_file(&c, &name, &data).await {
                Ok(()) => {
                    files.push((name, data.clone()));
                    break;
                }
                Err(e) => {
                    assert!(Instant::now() < deadline, "no write succeeded after the leader was killed: {e}");
                    attempt += 1;
                }
            }
        }
    }
    eprintln!("old leader {old} killed; 10 writes done {:?} later", killed.elapsed());

    // Remove the dead master, then a live follower (not the new leader, not master 4).
    let (ok, out, err) = strata(&original, &["admin", "master", "remove", &old.to_string()]);
    assert!(ok, "remove dead master {old}: {out}{err}");
    let now = leader(&c).await;
    let victim = (1..=3u64).find(|id| *id != old && *id != now).unwrap();
    let (ok, out, err) = strata(&original, &["admin", "master", "remove", &victim.to_string()]);
    assert!(ok, "remove live master {victim}: {out}{err}");
    let code = cluster.masters[(victim - 1) as usize]
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("removed master {victim} kept running: {e}"));
    assert_eq!(code, Some(0), "removed master {victim} exits cleanly");
    // Restarted on its old data dir, it refuses to run outside the group.
    let m = &mut cluster.masters[(victim - 1) as usize];
    m.respawn().unwrap();
    let code = m
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("removed master {victim} restarted on its old dir kept running: {e}\n{}", m.log()));
    assert_ne!(code, Some(0), "a removed master must not start again on its old dir");
    assert!(m.log().contains("was removed from the master group"), "{}", m.log());

    let r = c.report().await.unwrap();
    let voters: Vec<u64> = r.masters.iter().filter(|m| m.voter).map(|m| m.id).collect();
    assert_eq!(voters.len(), 2, "{:?}", r.masters);
    assert!(voters.contains(&4) && !voters.contains(&old) && !voters.contains(&victim), "{voters:?}");

    // The original list now names one live master and two gone: the client
    // still finds the leader (possibly master 4, through a redirect).
    let c = ha_client(&original, false).await;
    for (p, data) in &files {
        let got = c.read_all(p).await.unwrap_or_else(|e| panic!("{p} unreadable after the changes: {e}"));
        assert!(&got == data, "{p} differs");
    }
    write_file(&c, "/after-removals", b"still writable").await.unwrap();
    assert_eq!(c.read_all("/after-removals").await.unwrap(), b"still writable");
    eprintln!("membership test took {:?}", started.elapsed());
}

/// Removing the current leader: it commits the change, answers, and exits;
/// the two others elect a leader and keep serving what was written.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn removed_leader_exits_and_the_rest_elect_a_new_one() {
    let dir = tempfile::tempdir().unwrap();
    let mut cluster = HaCluster::start(Path::new(BIN), dir.path(), 3, 0, "ha-secret-remove-leader").unwrap();
    let list = cluster.master_list();
    let c = ha_client(&list, false).await;
    c.mkdir("/before", false).await.unwrap();
    let old = leader(&c).await;
    let (ok, out, err) = strata(&list, &["admin", "master", "remove", &old.to_string()]);
    assert!(ok, "remove leader {old}: {out}{err}");
    let code = cluster.masters[(old - 1) as usize]
        .wait_exit(Duration::from_secs(20))
        .unwrap_or_else(|e| panic!("removed leader {old} kept running: {e}"));
    assert_eq!(code, Some(0), "removed leader {old} exits cleanly");
    c.mkdir("/after", false).await.expect("the two remaining masters elect a leader");
    let new = leader(&c).await;
    assert_ne!(new, old);
    let r = c.report().await.unwrap();
    let voters: Vec<u64> = r.masters.iter().filter(|m| m.voter).map(|m| m.id).collect();
    assert_eq!(voters.len(), 2, "{:?}", r.masters);
    assert!(!voters.contains(&old));
    assert!(c.stat("/before").await.is_ok());
}

/// Adding a master that is not running fails within the catch-up bound
/// with a clear error; it is left a learner (no quorum change), shown as
/// such by `strata report`, and `remove` takes it out again.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn adding_an_absent_master_fails_clearly_and_can_be_undone() {
    let dir = tempfile::tempdir().unwrap();
    let cluster = HaCluster::start(Path::new(BIN), dir.path(), 3, 0, "ha-secret-absent").unwrap();
    let list = cluster.master_list();
    let c = ha_client(&list, false).await;
    c.mkdir("/x", false).await.unwrap();
    let nobody = strata_chaos::free_port();
    let t = Instant::now();
    let (ok, out, err) = strata(&list, &["admin", "master", "add", &format!("4=127.0.0.1:{nobody}:{nobody}")]);
    assert!(!ok, "adding an absent master must fail: {out}");
    assert!(err.contains("did not catch up"), "{err}");
    eprintln!("add of an absent master failed after {:?}: {}", t.elapsed(), err.trim());
    let r = c.report().await.unwrap();
    let four = r.masters.iter().find(|m| m.id == 4).expect("master 4 listed");
    assert!(!four.voter && four.role == "learner", "{four:?}");
    assert_eq!(r.masters.iter().filter(|m| m.voter).count(), 3);
    c.mkdir("/y", false).await.expect("a stuck learner does not block commits");
    let (ok, out, err) = strata(&list, &["admin", "master", "remove", "4"]);
    assert!(ok, "remove the learner: {out}{err}");
    let r = c.report().await.unwrap();
    assert_eq!(r.masters.len(), 3, "{:?}", r.masters);
    let (ok, _, err) = strata(&list, &["admin", "master", "remove", "9"]);
    assert!(!ok && err.contains("not a member"), "{err}");
}
