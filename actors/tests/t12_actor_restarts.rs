//! Supervision under load: a master and a worker in one process (as
//! `strata local` runs them), a client writing, overwriting and reading
//! files, and every actor of both nodes killed in turn. Each comes back
//! (a fresh incarnation under the same node-scoped name, its state rebuilt
//! from RocksDB, the journal or the workers' reports), no call hangs past
//! the client's timeouts, and every write the client was told succeeded
//! reads back byte-exact at the end.

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use ractor::Actor;
use strata_actors::master::{self, MasterOptions};
use strata_actors::supervisor::{NodeSupervisor, Scope, SupervisorMsg};
use strata_actors::worker::{self, tier::TierConfig, WorkerOptions};
use strata_client::{Client, ClientConfig};

fn payload(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            x as u8
        })
        .collect()
}

async fn eventually<T>(what: &str, timeout: Duration, mut f: impl AsyncFnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// How long one client call may take at most: its own timeout through a
/// failover's worth of retries, and a little.
const CALL_BOUND: Duration = Duration::from_secs(25);

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn every_actor_killed_in_turn_under_load_loses_nothing_acknowledged() {
    let _ = tracing_subscriber::fmt()
        .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
        .with_test_writer()
        .try_init();
    let dir = tempfile::tempdir().unwrap();
    let listener = Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let addr = listener.local_addr().unwrap().to_string();
    let mopts = MasterOptions {
        node_id: 1,
        data_dir: dir.path().join("master"),
        client_addr: addr.clone(),
        mesh_addr: String::new(),
        members: Default::default(),
        join: false,
        removed: Default::default(),
        snapshot_entries: 200,
        log_keep: 5_000,
        worker_lost_timeout: Duration::from_secs(10),
        worker_forget_after: Duration::from_secs(1800),
        replication: Default::default(),
        faults: Default::default(),
        fatal: Arc::new(tokio::sync::watch::channel(None).0),
    };
    let (mut specs, svc) = master::children(&mopts, listener).unwrap();
    let tiers = vec![
        TierConfig { name: "MEM".into(), dir: dir.path().join("mem"), capacity_bytes: 64 << 20, durable: false },
        TierConfig { name: "SSD".into(), dir: dir.path().join("ssd"), capacity_bytes: 1 << 30, durable: true },
    ];
    let wopts = WorkerOptions {
        data_dir: dir.path().join("worker"),
        host: "127.0.0.1".into(),
        tiers: tiers.clone(),
        mesh: None,
        heartbeat_interval: Duration::from_millis(200),
    };
    let data_listener = Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let (wspecs, wscope) = worker::children(&wopts, data_listener).unwrap();
    specs.extend(wspecs);
    let (sup, handle) = Actor::spawn(None, NodeSupervisor, specs).await.unwrap();
    eventually("the journal leads", Duration::from_secs(30), async || {
        svc.journal.status().await.filter(|s| s.leader.is_some() && s.applied_index > 0)
    })
    .await;

    let mut cc = ClientConfig::new(addr.clone());
    cc.block_size = 64 * 1024;
    cc.rpc_timeout = Duration::from_secs(5);
    cc.data_timeout = Duration::from_secs(5);
    cc.failover_timeout = Duration::from_secs(15);
    cc.short_circuit = false;
    let c = Client::connect(cc).await.unwrap();
    eventually("the worker takes blocks", Duration::from_secs(30), async || {
        let mut w = c.create("/probe", true).await.ok()?;
        w.write(b"probe").await.ok()?;
        w.close().await.ok()
    })
    .await;
    c.mkdir("/load", false).await.unwrap();

    // The load: each round writes (or overwrites) one of 40 names with a
    // payload naming its version, and reads back another acknowledged one.
    let stop = Arc::new(AtomicBool::new(false));
    let load = {
        let (c, stop) = (c.clone(), stop.clone());
        tokio::spawn(async move {
            let mut acked: BTreeMap<String, u64> = BTreeMap::new();
            let (mut ok, mut failed, mut slowest) = (0u64, 0u64, Duration::ZERO);
            let mut version = 0u64;
            while !stop.load(Ordering::SeqCst) {
                version += 1;
                let name = format!("/load/f{}", version % 40);
                let len = [10usize, 3_000, 70_000, 300_000][(version % 4) as usize];
                let data = payload(len, version);
                let t0 = Instant::now();
                let r = async {
                    let mut w = c.create(&name, true).await?;
                    w.write(&data).await?;
                    w.close().await
                }
                .await;
                slowest = slowest.max(t0.elapsed());
                match r {
                    Ok(_) => {
                        ok += 1;
                        acked.insert(name, version);
                    }
                    // Unknown outcome: the name may hold either version from now on.
                    Err(_) => {
                        failed += 1;
                        acked.remove(&name);
                    }
                }
                if let Some((other, v)) = acked.iter().nth((version as usize * 7) % acked.len().max(1)) {
                    let t0 = Instant::now();
                    let read = c.read_all(other).await;
                    slowest = slowest.max(t0.elapsed());
                    if let Ok(bytes) = read {
                        let len = [10usize, 3_000, 70_000, 300_000][(*v % 4) as usize];
                        assert!(bytes == payload(len, *v), "{other}: not the acknowledged version {v}");
                    }
                }
            }
            (acked, ok, failed, slowest)
        })
    };

    let mscope = Scope::master(1);
    let mut roles: Vec<(Scope, String)> =
        ["namespace", "journal", "raft", "workers", "replication", "leases", "mountsyncer", "gateway"]
            .iter()
            .map(|r| (mscope.clone(), r.to_string()))
            .collect();
    roles.extend(tiers.iter().map(|t| (wscope.clone(), t.role())));
    roles.extend(["replicator", "dataserver", "worker"].iter().map(|r| (wscope.clone(), r.to_string())));
    tokio::time::sleep(Duration::from_millis(500)).await;
    for (scope, role) in &roles {
        let name = scope.name(role);
        let old = ractor::registry::where_is(name.clone()).unwrap_or_else(|| panic!("{name} runs"));
        old.kill();
        eventually(&format!("{name} restarted"), Duration::from_secs(20), async || {
            ractor::registry::where_is(name.clone()).filter(|a| a.get_id() != old.get_id())
        })
        .await;
        // The restarted actor serves: a write and a read go through it.
        eventually(&format!("writes after {name} restarted"), Duration::from_secs(30), async || {
            let p = format!("/after-{role}");
            let mut w = c.create(&p, true).await.ok()?;
            w.write(role.as_bytes()).await.ok()?;
            w.close().await.ok()?;
            (c.read_all(&p).await.ok()? == role.as_bytes()).then_some(())
        })
        .await;
        tokio::time::sleep(Duration::from_millis(300)).await;
    }
    stop.store(true, Ordering::SeqCst);
    let (acked, ok, failed, slowest) = tokio::time::timeout(CALL_BOUND * 2, load).await.expect("load ends").unwrap();
    assert!(slowest < CALL_BOUND, "a call took {slowest:?}");
    assert!(ok > 20, "only {ok} writes succeeded ({failed} failed)");
    for (name, v) in &acked {
        let len = [10usize, 3_000, 70_000, 300_000][(*v % 4) as usize];
        let bytes = c.read_all(name).await.unwrap_or_else(|e| panic!("{name} (version {v}): {e}"));
        assert!(bytes == payload(len, *v), "{name}: not the acknowledged version {v}");
    }
    let restarts = ractor::call_t!(sup, SupervisorMsg::Restarts, 2000).unwrap();
    assert!(restarts.iter().all(|(_, n)| *n == 1), "{restarts:?}");
    eprintln!("{ok} writes acknowledged, {failed} failed, slowest call {slowest:?}, {} names checked", acked.len());
    sup.stop(None);
    let _ = tokio::time::timeout(Duration::from_secs(10), handle).await;
}
