//! The root supervisor restarts a crashed child under the same name, the
//! restarted child serves again, a master keeps answering proposals after
//! its NamespaceActor is killed, and a child that keeps dying takes the node
//! down instead of flapping forever.

use std::sync::Arc;
use std::time::Duration;

use ractor::{Actor, ActorRef};
use strata_actors::master::{self, namespace_actor, MasterOptions};
use strata_actors::supervisor::{ChildSpec, NodeSupervisor, Scope, SupervisorMsg, MAX_RESTARTS};
use strata_actors::worker::tier::{TierActor, TierConfig, TierMsg};
use strata_protocol::journal::{ApplyResult, JournalEntry};

async fn eventually<T>(what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(tokio::time::Instant::now() < deadline, "{what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn crashed_child_is_restarted_and_flapping_child_stops_the_node() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TierConfig { name: "HDD".into(), dir: dir.path().to_path_buf(), capacity_bytes: 1 << 20, durable: false };
    let name = Scope::worker(1).name(&cfg.role());
    let c = cfg.clone();
    let spec = ChildSpec::actor(name.clone(), move || (TierActor, c.clone()));
    let (sup, handle) = Actor::spawn(None, NodeSupervisor, vec![spec]).await.unwrap();

    for round in 1..=MAX_RESTARTS {
        let child = ractor::registry::where_is(name.clone()).expect("child running");
        let old = child.get_id();
        child.kill();
        let fresh =
            eventually("child restarted", || ractor::registry::where_is(name.clone()).filter(|c| c.get_id() != old))
                .await;
        let tier: ActorRef<TierMsg> = fresh.into();
        let usage = ractor::call_t!(tier, TierMsg::Usage, 2000).unwrap();
        assert_eq!(usage.capacity_bytes, 1 << 20, "restarted child serves");
        let restarts = ractor::call_t!(sup, SupervisorMsg::Restarts, 2000).unwrap();
        assert_eq!(restarts, vec![(name.clone(), round)]);
    }
    // One death too many within the window: the supervisor gives up.
    ractor::registry::where_is(name.clone()).unwrap().kill();
    tokio::time::timeout(Duration::from_secs(20), handle).await.expect("supervisor stops").unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn master_survives_a_namespace_actor_crash() {
    let dir = tempfile::tempdir().unwrap();
    let listener = Arc::new(std::net::TcpListener::bind("127.0.0.1:0").unwrap());
    let opts = MasterOptions {
        node_id: 1,
        data_dir: dir.path().to_path_buf(),
        client_addr: listener.local_addr().unwrap().to_string(),
        mesh_addr: String::new(),
        members: Default::default(),
        join: false,
        removed: Default::default(),
        snapshot_entries: 100,
        log_keep: 5_000,
        worker_lost_timeout: Duration::from_secs(10),
        worker_forget_after: Duration::from_secs(1800),
        replication: Default::default(),
        faults: Default::default(),
        fatal: Arc::new(tokio::sync::watch::channel(None).0),
    };
    let (specs, svc) = master::children(&opts, listener).unwrap();
    let journal = &svc.journal;
    let (sup, handle) = Actor::spawn(None, NodeSupervisor, specs).await.unwrap();
    let mkdir =
        |p: &str| JournalEntry::Mkdir { path: p.into(), recursive: false, mode: 0o755, uid: 0, gid: 0, time_ms: 1 };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match journal.propose(mkdir("/before")).await {
            Ok(ApplyResult::Attr(_)) => break,
            other => {
                assert!(tokio::time::Instant::now() < deadline, "journal never became ready: {other:?}");
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
        }
    }
    // Enough entries to take snapshots (policy: every 100) along the way.
    for i in 0..250 {
        let r = journal.propose(mkdir(&format!("/d{i}"))).await.unwrap();
        assert!(matches!(r, ApplyResult::Attr(_)), "{r:?}");
    }
    svc.ns.actor().unwrap().kill();
    let r = journal.propose(mkdir("/after")).await.unwrap();
    assert!(matches!(r, ApplyResult::Attr(_)), "{r:?}");
    let listing = svc
        .ns
        .call_within(Duration::from_secs(5), |r| namespace_actor::NamespaceMsg::List("/".into(), r))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(listing.len(), 252);
    assert!(dir.path().join("snapshots/snapshot.bin").exists(), "a snapshot was taken");
    sup.stop(None);
    handle.await.unwrap();
}
