//! End-to-end benchmarks. Each reports Strata against a baseline measured in
//! the same run on the same machine, because these machines are shared and
//! noisy: absolute numbers alone mean little.
//!
//! - `io`: put and get of one file (default 1 GiB) through the client against
//!   `cp` of the same file on the local filesystem.
//! - `meta`: create, stat, list and delete of N files (default 10,000) from
//!   one client against the same operations on the local filesystem.
//! - `ufs`: one object (default 1 GiB) in a real S3 server on loopback
//!   (moto): read straight from S3 (OpenDAL, the baseline), read cold
//!   through Strata (every block a miss), read warm from Strata, and
//!   `load` throughput after `free`.
//! - `failover` and `ha-meta`: several masters (see `ha.rs`).
//! - `replication`: write throughput with 1, 2, 3 copies and the repair
//!   rate after a worker's `kill -9` (see `repl.rs`).

mod ha;
mod repl;

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use strata_chaos::{local_args, Node};
use strata_client::{Client, ClientConfig};

#[derive(Parser)]
#[command(about = "Strata benchmarks (ratios against same-run baselines)")]
struct Args {
    /// The strata binary.
    #[arg(long, default_value = "target/release/strata")]
    strata: PathBuf,
    /// Scratch directory (on the disk under test).
    #[arg(long)]
    dir: Option<PathBuf>,
    #[command(subcommand)]
    cmd: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// put/get of one file against cp.
    Io {
        /// File size in MiB.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
        /// Block size in MiB.
        #[arg(long, default_value_t = 64)]
        block_mib: u64,
    },
    /// Metadata operations per second against the local filesystem.
    Meta {
        /// Number of files.
        #[arg(long, default_value_t = 10_000)]
        files: usize,
    },
    /// Cold (S3) against warm (Strata) reads of one object, and load throughput.
    Ufs {
        /// Object size in MiB.
        #[arg(long, default_value_t = 1024)]
        mib: u64,
    },
    /// Three masters: kill -9 the leader, time to the first successful mutation.
    Failover {
        /// Number of kills.
        #[arg(long, default_value_t = 10)]
        kills: usize,
    },
    /// Three masters holding N files: a wiped follower's catch-up by
    /// snapshot against the leader's snapshot build; master memory.
    CatchUp {
        /// Files in the namespace.
        #[arg(long, default_value_t = 200_000)]
        files: usize,
    },
    /// Writes with 1, 2 and 3 copies; repair after kill -9 of a worker, against cp.
    Replication {
        /// File size in MiB (a multiple of 8).
        #[arg(long, default_value_t = 512)]
        mib: u64,
        /// Two-copy data written before the kill, in MiB.
        #[arg(long, default_value_t = 1024)]
        repair_mib: u64,
    },
    /// Create and stat ops/s from 1 and N clients, against 1 and 3 masters.
    HaMeta {
        /// Files per measurement.
        #[arg(long, default_value_t = 4000)]
        files: usize,
        /// Concurrent clients in the second measurement.
        #[arg(long, default_value_t = 8)]
        clients: usize,
    },
}

fn rate(bytes: u64, d: Duration) -> f64 {
    bytes as f64 / (1 << 20) as f64 / d.as_secs_f64()
}

async fn start(bin: &Path, dir: &Path) -> Result<(Node, Client)> {
    let node = Node::start(
        bin,
        &local_args(&dir.join("strata"), 2 << 30, 8 << 30),
        "master: ",
        &dir.join("strata.log"),
        Duration::from_secs(120),
    )?;
    let mut cfg = ClientConfig::new(node.ready.clone());
    cfg.rpc_timeout = Duration::from_secs(60);
    let client = Client::connect(cfg).await?;
    Ok((node, client))
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let scratch = match &args.dir {
        Some(d) => tempfile::tempdir_in(d)?,
        None => tempfile::tempdir()?,
    };
    let dir = scratch.path();
    match args.cmd {
        Cmd::Failover { kills } => return ha::failover(&args.strata, dir, kills).await,
        Cmd::HaMeta { files, clients } => return ha::ha_meta(&args.strata, dir, files, clients).await,
        Cmd::CatchUp { files } => return ha::catch_up(&args.strata, dir, files).await,
        Cmd::Replication { mib, repair_mib } => return repl::replication(&args.strata, dir, mib, repair_mib).await,
        _ => {}
    }
    let (_node, client) = start(&args.strata, dir).await.context("starting strata local")?;
    match args.cmd {
        Cmd::Io { mib, block_mib } => io(&client, dir, mib, block_mib).await,
        Cmd::Meta { files } => meta(&client, dir, files).await,
        Cmd::Ufs { mib } => ufs(&client, dir, mib).await,
        Cmd::Failover { .. } | Cmd::HaMeta { .. } | Cmd::CatchUp { .. } | Cmd::Replication { .. } => {
            unreachable!("handled above")
        }
    }
}

async fn io(client: &Client, dir: &Path, mib: u64, block_mib: u64) -> Result<()> {
    let len = mib << 20;
    let src = dir.join("src.bin");
    {
        use std::io::Write;
        let mut f = std::io::BufWriter::new(std::fs::File::create(&src)?);
        let mut x = 0x1234_5678_9abc_def0u64;
        let mut chunk = vec![0u8; 1 << 20];
        for _ in 0..mib {
            for b in chunk.chunks_mut(8) {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
            }
            f.write_all(&chunk)?;
        }
        f.flush()?;
    }

    // Baseline: cp to a new file on the same filesystem, then cp it back out.
    let t = Instant::now();
    std::fs::copy(&src, dir.join("cp1.bin"))?;
    let cp_in = t.elapsed();
    let t = Instant::now();
    std::fs::copy(dir.join("cp1.bin"), dir.join("cp2.bin"))?;
    let cp_out = t.elapsed();

    // Strata: put (client → worker), get (worker → client → local file).
    let t = Instant::now();
    let mut w = client.create_with_block_size("/bench.bin", true, block_mib << 20).await?;
    {
        use tokio::io::AsyncReadExt;
        let mut f = tokio::fs::File::open(&src).await?;
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = f.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            w.write(&buf[..n]).await?;
        }
    }
    w.close().await?;
    let put = t.elapsed();
    let t = Instant::now();
    {
        use tokio::io::AsyncWriteExt;
        let mut r = client.open("/bench.bin").await?;
        let mut f = tokio::fs::File::create(dir.join("get.bin")).await?;
        let mut buf = vec![0u8; 8 << 20];
        loop {
            let n = r.read(&mut buf).await?;
            if n == 0 {
                break;
            }
            f.write_all(&buf[..n]).await?;
        }
        f.flush().await?;
    }
    let get = t.elapsed();
    let same = std::fs::read(dir.join("get.bin"))? == std::fs::read(&src)?;
    anyhow::ensure!(same, "get returned different bytes");

    println!("file {mib} MiB, block {block_mib} MiB");
    println!("cp in         {:>8.1} MiB/s", rate(len, cp_in));
    println!(
        "strata put    {:>8.1} MiB/s   ratio put/cp {:.2}",
        rate(len, put),
        cp_in.as_secs_f64() / put.as_secs_f64()
    );
    println!("cp out        {:>8.1} MiB/s", rate(len, cp_out));
    println!(
        "strata get    {:>8.1} MiB/s   ratio get/cp {:.2}",
        rate(len, get),
        cp_out.as_secs_f64() / get.as_secs_f64()
    );
    Ok(())
}

async fn meta(client: &Client, dir: &Path, files: usize) -> Result<()> {
    let local = dir.join("meta");
    std::fs::create_dir_all(&local)?;
    client.mkdir("/meta", true).await?;
    let mut rows = Vec::new();

    // create
    let t = Instant::now();
    for i in 0..files {
        std::fs::File::create(local.join(format!("f{i}")))?;
    }
    let l = t.elapsed();
    let t = Instant::now();
    for i in 0..files {
        client.create(&format!("/meta/f{i}"), false).await?.close().await?;
    }
    rows.push(("create", l, t.elapsed()));

    // stat
    let t = Instant::now();
    for i in 0..files {
        std::fs::metadata(local.join(format!("f{i}")))?;
    }
    let l = t.elapsed();
    let t = Instant::now();
    for i in 0..files {
        client.stat(&format!("/meta/f{i}")).await?;
    }
    rows.push(("stat", l, t.elapsed()));

    // list (the whole directory, 10 times)
    let t = Instant::now();
    for _ in 0..10 {
        anyhow::ensure!(std::fs::read_dir(&local)?.count() == files);
    }
    let l = t.elapsed();
    let t = Instant::now();
    for _ in 0..10 {
        anyhow::ensure!(client.list("/meta").await?.len() == files);
    }
    rows.push(("list x10", l, t.elapsed()));

    // delete
    let t = Instant::now();
    for i in 0..files {
        std::fs::remove_file(local.join(format!("f{i}")))?;
    }
    let l = t.elapsed();
    let t = Instant::now();
    for i in 0..files {
        client.delete(&format!("/meta/f{i}"), false).await?;
    }
    rows.push(("delete", l, t.elapsed()));

    println!("{files} files, one client, sequential calls");
    println!("{:<10} {:>14} {:>14} {:>10}", "op", "local ops/s", "strata ops/s", "ratio");
    for (op, l, s) in rows {
        let n = if op.starts_with("list") { 10.0 } else { files as f64 };
        println!(
            "{:<10} {:>14.0} {:>14.0} {:>10.3}",
            op,
            n / l.as_secs_f64(),
            n / s.as_secs_f64(),
            l.as_secs_f64() / s.as_secs_f64()
        );
    }
    Ok(())
}

/// Reads a whole Strata file, discarding the bytes; returns their crc32c.
async fn drain(client: &Client, path: &str) -> Result<u32> {
    let mut r = client.open(path).await?;
    let mut buf = vec![0u8; 8 << 20];
    let mut crc = 0;
    loop {
        let n = r.read(&mut buf).await?;
        if n == 0 {
            return Ok(crc);
        }
        crc = crc32c::crc32c_append(crc, &buf[..n]);
    }
}

async fn ufs(client: &Client, dir: &Path, mib: u64) -> Result<()> {
    use strata_client::{MountInfo, MountOptions, ReadType, UfsSpec, WriteType};
    let s3 = strata_chaos::s3::S3Server::start(&dir.join("moto.log"))?;
    s3.create_bucket("bench")?;
    let options = vec![
        ("access_key_id".to_string(), "bench".to_string()),
        ("endpoint".to_string(), s3.endpoint.clone()),
        ("region".to_string(), "us-east-1".to_string()),
        ("secret_access_key".to_string(), "bench".to_string()),
    ];
    let op = strata_actors::ufs::operator(&UfsSpec { uri: "s3://bench".into(), options: options.clone() })
        .map_err(anyhow::Error::msg)?;
    let len = mib << 20;
    let mut w = op.writer_with("data/big.bin").chunk(16 << 20).await?;
    let mut x = 0x9e37_79b9_7f4a_7c15u64;
    let mut crc = 0;
    for _ in 0..mib {
        let mut chunk = vec![0u8; 1 << 20];
        for b in chunk.chunks_mut(8) {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            b.copy_from_slice(&x.to_le_bytes()[..b.len()]);
        }
        crc = crc32c::crc32c_append(crc, &chunk);
        w.write(chunk).await?;
    }
    w.close().await?;

    // Baseline: the object straight from S3, 64 MiB ranges in order.
    let t = Instant::now();
    let mut off = 0;
    let mut direct_crc = 0;
    while off < len {
        let n = (len - off).min(64 << 20);
        let b = op.read_with("data/big.bin").range(off..off + n).await?;
        direct_crc = crc32c::crc32c_append(direct_crc, &b.to_vec());
        off += n;
    }
    let direct = t.elapsed();
    anyhow::ensure!(direct_crc == crc, "S3 returned different bytes");

    let mount = MountInfo {
        path: "/s3".into(),
        spec: UfsSpec { uri: "s3://bench/data".into(), options },
        options: MountOptions {
            write_type: WriteType::CacheThrough,
            read_type: ReadType::Cache,
            sync_interval_ms: -1,
            block_size: 64 << 20,
            replicas: 1,
            ttl_ms: 0,
            ttl_action: Default::default(),
            placement: None,
        },
    };
    client.mount(mount).await?;
    let t = Instant::now();
    anyhow::ensure!(drain(client, "/s3/big.bin").await? == crc, "cold read returned different bytes");
    let cold = t.elapsed();
    let t = Instant::now();
    anyhow::ensure!(drain(client, "/s3/big.bin").await? == crc, "warm read returned different bytes");
    let warm = t.elapsed();
    client.free("/s3").await?;
    // The workers drop the freed copies at their next heartbeat.
    let deadline = Instant::now() + Duration::from_secs(30);
    let used = |r: strata_client::ClusterReport| -> u64 {
        r.workers.iter().flat_map(|w| w.tiers.iter()).map(|t| t.used_bytes).sum()
    };
    while used(client.report().await?) > 0 {
        anyhow::ensure!(Instant::now() < deadline, "freed blocks still cached after 30 s");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let t = Instant::now();
    let loaded = client.load_file("/s3/big.bin").await?;
    let load = t.elapsed();
    anyhow::ensure!(loaded == len, "load fetched {loaded} of {len} bytes");

    println!("object {mib} MiB in S3 (moto on 127.0.0.1), 64 MiB blocks");
    println!("S3 direct read     {:>8.1} MiB/s", rate(len, direct));
    println!(
        "strata cold read   {:>8.1} MiB/s   ratio cold/S3 {:.2}",
        rate(len, cold),
        direct.as_secs_f64() / cold.as_secs_f64()
    );
    println!(
        "strata warm read   {:>8.1} MiB/s   ratio warm/S3 {:.2}",
        rate(len, warm),
        direct.as_secs_f64() / warm.as_secs_f64()
    );
    println!(
        "strata load        {:>8.1} MiB/s   ratio load/S3 {:.2}",
        rate(len, load),
        direct.as_secs_f64() / load.as_secs_f64()
    );
    Ok(())
}
