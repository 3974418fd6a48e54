//! Under-file-systems against a real S3 server on loopback (moto) and a
//! local directory: every write type, metadata sync, cache-miss reads,
//! load/free/persist, UFS failures, and async-through data surviving a
//! worker crash.

mod common;

use std::path::Path;
use std::time::Duration;

use common::*;
use strata_chaos::s3::S3Server;
use strata_chaos::Cluster;
use strata_client::{Client, ErrorCode, UfsSpec};

const MIB: usize = 1 << 20;

/// The S3 options of a mount on `s3`.
fn s3_opts(s3: &S3Server) -> Vec<String> {
    ["endpoint", "access_key_id", "secret_access_key", "region"]
        .iter()
        .zip([s3.endpoint.as_str(), "test", "test", "us-east-1"])
        .flat_map(|(k, v)| ["-o".to_string(), format!("{k}={v}")])
        .collect()
}

/// Direct access to the bucket, bypassing Strata.
fn bucket(s3: &S3Server, name: &str) -> opendal::Operator {
    let spec = UfsSpec {
        uri: format!("s3://{name}"),
        options: vec![
            ("access_key_id".into(), "test".into()),
            ("endpoint".into(), s3.endpoint.clone()),
            ("secret_access_key".into(), "test".into()),
        ],
    };
    strata_actors::ufs::operator(&spec).expect("operator")
}

fn mount(master: &str, path: &str, uri: &str, extra: &[&str], opts: &[String]) {
    let mut args: Vec<&str> = vec!["mount", path, uri, "--block-size", "1MiB"];
    args.extend_from_slice(extra);
    args.extend(opts.iter().map(|s| s.as_str()));
    let (ok, out, err) = strata(master, &args);
    assert!(ok, "mount {path} {uri}: {out} {err}");
}

async fn put(c: &Client, path: &str, data: &[u8]) -> Result<(), strata_client::ClientError> {
    let mut w = c.create(path, true).await?;
    w.write(data).await?;
    w.close().await.map(|_| ())
}

async fn object(op: &opendal::Operator, key: &str) -> Option<Vec<u8>> {
    op.read(key).await.ok().map(|b| b.to_vec())
}

async fn cached(c: &Client, path: &str) -> (usize, usize) {
    let fb = c.blocks(path).await.expect("blocks");
    let n = fb.blocks.iter().filter(|b| !b.from_ufs && !b.workers.is_empty()).count();
    (n, fb.blocks.len())
}

fn setup(dir: &Path) -> (S3Server, opendal::Operator) {
    let s3 = S3Server::start(&dir.join("moto.log")).expect("moto_server runs (pip install 'moto[server]')");
    s3.create_bucket("bkt").unwrap();
    let op = bucket(&s3, "bkt");
    (s3, op)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn write_types_put_bytes_where_they_say() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, op) = setup(dir.path());
    let node = start_local(dir.path(), 256 << 20, 2 << 30);
    let m = node.ready.clone();
    let o = s3_opts(&s3);
    for wt in ["cache", "through", "cache-through", "async-through"] {
        mount(&m, &format!("/{wt}"), &format!("s3://bkt/{wt}"), &["--write-type", wt], &o);
    }
    let (ok, out, _) = strata(&m, &["mount"]);
    assert!(ok && out.contains("s3://bkt/async-through on /async-through write=async-through"), "{out}");
    assert!(out.contains("secret_access_key=***") && !out.contains("secret_access_key=test"), "{out}");

    let c = client(&m, MIB as u64).await;
    let data = bytes(3 * MIB + MIB / 2, 7);
    for wt in ["cache", "through", "cache-through", "async-through"] {
        put(&c, &format!("/{wt}/f.bin"), &data).await.unwrap_or_else(|e| panic!("{wt}: {e}"));
    }
    // cache: workers only.
    assert_eq!(object(&op, "cache/f.bin").await, None, "cache writes never reach the UFS by themselves");
    assert_eq!(cached(&c, "/cache/f.bin").await, (4, 4));
    // through: in S3 before the close returned; no cached copy left; reads come from S3.
    assert!(object(&op, "through/f.bin").await.as_deref() == Some(&data[..]));
    assert_eq!(cached(&c, "/through/f.bin").await, (0, 4));
    assert!(c.read_all("/through/f.bin").await.unwrap() == data, "through read-back");
    // cache-through: both, before the close returned.
    assert!(object(&op, "cache-through/f.bin").await.as_deref() == Some(&data[..]));
    assert_eq!(cached(&c, "/cache-through/f.bin").await, (4, 4));
    // async-through: cached now, in S3 soon.
    assert_eq!(cached(&c, "/async-through/f.bin").await, (4, 4));
    eventually("async-through object in S3", Duration::from_secs(20), || async {
        object(&op, "async-through/f.bin").await.as_deref() == Some(&data[..])
    })
    .await;
    // An explicit persist of cache data.
    let (ok, _, err) = strata(&m, &["persist", "/cache"]);
    assert!(ok, "{err}");
    assert!(object(&op, "cache/f.bin").await.as_deref() == Some(&data[..]));
    // Delete and rename reach S3.
    c.rename("/cache-through/f.bin", "/cache-through/g.bin").await.unwrap();
    assert_eq!(object(&op, "cache-through/f.bin").await, None);
    assert!(object(&op, "cache-through/g.bin").await.as_deref() == Some(&data[..]));
    assert!(c.read_all("/cache-through/g.bin").await.unwrap() == data);
    c.delete("/cache-through/g.bin", false).await.unwrap();
    assert_eq!(object(&op, "cache-through/g.bin").await, None);
    // Renames across a mount boundary are refused.
    let e = c.rename("/cache/f.bin", "/f.bin").await.unwrap_err();
    assert_eq!(e.code(), ErrorCode::CrossMount);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ufs_metadata_loads_and_changes_are_seen_per_sync_policy() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, op) = setup(dir.path());
    op.write("always/a.txt", b"one".to_vec()).await.unwrap();
    op.write("always/sub/b.txt", b"bee".to_vec()).await.unwrap();
    op.write("lazy/a.txt", b"one".to_vec()).await.unwrap();
    let big = bytes(2 * MIB + 123, 3);
    op.write("always/big.bin", big.clone()).await.unwrap();
    let node = start_local(dir.path(), 256 << 20, 2 << 30);
    let m = node.ready.clone();
    let o = s3_opts(&s3);
    mount(&m, "/always", "s3://bkt/always", &["--sync", "always"], &o);
    mount(&m, "/lazy", "s3://bkt/lazy", &["--sync", "1s"], &o);
    let c = client(&m, MIB as u64).await;

    let names = |v: Vec<strata_client::DirEntry>| v.into_iter().map(|e| e.name).collect::<Vec<_>>();
    assert_eq!(names(c.list("/always").await.unwrap()), ["a.txt", "big.bin", "sub"]);
    assert_eq!(names(c.list("/always/sub").await.unwrap()), ["b.txt"]);
    assert_eq!(c.read_all("/always/a.txt").await.unwrap(), b"one");
    assert!(c.read_all("/always/big.bin").await.unwrap() == big, "a 3-block object read through the cache");
    assert_eq!(cached(&c, "/always/big.bin").await, (3, 3), "misses keep the blocks");

    // Changed behind Strata's back: seen at once with sync=always.
    op.write("always/a.txt", b"second version".to_vec()).await.unwrap();
    assert_eq!(c.read_all("/always/a.txt").await.unwrap(), b"second version");
    let big2 = bytes(2 * MIB + 123, 4);
    op.write("always/big.bin", big2.clone()).await.unwrap();
    assert!(c.read_all("/always/big.bin").await.unwrap() == big2, "same size, new content: cached blocks dropped");
    // S3 has no directories: with its last object gone, `sub/` is gone too.
    op.delete("always/sub/b.txt").await.unwrap();
    assert_eq!(c.list("/always/sub").await.unwrap_err().code(), ErrorCode::NotFound);
    assert_eq!(names(c.list("/always").await.unwrap()), ["a.txt", "big.bin"]);
    op.write("always/new.txt", b"n".to_vec()).await.unwrap();
    assert_eq!(c.stat("/always/new.txt").await.unwrap().size, 1);

    // With a 1 s interval the change shows up after the interval.
    assert_eq!(c.read_all("/lazy/a.txt").await.unwrap(), b"one");
    op.write("lazy/a.txt", b"two!".to_vec()).await.unwrap();
    tokio::time::sleep(Duration::from_millis(1200)).await;
    assert_eq!(c.read_all("/lazy/a.txt").await.unwrap(), b"two!");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn load_warms_and_free_drops() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, op) = setup(dir.path());
    let a = bytes(3 * MIB, 1);
    let b = bytes(MIB + 5, 2);
    op.write("data/a.bin", a.clone()).await.unwrap();
    op.write("data/d/b.bin", b.clone()).await.unwrap();
    let node = start_local(dir.path(), 256 << 20, 2 << 30);
    let m = node.ready.clone();
    mount(&m, "/data", "s3://bkt/data", &[], &s3_opts(&s3));
    let c = client(&m, MIB as u64).await;
    assert_eq!(cached(&c, "/data/a.bin").await, (0, 3));
    let (ok, out, err) = strata(&m, &["load", "/data"]);
    assert!(ok, "{err}");
    assert!(out.contains("loaded 2 files"), "{out}");
    assert_eq!(cached(&c, "/data/a.bin").await, (3, 3));
    assert_eq!(cached(&c, "/data/d/b.bin").await, (2, 2));
    let (ok, _, err) = strata(&m, &["free", "/data"]);
    assert!(ok, "{err}");
    assert_eq!(cached(&c, "/data/a.bin").await, (0, 3));
    assert!(c.read_all("/data/a.bin").await.unwrap() == a && c.read_all("/data/d/b.bin").await.unwrap() == b);
    // Free drops only what the UFS has: a file written with write type
    // `cache` is the only copy and keeps its blocks.
    let mut args = vec!["mount", "/scratch", "s3://bkt/scratch", "--write-type", "cache"];
    let o = s3_opts(&s3);
    args.extend(o.iter().map(|s| s.as_str()));
    let (ok, _, err) = strata(&m, &args);
    assert!(ok, "{err}");
    put(&c, "/scratch/only-here.bin", &a).await.unwrap();
    let (ok, _, err) = strata(&m, &["free", "/scratch"]);
    assert!(ok, "{err}");
    assert_eq!(cached(&c, "/scratch/only-here.bin").await, (3, 3));
    assert!(c.read_all("/scratch/only-here.bin").await.unwrap() == a);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ufs_failures_are_clear_and_the_mount_recovers() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, op) = setup(dir.path());
    let node = start_local(dir.path(), 256 << 20, 2 << 30);
    let m = node.ready.clone();
    let fast = ["-o", "timeout_ms=1500", "-o", "retries=0"];

    // Unreachable endpoint and missing bucket: the mount is refused with the reason.
    let mut dead = s3_opts(&s3);
    let port = strata_chaos::free_port();
    for o in dead.iter_mut() {
        if o.starts_with("endpoint=") {
            *o = format!("endpoint=http://127.0.0.1:{port}");
        }
    }
    let mut args = vec!["mount", "/dead", "s3://bkt/x"];
    args.extend(fast);
    args.extend(dead.iter().map(|s| s.as_str()));
    let (ok, _, err) = strata(&m, &args);
    assert!(!ok && err.contains("ufs s3://bkt/x"), "unreachable endpoint: {err}");
    let mut args = vec!["mount", "/nobucket", "s3://no-such-bucket/x"];
    let o = s3_opts(&s3);
    args.extend(o.iter().map(|s| s.as_str()));
    let (ok, _, err) = strata(&m, &args);
    assert!(!ok && err.contains("no-such-bucket"), "missing bucket: {err}");
    let (_, out, _) = strata(&m, &["mount"]);
    assert!(out.trim().is_empty(), "failed mounts leave nothing behind: {out}");

    // A working mount keeps serving what it has while S3 is frozen.
    let a = bytes(2 * MIB, 5);
    let b = bytes(2 * MIB, 6);
    op.write("ok/a.bin", a.clone()).await.unwrap();
    op.write("ok/b.bin", b.clone()).await.unwrap();
    let mut args = vec!["mount", "/ok", "s3://bkt/ok"];
    args.extend(fast);
    args.extend(o.iter().map(|s| s.as_str()));
    let (ok, _, err) = strata(&m, &args);
    assert!(ok, "{err}");
    let c = client(&m, MIB as u64).await;
    assert!(c.read_all("/ok/a.bin").await.unwrap() == a);
    assert_eq!(c.stat("/ok/b.bin").await.unwrap().size, b.len() as u64);
    s3.pause().unwrap();
    assert!(c.read_all("/ok/a.bin").await.unwrap() == a, "cached data is served while the UFS is down");
    let e = c.read_all("/ok/b.bin").await.unwrap_err();
    assert!(e.to_string().contains("ufs"), "an uncached read fails clearly: {e}");
    // A cache-through write cannot be acknowledged, but its bytes are kept.
    let n = bytes(MIB + 1, 9);
    let e = put(&c, "/ok/new.bin", &n).await.unwrap_err();
    assert!(e.to_string().contains("ufs"), "{e}");
    s3.resume().unwrap();
    assert!(c.read_all("/ok/b.bin").await.unwrap() == b, "the mount works again once S3 is back");
    let (ok, _, err) = strata(&m, &["persist", "/ok"]);
    assert!(ok, "{err}");
    assert!(object(&op, "ok/new.bin").await.as_deref() == Some(&n[..]), "nothing was lost");
}

/// Mounts `s3://bkt/PREFIX` at /async (async-through, two copies, short UFS
/// timeouts), waits for both workers, loads the directory's metadata, then
/// freezes S3 so nothing written next can be persisted yet.
async fn async_mount_then_freeze_s3(s3: &S3Server, masters: &str, prefix: &str) -> Client {
    let uri = format!("s3://bkt/{prefix}");
    let mut args = vec!["mount", "/async", &uri, "--write-type", "async-through", "--replicas", "2"];
    let o = s3_opts(s3);
    args.extend(["-o", "timeout_ms=1000", "-o", "retries=0"]);
    args.extend(o.iter().map(|s| s.as_str()));
    let (ok, _, err) = strata(masters, &args);
    assert!(ok, "{err}");
    let c = client(masters, MIB as u64).await;
    eventually("two workers", Duration::from_secs(20), || async {
        c.report().await.map(|r| r.workers.iter().filter(|w| w.live).count() == 2).unwrap_or(false)
    })
    .await;
    assert!(c.list("/async").await.unwrap().is_empty());
    s3.pause().unwrap();
    c
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_through_data_survives_a_worker_crash_before_persist() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, op) = setup(dir.path());
    let mut cluster = Cluster::start(Path::new(BIN), &dir.path().join("c"), 2, "ufs-secret").unwrap();
    let c = async_mount_then_freeze_s3(&s3, cluster.master_addr(), "async").await;
    let data = bytes(3 * MIB + 77, 11);
    put(&c, "/async/f.bin", &data).await.unwrap();
    let fb = c.blocks("/async/f.bin").await.unwrap();
    assert!(fb.blocks.iter().all(|b| b.workers.len() == 2), "two copies before persist: {:?}", fb.blocks);
    cluster.workers[0].kill();
    s3.resume().unwrap();
    eventually("the object arrives from the surviving worker", Duration::from_secs(60), || async {
        object(&op, "async/f.bin").await.as_deref() == Some(&data[..])
    })
    .await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn local_directory_ufs() {
    let dir = tempfile::tempdir().unwrap();
    let ufs = dir.path().join("ufs");
    std::fs::create_dir_all(ufs.join("sub")).unwrap();
    std::fs::write(ufs.join("old.txt"), b"hello").unwrap();
    let node = start_local(dir.path(), 256 << 20, 2 << 30);
    let m = node.ready.clone();
    mount(&m, "/local", &format!("file://{}", ufs.display()), &["--sync", "always"], &[]);
    let c = client(&m, MIB as u64).await;
    let names: Vec<String> = c.list("/local").await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["old.txt", "sub"]);
    assert_eq!(c.read_all("/local/old.txt").await.unwrap(), b"hello");

    let data = bytes(3 * MIB + MIB / 2, 8);
    put(&c, "/local/sub/new.bin", &data).await.unwrap();
    assert!(std::fs::read(ufs.join("sub/new.bin")).unwrap() == data, "cache-through wrote the directory");
    c.rename("/local/sub/new.bin", "/local/moved.bin").await.unwrap();
    assert!(!ufs.join("sub/new.bin").exists() && std::fs::read(ufs.join("moved.bin")).unwrap() == data);
    c.mkdir("/local/made", false).await.unwrap();
    assert!(ufs.join("made").is_dir());
    c.rename("/local/sub", "/local/sub2").await.unwrap();
    assert!(ufs.join("sub2").is_dir() && !ufs.join("sub").exists());
    c.delete("/local/moved.bin", false).await.unwrap();
    assert!(!ufs.join("moved.bin").exists());
    std::fs::write(ufs.join("old.txt"), b"changed behind the cache").unwrap();
    assert_eq!(c.read_all("/local/old.txt").await.unwrap(), b"changed behind the cache");

    let (ok, _, err) = strata(&m, &["unmount", "/local"]);
    assert!(ok, "{err}");
    assert_eq!(c.stat("/local").await.unwrap_err().code(), ErrorCode::NotFound);
    assert!(ufs.join("old.txt").exists(), "unmount leaves the UFS alone");
    let (ok, _, err) = strata(&m, &["mount", "/rel", "file://relative/dir"]);
    assert!(!ok && err.contains("absolute"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn async_through_data_survives_a_leader_failover_before_persist() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, op) = setup(dir.path());
    let mut cluster =
        strata_chaos::HaCluster::start(Path::new(BIN), &dir.path().join("c"), 3, 2, "ufs-ha-secret").unwrap();
    let c = async_mount_then_freeze_s3(&s3, &cluster.master_list(), "ha").await;
    let data = bytes(2 * MIB + 5, 21);
    put(&c, "/async/f.bin", &data).await.unwrap();
    let r = c.report().await.unwrap();
    let leader = r.masters.iter().find(|m| m.role == "leader").expect("a leader").id;
    cluster.masters[(leader - 1) as usize].kill();
    s3.resume().unwrap();
    eventually("the new leader persists the file", Duration::from_secs(60), || async {
        object(&op, "ha/f.bin").await.as_deref() == Some(&data[..])
    })
    .await;
}

/// Waits until the worker has heartbeated twice since the call (so what the
/// master queued for it before the call has been delivered and applied).
async fn two_heartbeats(c: &Client) {
    for _ in 0..2 {
        let since = std::time::Instant::now();
        eventually("a worker heartbeat", Duration::from_secs(10), || async {
            let r = c.report().await.expect("report");
            r.workers.iter().all(|w| w.live && (w.last_heartbeat_ms_ago as u128) < since.elapsed().as_millis())
        })
        .await;
    }
}

/// Writes `data` to `path`, retrying while the tiers are full of blocks
/// whose persisted (clean) state has not reached the worker yet.
async fn put_when_room(c: &Client, path: &str, data: &[u8]) {
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    loop {
        match put(c, path, data).await {
            Ok(()) => return,
            Err(e) if e.code() == ErrorCode::NoSpace && std::time::Instant::now() < deadline => {
                tokio::time::sleep(Duration::from_millis(100)).await
            }
            Err(e) => panic!("writing {path}: {e}"),
        }
    }
}

fn stat_pinned(m: &str, path: &str) -> bool {
    let (ok, out, err) = strata(m, &["fs", "stat", path, "--json"]);
    assert!(ok, "stat {path}: {err}");
    let v: serde_json::Value = serde_json::from_str(&out).expect("stat json");
    v["pinned"].as_bool().expect("pinned field")
}

/// Pinned files keep their cached blocks under space pressure while
/// unpinned persisted files are evicted; pinning a directory pins files
/// written into it later; the flag is journaled (survives a restart);
/// after unpin the same blocks are evicted like any other. On a local
/// directory and on S3.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pinned_files_are_not_evicted() {
    let dir = tempfile::tempdir().unwrap();
    let ufs = dir.path().join("ufs");
    std::fs::create_dir_all(&ufs).unwrap();
    pinned_files_are_not_evicted_on(dir.path(), &format!("file://{}", ufs.display()), &[]).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pinned_files_are_not_evicted_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, _op) = setup(dir.path());
    pinned_files_are_not_evicted_on(dir.path(), "s3://bkt/pin", &s3_opts(&s3)).await;
}

async fn pinned_files_are_not_evicted_on(dir: &Path, uri: &str, opts: &[String]) {
    // 8 MiB of tiers, 1 MiB blocks.
    let mut node = start_local(dir, 4 * MIB as u64, 4 * MIB as u64);
    let m = node.ready.clone();
    mount(&m, "/m", uri, &["--write-type", "cache-through"], opts);
    let c = client(&m, MIB as u64).await;
    let two = |seed| bytes(2 * MIB, seed);

    // A pinned directory passes the pin to a file written into it later.
    c.mkdir("/m/keep", false).await.unwrap();
    let (ok, _, err) = strata(&m, &["pin", "/m/keep"]);
    assert!(ok, "{err}");
    put(&c, "/m/keep/p.bin", &two(1)).await.unwrap();
    assert!(stat_pinned(&m, "/m/keep/p.bin"));
    // An existing file pinned explicitly.
    put(&c, "/m/b.bin", &two(2)).await.unwrap();
    assert!(!stat_pinned(&m, "/m/b.bin"));
    let (ok, _, err) = strata(&m, &["pin", "/m/b.bin"]);
    assert!(ok, "{err}");
    assert!(stat_pinned(&m, "/m/b.bin"));
    put(&c, "/m/u.bin", &two(3)).await.unwrap();
    two_heartbeats(&c).await;

    // 6 of 8 MiB used; 8 MiB more forces evictions.
    for i in 0..4 {
        put_when_room(&c, &format!("/m/f{i}.bin"), &two(10 + i)).await;
    }
    // Evictions reach the master with the worker's next heartbeat.
    eventually("unpinned persisted file evicted", Duration::from_secs(10), || async {
        cached(&c, "/m/u.bin").await == (0, 2)
    })
    .await;
    two_heartbeats(&c).await;
    assert_eq!(cached(&c, "/m/keep/p.bin").await, (2, 2), "pinned (inherited) file evicted");
    assert_eq!(cached(&c, "/m/b.bin").await, (2, 2), "pinned file evicted");
    assert!(c.read_all("/m/keep/p.bin").await.unwrap() == two(1));
    // `free` leaves pinned files alone.
    let (ok, _, err) = strata(&m, &["free", "/m"]);
    assert!(ok, "{err}");
    eventually("unpinned files freed", Duration::from_secs(10), || async { cached(&c, "/m/f3.bin").await.0 == 0 })
        .await;
    assert_eq!(cached(&c, "/m/b.bin").await, (2, 2), "free dropped a pinned file");

    // The pin is in the journal: a restart keeps it, and the re-registered
    // worker is told which of its blocks are pinned.
    node.restart(Duration::from_secs(60)).expect("restart");
    let m = node.ready.clone();
    let c = client(&m, MIB as u64).await;
    assert!(stat_pinned(&m, "/m/keep/p.bin") && stat_pinned(&m, "/m/keep") && stat_pinned(&m, "/m/b.bin"));
    two_heartbeats(&c).await;
    for i in 0..4 {
        put_when_room(&c, &format!("/m/g{i}.bin"), &two(20 + i)).await;
    }
    two_heartbeats(&c).await;
    assert_eq!(cached(&c, "/m/keep/p.bin").await, (2, 2), "pinned file evicted after restart");
    assert_eq!(cached(&c, "/m/b.bin").await, (2, 2), "pinned file evicted after restart");

    // Unpinned, the same blocks go under pressure; the data still reads from the UFS.
    for p in ["/m/keep", "/m/b.bin"] {
        let (ok, _, err) = strata(&m, &["unpin", p]);
        assert!(ok, "{err}");
    }
    assert!(!stat_pinned(&m, "/m/keep/p.bin") && !stat_pinned(&m, "/m/b.bin"));
    two_heartbeats(&c).await;
    for i in 0..4 {
        put_when_room(&c, &format!("/m/h{i}.bin"), &two(30 + i)).await;
    }
    eventually("unpinned files evicted", Duration::from_secs(10), || async {
        cached(&c, "/m/keep/p.bin").await == (0, 2) && cached(&c, "/m/b.bin").await == (0, 2)
    })
    .await;
    assert!(c.read_all("/m/b.bin").await.unwrap() == two(2));
    let (ok, _, err) = strata(&m, &["pin", "/m/nope"]);
    assert!(!ok && err.contains("not found"), "{err}");
}

/// A mount's TTL: with action free, a file's cached blocks are dropped once
/// it is older than the TTL and it still reads (from the UFS); with action
/// delete, the file disappears from Strata and the UFS; a mount without a
/// TTL keeps its file cached meanwhile.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn ttl_actions_free_and_delete() {
    let dir = tempfile::tempdir().unwrap();
    let node = start_local(dir.path(), 64 << 20, 64 << 20);
    let m = node.ready.clone();
    for name in ["free", "delete", "none"] {
        let ufs = dir.path().join(format!("ufs-{name}"));
        std::fs::create_dir_all(&ufs).unwrap();
        let uri = format!("file://{}", ufs.display());
        let mut extra = vec!["--write-type", "cache-through"];
        if name != "none" {
            extra.extend(["--ttl", "2s", "--ttl-action", name]);
        }
        mount(&m, &format!("/{name}"), &uri, &extra, &[]);
    }
    let (ok, out, _) = strata(&m, &["mount"]);
    assert!(ok && out.contains("ttl=2s ttl-action=free"), "{out}");
    let c = client(&m, MIB as u64).await;
    let data = bytes(2 * MIB, 5);
    let t = std::time::Instant::now();
    for name in ["free", "delete", "none"] {
        put(&c, &format!("/{name}/f.bin"), &data).await.unwrap();
    }
    assert_eq!(cached(&c, "/free/f.bin").await, (2, 2), "freed before its TTL");
    eventually("TTL free drops the cached blocks", Duration::from_secs(15), || async {
        cached(&c, "/free/f.bin").await == (0, 2)
    })
    .await;
    assert!(t.elapsed() >= Duration::from_secs(2), "freed before its TTL");
    assert!(c.read_all("/free/f.bin").await.unwrap() == data, "freed file reads from the UFS");
    eventually("TTL delete removes the file", Duration::from_secs(15), || async {
        c.stat("/delete/f.bin").await.is_err_and(|e| e.code() == ErrorCode::NotFound)
    })
    .await;
    assert!(!dir.path().join("ufs-delete/f.bin").exists(), "TTL delete left the UFS file");
    assert_eq!(cached(&c, "/none/f.bin").await, (2, 2), "a mount without TTL lost its cache");
}

fn ttl(m: &str, args: &[&str]) {
    let mut a = vec!["ttl"];
    a.extend_from_slice(args);
    let (ok, out, err) = strata(m, &a);
    assert!(ok, "strata ttl {args:?}: {out} {err}");
}

async fn gone(c: &Client, path: &str) -> bool {
    c.stat(path).await.is_err_and(|e| e.code() == ErrorCode::NotFound)
}

/// Per-file and per-directory TTLs (`strata ttl`): delete outside any mount
/// (not before the TTL, after it), a directory's TTL reaching files in it
/// before and after it was set (and the emptied directory itself), `--clear`
/// stopping it, free dropping only what the UFS has (a file outside mounts
/// keeps its only copy, a file under a mount reads from the UFS again),
/// delete and persist reaching the UFS, and a file's TTL overriding its
/// mount's in both directions.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn per_file_and_directory_ttl() {
    use strata_client::{FileTtl, TtlAction};
    let dir = tempfile::tempdir().unwrap();
    let mut node = start_local(dir.path(), 64 << 20, 64 << 20);
    let m = node.ready.clone();
    let ufs_dir = |name: &str| {
        let p = dir.path().join(format!("ufs-{name}"));
        std::fs::create_dir_all(&p).unwrap();
        format!("file://{}", p.display())
    };
    // /mttl: the mount deletes files after 2 s; /plainm: no mount TTL; /cache: write type cache.
    mount(&m, "/mttl", &ufs_dir("mttl"), &["--ttl", "2s", "--ttl-action", "delete"], &[]);
    mount(&m, "/plainm", &ufs_dir("plainm"), &[], &[]);
    mount(&m, "/cache", &ufs_dir("cache"), &["--write-type", "cache"], &[]);
    let c = client(&m, MIB as u64).await;
    let data = bytes(2 * MIB, 7);

    // Refused: persist outside a mount, a zero TTL, a bad action, a missing path.
    c.mkdir("/plain", true).await.unwrap();
    put(&c, "/plain/f.bin", &data).await.unwrap();
    for (args, why) in [
        (vec!["ttl", "/plain/f.bin", "2s", "--action", "persist"], "not under a mount"),
        (vec!["ttl", "/plain/f.bin", "0s"], "longer than 0"),
        (vec!["ttl", "/plain/f.bin", "2s", "--action", "burn"], "free, delete or persist"),
        (vec!["ttl", "/plain/nope", "2s"], "does not exist"),
    ] {
        let (ok, _, err) = strata(&m, &args);
        assert!(!ok && err.contains(why), "{args:?}: {err}");
    }
    assert!(c.stat("/plain/f.bin").await.unwrap().ttl.is_none());

    c.delete("/plain/f.bin", false).await.unwrap();
    let del2 = Some(FileTtl { ttl_ms: 2000, action: TtlAction::Delete });

    // Outside mounts. A directory: a file already in it and one written after the TTL was set.
    c.mkdir("/plain/dir", true).await.unwrap();
    put(&c, "/plain/dir/a.bin", &data).await.unwrap();
    ttl(&m, &["/plain/dir", "2s", "--action", "delete"]);
    put(&c, "/plain/dir/b.bin", &data).await.unwrap();
    assert_eq!(c.stat("/plain/dir/b.bin").await.unwrap().ttl, del2, "a new file inherits its directory's TTL");
    // Cleared: survives.
    put(&c, "/plain/keep.bin", &data).await.unwrap();
    ttl(&m, &["/plain/keep.bin", "2s", "--action", "delete"]);
    ttl(&m, &["/plain/keep.bin", "--clear"]);
    assert!(c.stat("/plain/keep.bin").await.unwrap().ttl.is_none());
    // Free outside a mount: nothing else holds the bytes, so nothing is dropped.
    put(&c, "/plain/free.bin", &data).await.unwrap();
    ttl(&m, &["/plain/free.bin", "2s"]);

    // Under mounts. The file's own TTL overrides the mount's delete.
    put(&c, "/mttl/long.bin", &data).await.unwrap();
    ttl(&m, &["/mttl/long.bin", "1h"]);
    put(&c, "/mttl/freed.bin", &data).await.unwrap();
    ttl(&m, &["/mttl/freed.bin", "2s", "--action", "free"]);
    put(&c, "/mttl/gone.bin", &data).await.unwrap();
    put(&c, "/plainm/x.bin", &data).await.unwrap();
    ttl(&m, &["/plainm/x.bin", "2s", "--action", "delete"]);
    put(&c, "/cache/p.bin", &data).await.unwrap();
    ttl(&m, &["/cache/p.bin", "2s", "--action", "persist"]);
    assert!(!dir.path().join("ufs-cache/p.bin").exists(), "a cache write reached the UFS");

    // A file outside mounts deleted after 2 s, not before.
    let t_f = std::time::Instant::now();
    put(&c, "/plain/f.bin", &data).await.unwrap();
    ttl(&m, &["/plain/f.bin", "2s", "--action", "delete"]);
    assert_eq!(c.stat("/plain/f.bin").await.unwrap().ttl, del2);
    let (ok, out, _) = strata(&m, &["fs", "stat", "/plain/f.bin"]);
    assert!(ok && out.contains("ttl:        2s (delete)"), "{out}");

    // Not before the TTL.
    let check_at = Duration::from_millis(1500);
    assert!(t_f.elapsed() < check_at, "setup took {:?}: the early check means nothing", t_f.elapsed());
    tokio::time::sleep(check_at - t_f.elapsed()).await;
    assert!(c.stat("/plain/f.bin").await.is_ok(), "deleted before its TTL");

    eventually("TTL delete removes /plain/f.bin", Duration::from_secs(15), || gone(&c, "/plain/f.bin")).await;
    assert!(t_f.elapsed() >= Duration::from_secs(2), "deleted before its TTL");
    for p in ["/plain/dir/a.bin", "/plain/dir/b.bin", "/mttl/gone.bin", "/plainm/x.bin"] {
        eventually(&format!("TTL delete removes {p}"), Duration::from_secs(15), || gone(&c, p)).await;
    }
    assert!(!dir.path().join("ufs-plainm/x.bin").exists(), "file TTL delete left the UFS file");
    assert!(!dir.path().join("ufs-mttl/gone.bin").exists(), "mount TTL delete left the UFS file");
    eventually("TTL free drops /mttl/freed.bin's blocks", Duration::from_secs(15), || async {
        cached(&c, "/mttl/freed.bin").await == (0, 2)
    })
    .await;
    eventually("TTL persist writes /cache/p.bin", Duration::from_secs(15), || async {
        std::fs::read(dir.path().join("ufs-cache/p.bin")).is_ok_and(|b| b == data)
    })
    .await;
    // The emptied directory with a delete TTL goes too, once unchanged for its TTL.
    eventually("the emptied TTL directory is removed", Duration::from_secs(15), || gone(&c, "/plain/dir")).await;

    // What must survive did, with its blocks.
    assert!(c.read_all("/plain/keep.bin").await.unwrap() == data, "a cleared TTL still acted");
    assert_eq!(cached(&c, "/plain/free.bin").await, (2, 2), "free dropped the only copy");
    assert!(c.read_all("/plain/free.bin").await.unwrap() == data);
    assert_eq!(cached(&c, "/mttl/long.bin").await, (2, 2), "the mount's TTL overrode the file's");
    assert!(c.read_all("/mttl/freed.bin").await.unwrap() == data, "a freed file reads from the UFS");
    assert!(dir.path().join("ufs-mttl/freed.bin").exists() && dir.path().join("ufs-mttl/long.bin").exists());
    assert!(c.stat("/plain").await.is_ok(), "a directory without TTL was removed");
    // Clearing a file's TTL under a mount brings the mount's back.
    ttl(&m, &["/mttl/long.bin", "--clear"]);
    eventually("the mount's TTL applies again once the file's is cleared", Duration::from_secs(15), || {
        gone(&c, "/mttl/long.bin")
    })
    .await;
    assert!(!dir.path().join("ufs-mttl/long.bin").exists());

    // The TTL is in the journal: after a crash and restart it is still set
    // and still applied (a file made old by setting its mtime back).
    put(&c, "/plain/late.bin", &data).await.unwrap();
    ttl(&m, &["/plain/late.bin", "1h", "--action", "delete"]);
    node.restart(Duration::from_secs(60)).expect("restart");
    let m = node.ready.clone();
    let c = client(&m, MIB as u64).await;
    let hour = Some(FileTtl { ttl_ms: 3_600_000, action: TtlAction::Delete });
    assert_eq!(c.stat("/plain/late.bin").await.unwrap().ttl, hour);
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert!(c.stat("/plain/late.bin").await.is_ok(), "deleted before its TTL");
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64;
    let old = strata_client::SetAttrs { mtime_ms: Some(now - 2 * 3_600_000), ..Default::default() };
    c.set_attr("/plain/late.bin", old).await.unwrap();
    eventually("a TTL set before the restart applies after it", Duration::from_secs(15), || {
        gone(&c, "/plain/late.bin")
    })
    .await;
}

/// Against an S3 server that checks signatures: a mount with an unknown
/// access key or a wrong secret is refused with the backend's reason and
/// leaves nothing behind; a mount with the right key writes through, reads
/// misses back from S3 and lists objects written behind Strata's back.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn bad_credentials_are_refused_and_good_ones_work() {
    let dir = tempfile::tempdir().unwrap();
    let s3 = S3Server::start_with_auth(&dir.path().join("moto.log"), &["bkt"])
        .expect("moto_server with INITIAL_NO_AUTH_ACTION_COUNT runs");
    let (key, secret) = s3.credentials.clone().unwrap();
    let opts = |k: &str, s: &str| -> Vec<String> {
        [("endpoint", s3.endpoint.as_str()), ("access_key_id", k), ("secret_access_key", s), ("region", "us-east-1")]
            .iter()
            .flat_map(|(o, v)| ["-o".to_string(), format!("{o}={v}")])
            .collect()
    };
    let op = {
        let spec = UfsSpec {
            uri: "s3://bkt".into(),
            options: vec![
                ("access_key_id".into(), key.clone()),
                ("endpoint".into(), s3.endpoint.clone()),
                ("secret_access_key".into(), secret.clone()),
            ],
        };
        strata_actors::ufs::operator(&spec).expect("operator")
    };
    op.write("data/behind.txt", b"written behind".to_vec()).await.expect("the right key writes to S3");
    // The server does check: the test harness's usual credentials are refused.
    assert!(bucket(&s3, "bkt").list("").await.is_err(), "moto accepted an unknown access key");

    let node = start_local(dir.path(), 256 << 20, 2 << 30);
    let m = node.ready.clone();
    let fast = ["-o", "timeout_ms=3000", "-o", "retries=0"];
    for (k, s, why) in [("test", "test", "InvalidAccessKeyId"), (key.as_str(), "wrong", "SignatureDoesNotMatch")] {
        let o = opts(k, s);
        let mut args = vec!["mount", "/bad", "s3://bkt/data"];
        args.extend(fast);
        args.extend(o.iter().map(|s| s.as_str()));
        let (ok, out, err) = strata(&m, &args);
        assert!(!ok, "mount with bad credentials ({k}) succeeded: {out}");
        assert!(err.contains("ufs s3://bkt/data") && err.contains(why), "bad credentials ({k}): {err}");
    }
    let (_, out, _) = strata(&m, &["mount"]);
    assert!(out.trim().is_empty(), "refused mounts leave nothing behind: {out}");

    let o = opts(&key, &secret);
    let mut args = vec!["mount", "/good", "s3://bkt/data", "--block-size", "1MiB"];
    args.extend(o.iter().map(|s| s.as_str()));
    let (ok, _, err) = strata(&m, &args);
    assert!(ok, "mount with the right credentials: {err}");
    let (_, out, _) = strata(&m, &["mount"]);
    assert!(out.contains("/good") && !out.contains(&secret), "{out}");
    let c = client(&m, MIB as u64).await;
    assert_eq!(c.read_all("/good/behind.txt").await.unwrap(), b"written behind");
    let data = bytes(2 * MIB + 3, 11);
    put(&c, "/good/new.bin", &data).await.unwrap();
    assert!(object(&op, "data/new.bin").await.as_deref() == Some(&data[..]), "cache-through did not reach S3");
    let (ok, _, err) = strata(&m, &["free", "/good"]);
    assert!(ok, "{err}");
    assert_eq!(cached(&c, "/good/new.bin").await, (0, 3));
    assert!(c.read_all("/good/new.bin").await.unwrap() == data, "a miss read from S3 with the mount's key");
    // Another refused mount does not disturb the working one.
    let o = opts("test", "test");
    let mut args = vec!["mount", "/bad2", "s3://bkt/other"];
    args.extend(fast);
    args.extend(o.iter().map(|s| s.as_str()));
    let (ok, _, err) = strata(&m, &args);
    assert!(!ok && err.contains("InvalidAccessKeyId"), "{err}");
    let (ok, _, err) = strata(&m, &["free", "/good"]);
    assert!(ok, "{err}");
    assert!(c.read_all("/good/new.bin").await.unwrap() == data);
    c.delete("/good/new.bin", false).await.unwrap();
    assert!(object(&op, "data/new.bin").await.is_none(), "delete did not reach S3");
}

/// Pin and TTL against S3 (moto), mount-level and per file: the mount's TTL
/// free drops an unpinned file's blocks (it reads back from S3) and leaves
/// a pinned file's, as `strata free` does; a file's TTL delete and a
/// directory's remove the objects from the bucket.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn pin_and_ttl_against_s3() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, op) = setup(dir.path());
    let node = start_local(dir.path(), 256 << 20, 2 << 30);
    let m = node.ready.clone();
    mount(&m, "/s3", "s3://bkt/pt", &["--ttl", "2s", "--ttl-action", "free"], &s3_opts(&s3));
    let c = client(&m, MIB as u64).await;
    let data = bytes(2 * MIB, 21);
    c.mkdir("/s3/d", false).await.unwrap();
    for f in ["free.bin", "pinned.bin", "del.bin", "d/x.bin"] {
        put(&c, &format!("/s3/{f}"), &data).await.unwrap();
        assert!(object(&op, &format!("pt/{f}")).await.is_some(), "{f} not written through");
    }
    let (ok, _, err) = strata(&m, &["pin", "/s3/pinned.bin"]);
    assert!(ok, "{err}");
    ttl(&m, &["/s3/del.bin", "2s", "--action", "delete"]);
    ttl(&m, &["/s3/d", "2s", "--action", "delete"]);
    eventually("mount TTL free drops the unpinned file", Duration::from_secs(15), || async {
        cached(&c, "/s3/free.bin").await == (0, 2)
    })
    .await;
    for p in ["/s3/del.bin", "/s3/d/x.bin"] {
        eventually(&format!("TTL delete removes {p}"), Duration::from_secs(15), || gone(&c, p)).await;
    }
    assert!(object(&op, "pt/del.bin").await.is_none(), "file TTL delete left the object");
    assert!(object(&op, "pt/d/x.bin").await.is_none(), "directory TTL delete left the object");
    tokio::time::sleep(Duration::from_millis(1500)).await; // more TTL passes
    assert_eq!(cached(&c, "/s3/pinned.bin").await, (2, 2), "TTL free dropped a pinned file");
    let (ok, _, err) = strata(&m, &["free", "/s3"]);
    assert!(ok, "{err}");
    assert_eq!(cached(&c, "/s3/pinned.bin").await, (2, 2), "free dropped a pinned file");
    assert!(c.read_all("/s3/free.bin").await.unwrap() == data, "a freed file reads from S3");
    assert!(object(&op, "pt/free.bin").await.as_deref() == Some(&data[..]));
}

/// Starts `strata local` in `dir` with `STRATA_FAULT` set to `fault` (none if empty).
fn start_local_with_fault(dir: &Path, fault: &str) -> strata_chaos::Node {
    let env: Vec<(&str, &str)> = if fault.is_empty() { vec![] } else { vec![("STRATA_FAULT", fault)] };
    strata_chaos::Node::start_with_env(
        Path::new(BIN),
        &strata_chaos::local_args(dir, 256 << 20, 2 << 30),
        &env,
        "master: ",
        &dir.join("local.log"),
        Duration::from_secs(60),
    )
    .expect("strata local starts")
}

/// Restarts `node` with `STRATA_FAULT` set to `fault` (none if empty).
fn restart_with_fault(node: &mut strata_chaos::Node, fault: &str) {
    let env: Vec<(&str, &str)> = if fault.is_empty() { vec![] } else { vec![("STRATA_FAULT", fault)] };
    node.set_env(&env);
    node.restart(Duration::from_secs(60)).expect("strata local restarts");
}

/// The UFS operations recorded and not completed in a stopped master's data dir.
fn intents_left(dir: &Path) -> Vec<strata_actors::master::namespace::UfsIntent> {
    let db = strata_actors::master::store::open_db(&dir.join("master/meta")).expect("open the master db");
    let ns = strata_actors::master::namespace::Namespace::open(db).expect("open the namespace");
    ns.ufs_intents().expect("read intents")
}

/// A master that crashes between a delete's or rename's UFS operation and
/// its journal entry (fault hook `STRATA_FAULT=crash-after-ufs-op`) finishes
/// both when it comes back: the intent journaled before the UFS operation
/// is re-driven by the new leader. The mount never re-syncs, so only the
/// re-drive can bring the namespace in line with the UFS.
/// With `STRATA_REDRIVE_OFF_CHECK=1` the restarts disable the re-drive
/// (`STRATA_FAULT=no-ufs-redrive`) and the test must fail.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_ufs_op_and_journal_is_repaired_on_recovery() {
    let dir = tempfile::tempdir().unwrap();
    let ufs = dir.path().join("ufs");
    std::fs::create_dir_all(&ufs).unwrap();
    let uri = format!("file://{}", ufs.display());
    let op = strata_actors::ufs::operator(&UfsSpec { uri: uri.clone(), options: vec![] }).expect("operator");
    let log = crash_repair_on(dir.path(), &uri, &[], &op).await;
    // A local rename is atomic: both names mean it was not done yet.
    assert!(log.contains("target replaced, rename redone"), "{log}");
}

/// The same against S3 (moto), where a rename is copy + delete; also a
/// crash between the copy and the delete (both objects left) is finished.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_crash_between_ufs_op_and_journal_is_repaired_on_recovery_on_s3() {
    let dir = tempfile::tempdir().unwrap();
    let (s3, _) = setup(dir.path());
    let op = bucket(&s3, "bkt/crash"); // the objects under the mount's prefix
    let log = crash_repair_on(dir.path(), "s3://bkt/crash", &s3_opts(&s3), &op).await;
    assert!(log.contains("copied, source deleted"), "{log}");
}

/// Crashes the master after a delete's and two renames' UFS operations and
/// checks each is finished after a restart; answers the master's log.
async fn crash_repair_on(dir: &Path, uri: &str, opts: &[String], ufs: &opendal::Operator) -> String {
    let after = if std::env::var("STRATA_REDRIVE_OFF_CHECK").is_ok() { "no-ufs-redrive" } else { "" };
    let mut node = start_local_with_fault(dir, "crash-after-ufs-op");
    let m = node.ready.clone();
    mount(&m, "/m", uri, &["--sync", "never"], opts);
    let c = client(&m, MIB as u64).await;
    let (a, b) = (bytes(MIB + 100, 70), bytes(2 * MIB + 7, 71));
    put(&c, "/m/a.bin", &a).await.unwrap();
    put(&c, "/m/b.bin", &b).await.unwrap();
    assert!(object(ufs, "a.bin").await.unwrap() == a && object(ufs, "b.bin").await.unwrap() == b);

    // Delete: the UFS file goes, then the master dies before journaling.
    let _ = c.delete("/m/a.bin", false).await;
    node.wait_exit(Duration::from_secs(10)).expect("the master aborts after the UFS delete");
    drop(c);
    assert!(object(ufs, "a.bin").await.is_none(), "the UFS delete ran before the crash");
    restart_with_fault(&mut node, after);
    let c = client(&node.ready.clone(), MIB as u64).await;
    eventually("the deleted file leaves the namespace", Duration::from_secs(10), || async {
        c.stat("/m/a.bin").await.is_err_and(|e| e.code() == ErrorCode::NotFound)
    })
    .await;
    assert!(object(ufs, "a.bin").await.is_none());
    assert_eq!(c.read_all("/m/b.bin").await.unwrap(), b, "the other file is untouched");

    // Rename: same, with the master restarted with the fault hook again.
    drop(c);
    restart_with_fault(&mut node, "crash-after-ufs-op");
    let c = client(&node.ready.clone(), MIB as u64).await;
    let _ = c.rename("/m/b.bin", "/m/c.bin").await;
    node.wait_exit(Duration::from_secs(10)).expect("the master aborts after the UFS rename");
    drop(c);
    assert!(object(ufs, "b.bin").await.is_none(), "the UFS rename ran before the crash");
    assert!(object(ufs, "c.bin").await.unwrap() == b);
    restart_with_fault(&mut node, after);
    let c = client(&node.ready.clone(), MIB as u64).await;
    eventually("the renamed file moves in the namespace", Duration::from_secs(10), || async {
        c.stat("/m/b.bin").await.is_err_and(|e| e.code() == ErrorCode::NotFound) && c.stat("/m/c.bin").await.is_ok()
    })
    .await;
    assert_eq!(c.read_all("/m/c.bin").await.unwrap(), b, "the renamed file reads back byte-exact");
    assert!(object(ufs, "c.bin").await.unwrap() == b && object(ufs, "b.bin").await.is_none());

    // A crash in the middle of a copy + delete rename leaves both objects:
    // put the source back as the copy left it before the crash.
    drop(c);
    restart_with_fault(&mut node, "crash-after-ufs-op");
    let c = client(&node.ready.clone(), MIB as u64).await;
    let _ = c.rename("/m/c.bin", "/m/d.bin").await;
    node.wait_exit(Duration::from_secs(10)).expect("the master aborts after the UFS rename");
    drop(c);
    ufs.write("c.bin", b.clone()).await.expect("put the source back");
    restart_with_fault(&mut node, after);
    let c = client(&node.ready.clone(), MIB as u64).await;
    eventually("the half-done rename is finished", Duration::from_secs(10), || async {
        c.stat("/m/c.bin").await.is_err_and(|e| e.code() == ErrorCode::NotFound) && c.stat("/m/d.bin").await.is_ok()
    })
    .await;
    eventually("the source object is gone", Duration::from_secs(5), || async { object(ufs, "c.bin").await.is_none() })
        .await;
    assert_eq!(c.read_all("/m/d.bin").await.unwrap(), b);
    assert!(object(ufs, "d.bin").await.unwrap() == b);
    let names: Vec<String> = c.list("/m").await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names, ["d.bin"]);
    drop(c);
    let log = node.log();
    assert_eq!(log.matches("STRATA_FAULT=crash-after-ufs-op: aborting").count(), 3, "{log}");
    assert!(log.contains("re-drove a recorded UFS delete") && log.contains("re-drove a recorded UFS rename"), "{log}");
    assert!(node.stop(Duration::from_secs(10)), "the master stops cleanly");
    assert_eq!(intents_left(dir), vec![], "no recorded UFS operation is left");
    log
}

/// A UFS directory of 100,000 objects syncs (journaled in parts of a few
/// thousand entries, none too large to replicate) and lists whole; an
/// object removed behind the cache and one added are seen at the next
/// sync, across the parts.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_ufs_directory_of_100k_objects_syncs() {
    const N: usize = 100_000;
    let dir = tempfile::tempdir().unwrap();
    let ufs = dir.path().join("ufs");
    std::fs::create_dir_all(ufs.join("many")).unwrap();
    for i in 0..N {
        std::fs::write(ufs.join(format!("many/o{i:06}")), b"").unwrap();
    }
    let t = std::time::Instant::now();
    let node = start_local(dir.path(), 256 << 20, 2 << 30);
    let m = node.ready.clone();
    mount(&m, "/u", &format!("file://{}", ufs.display()), &["--sync", "always"], &[]);
    let c = client(&m, MIB as u64).await;
    eprintln!("started and mounted in {:?}", t.elapsed());
    let names: Vec<String> = c.list("/u/many").await.unwrap().into_iter().map(|e| e.name).collect();
    eprintln!("first listing (a sync of {N}) in {:?}", t.elapsed());
    assert_eq!(names, (0..N).map(|i| format!("o{i:06}")).collect::<Vec<_>>());
    std::fs::remove_file(ufs.join("many/o050000")).unwrap();
    std::fs::write(ufs.join("many/zz-new"), b"new").unwrap();
    let names: Vec<String> = c.list("/u/many").await.unwrap().into_iter().map(|e| e.name).collect();
    assert_eq!(names.len(), N, "one gone, one new");
    assert!(!names.contains(&"o050000".to_string()) && names.contains(&"zz-new".to_string()));
    assert_eq!(c.read_all("/u/many/zz-new").await.unwrap(), b"new");
}
