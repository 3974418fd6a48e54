//! Helpers shared by the integration tests.
#![allow(dead_code)]

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use strata_chaos::{local_args, Node};
use strata_client::{Client, ClientConfig};

pub const BIN: &str = env!("CARGO_BIN_EXE_strata");

/// Starts `strata local` in `dir` with tiers inside `dir`.
pub fn start_local(dir: &Path, mem: u64, ssd: u64) -> Node {
    Node::start(Path::new(BIN), &local_args(dir, mem, ssd), "master: ", &dir.join("local.log"), Duration::from_secs(60))
        .expect("strata local starts")
}

/// Runs `strata` with arguments; returns (success, stdout, stderr).
pub fn strata(master: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(BIN).env("STRATA_MASTER", master).args(args).output().expect("run strata");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// A client with a small block size.
pub async fn client(master: &str, block_size: u64) -> Client {
    let mut c = ClientConfig::new(master);
    c.block_size = block_size;
    c.rpc_timeout = Duration::from_secs(20);
    c.data_timeout = Duration::from_secs(30);
    Client::connect(c).await.expect("client connects")
}

/// Client settings for a cluster of several masters: 64 KiB blocks, 3 s
/// per call, up to 20 s to ride out a failover.
pub fn ha_config(masters: &str) -> ClientConfig {
    let mut c = ClientConfig::new(masters);
    c.block_size = 64 * 1024;
    c.rpc_timeout = Duration::from_secs(3);
    c.data_timeout = Duration::from_secs(10);
    c.failover_timeout = Duration::from_secs(20);
    c
}

/// Deterministic pseudo-random bytes.
pub fn bytes(len: usize, seed: u64) -> Vec<u8> {
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

/// Polls `check` every 50 ms until it holds or `timeout` passes.
pub async fn eventually<F, Fut>(what: &str, timeout: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + timeout;
    while !check().await {
        assert!(tokio::time::Instant::now() < deadline, "{what}: not true within {timeout:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `fcntl` on `f`: `cmd` with a lock of `typ` on `len` bytes from `start`
/// (0: to the end); the lock `F_GETLK` reports.
#[allow(unsafe_code)]
pub fn fcntl_lock(f: &std::fs::File, cmd: i32, typ: i32, start: i64, len: i64) -> std::io::Result<libc::flock> {
    use std::os::fd::AsRawFd;
    // SAFETY: a plain fcntl on an open descriptor with a valid struct.
    unsafe {
        let mut l: libc::flock = std::mem::zeroed();
        l.l_type = typ as i16;
        l.l_whence = libc::SEEK_SET as i16;
        l.l_start = start;
        l.l_len = len;
        if libc::fcntl(f.as_raw_fd(), cmd, &mut l) == -1 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(l)
    }
}

/// Waits until every master in `masters` (comma-separated client
/// addresses) has applied the same index, then asserts their state
/// machines' digests there are equal. Returns the masters' journals.
pub async fn masters_agree(c: &Client, masters: &str) -> Vec<strata_protocol::messages::JournalInfo> {
    let addrs: Vec<&str> = masters.split(',').collect();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    loop {
        let mut infos = Vec::new();
        for a in &addrs {
            if let Ok(j) = c.journal_info(a, true).await {
                infos.push(j);
            }
        }
        let digests: Vec<_> = infos.iter().filter_map(|j| j.digest.clone()).collect();
        if digests.len() == addrs.len() && digests.iter().all(|d| d.applied_index == digests[0].applied_index) {
            for (j, d) in infos.iter().zip(&digests) {
                assert_eq!(
                    (d.digest, d.rows),
                    (digests[0].digest, digests[0].rows),
                    "master #{} diverged from #{} at applied index {}",
                    j.status.id,
                    infos[0].status.id,
                    d.applied_index
                );
            }
            return infos;
        }
        assert!(tokio::time::Instant::now() < deadline, "the masters never reached one applied index: {infos:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
