//! Launching real `strata` processes for tests, benchmarks and fault
//! injection: start a node, wait for its ready line, then kill (-9), stop
//! (SIGSTOP), continue, restart it. Every process is killed when its handle
//! drops, so a failing test never leaves nodes behind.

pub mod s3;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context, Result};

/// A free TCP port on 127.0.0.1 for a node to listen on, never one this
/// process handed out before. It is taken below the kernel's ephemeral
/// range (read from `ip_local_port_range`, 32768 by default): a port the
/// kernel hands out for `bind(0)` or an outgoing connection could be taken
/// by some connection between this check and the node's bind (seen in CI
/// as "Address already in use").
pub fn free_port() -> u16 {
    static GIVEN: std::sync::Mutex<Vec<u16>> = std::sync::Mutex::new(Vec::new());
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|s| s.split_whitespace().next().and_then(|p| p.parse::<u16>().ok()))
        .unwrap_or(32768);
    let (low, high) = (10_000u16, ephemeral_low.max(10_001));
    let span = u32::from(high - low);
    let seed = std::process::id()
        ^ std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map_or(0, |d| d.subsec_nanos());
    let mut given = GIVEN.lock().unwrap_or_else(|e| e.into_inner());
    for i in 0..span {
        let port = low + ((seed.wrapping_add(i.wrapping_mul(7919))) % span) as u16;
        if given.contains(&port) || std::net::TcpListener::bind(("127.0.0.1", port)).is_err() {
            continue;
        }
        given.push(port);
        return port;
    }
    panic!("no free port below the ephemeral range");
}

/// One `strata` process.
pub struct Node {
    bin: PathBuf,
    args: Vec<String>,
    ready_prefix: String,
    child: Option<Child>,
    /// The ready line's value (e.g. the master address after `master: `).
    pub ready: String,
    /// Every stdout line up to and including the ready line.
    pub lines: Vec<String>,
    log: PathBuf,
    rx: Option<mpsc::Receiver<String>>,
    /// Extra environment variables of the process (see [`Node::set_env`]).
    env: Vec<(String, String)>,
}

/// Sends a signal to a process.
pub fn signal(pid: u32, sig: libc::c_int) -> Result<()> {
    // `kill` via the libc binding is the one place we need it; the command
    // line tool keeps this crate free of unsafe.
    let name = match sig {
        libc::SIGKILL => "KILL",
        libc::SIGSTOP => "STOP",
        libc::SIGCONT => "CONT",
        libc::SIGTERM => "TERM",
        libc::SIGINT => "INT",
        _ => bail!("unsupported signal {sig}"),
    };
    let st = Command::new("kill").arg(format!("-{name}")).arg(pid.to_string()).status()?;
    if !st.success() {
        bail!("kill -{name} {pid} failed");
    }
    Ok(())
}

impl Node {
    /// Starts `bin args…` and waits (up to `timeout`) for a stdout line
    /// starting with `ready_prefix`. Stderr goes to `log`.
    pub fn start(bin: &Path, args: &[String], ready_prefix: &str, log: &Path, timeout: Duration) -> Result<Node> {
        let mut n = Node::spawn(bin, args, ready_prefix, log)?;
        n.wait_ready(timeout)?;
        Ok(n)
    }

    /// Starts the process without waiting for its ready line (see [`Node::wait_ready`]).
    pub fn spawn(bin: &Path, args: &[String], ready_prefix: &str, log: &Path) -> Result<Node> {
        let mut n = Node::new(bin, args, ready_prefix, log);
        n.spawn_process()?;
        Ok(n)
    }

    /// A node not started yet.
    fn new(bin: &Path, args: &[String], ready_prefix: &str, log: &Path) -> Node {
        Node {
            bin: bin.to_path_buf(),
            args: args.to_vec(),
            ready_prefix: ready_prefix.to_string(),
            child: None,
            ready: String::new(),
            lines: Vec::new(),
            log: log.to_path_buf(),
            rx: None,
            env: Vec::new(),
        }
    }

    /// Starts `bin args…` with extra environment variables `env` (kept for
    /// restarts until [`Node::set_env`] changes them) and waits for its ready line.
    pub fn start_with_env(
        bin: &Path,
        args: &[String],
        env: &[(&str, &str)],
        ready_prefix: &str,
        log: &Path,
        timeout: Duration,
    ) -> Result<Node> {
        let mut n = Node::new(bin, args, ready_prefix, log);
        n.set_env(env);
        n.launch(timeout)?;
        Ok(n)
    }

    /// Sets the extra environment variables of the next (re)start.
    pub fn set_env(&mut self, env: &[(&str, &str)]) {
        self.env = env.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
    }

    fn launch(&mut self, timeout: Duration) -> Result<()> {
        self.spawn_process()?;
        self.wait_ready(timeout)
    }

    fn spawn_process(&mut self) -> Result<()> {
        let log = std::fs::OpenOptions::new().create(true).append(true).open(&self.log)?;
        let mut child = Command::new(&self.bin)
            .args(&self.args)
            .envs(self.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.bin.display()))?;
        let stdout = child.stdout.take().expect("piped");
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            for line in BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        self.child = Some(child);
        self.lines.clear();
        self.rx = Some(rx);
        Ok(())
    }

    /// Waits for the ready line of a spawned process.
    pub fn wait_ready(&mut self, timeout: Duration) -> Result<()> {
        let deadline = Instant::now() + timeout;
        let rx = self.rx.take().context("already ready")?;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    self.lines.push(line.clone());
                    if let Some(v) = line.strip_prefix(&self.ready_prefix) {
                        self.ready = v.trim().to_string();
                        // Keep draining stdout so the node never blocks on a full pipe.
                        std::thread::spawn(move || while rx.recv().is_ok() {});
                        return Ok(());
                    }
                }
                Err(_) => {
                    let status = self.child.as_mut().and_then(|c| c.try_wait().ok().flatten());
                    self.kill();
                    let tail = std::fs::read_to_string(&self.log).unwrap_or_default();
                    let tail: String = tail
                        .lines()
                        .rev()
                        .take(30)
                        .collect::<Vec<_>>()
                        .into_iter()
                        .rev()
                        .collect::<Vec<_>>()
                        .join("\n");
                    return Err(anyhow!(
                        "{} {:?} not ready within {timeout:?} (exit: {status:?}); log tail:\n{tail}",
                        self.bin.display(),
                        self.args
                    ));
                }
            }
        }
    }

    /// The process id.
    pub fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(|c| c.id())
    }

    /// SIGKILL and reap. A FUSE mount the process served is detached, so
    /// no dead mount outlives the test.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
            if let Some(m) = self.mountpoint() {
                detach(&m);
            }
        }
    }

    /// Where the process mounts a filesystem: `strata local --mount DIR`
    /// or `strata fuse ... DIR`.
    fn mountpoint(&self) -> Option<PathBuf> {
        if let Some(i) = self.args.iter().position(|a| a == "--mount") {
            return self.args.get(i + 1).map(PathBuf::from);
        }
        (self.args.first().map(String::as_str) == Some("fuse")).then(|| self.args.last().map(PathBuf::from))?
    }

    /// SIGTERM and wait for exit (SIGKILL after `grace`). Returns whether it exited cleanly.
    pub fn stop(&mut self, grace: Duration) -> bool {
        let Some(mut c) = self.child.take() else {
            return true;
        };
        let _ = signal(c.id(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        loop {
            if let Ok(Some(st)) = c.try_wait() {
                return st.success();
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return false;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// SIGSTOP.
    pub fn pause(&self) -> Result<()> {
        let pid = self.pid().context("not running")?;
        signal(pid, libc::SIGSTOP)?;
        // The signal is delivered asynchronously: wait until every thread
        // has stopped, so the caller's next request meets a frozen process.
        let deadline = Instant::now() + Duration::from_secs(2);
        while Instant::now() < deadline {
            let stopped = std::fs::read_dir(format!("/proc/{pid}/task"))?.flatten().all(|t| {
                std::fs::read_to_string(t.path().join("stat"))
                    .ok()
                    .and_then(|s| s.rsplit_once(')').map(|(_, rest)| rest.trim_start().starts_with('T')))
                    .unwrap_or(true)
            });
            if stopped {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(5));
        }
        bail!("process {pid} did not stop within 2 s")
    }

    /// SIGCONT.
    pub fn resume(&self) -> Result<()> {
        signal(self.pid().context("not running")?, libc::SIGCONT)
    }

    /// Starts the process again without waiting for its ready line (see
    /// [`Node::wait_ready`]): for nodes that only become ready together.
    pub fn respawn(&mut self) -> Result<()> {
        self.kill();
        self.spawn_process()
    }

    /// Starts the process again with the same arguments.
    pub fn restart(&mut self, timeout: Duration) -> Result<()> {
        self.kill();
        self.launch(timeout)
    }

    /// Waits for the process to exit by itself; returns its exit code.
    pub fn wait_exit(&mut self, timeout: Duration) -> Result<Option<i32>> {
        let c = self.child.as_mut().context("not running")?;
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(st) = c.try_wait()? {
                self.child = None;
                return Ok(st.code());
            }
            if Instant::now() > deadline {
                bail!("still running after {timeout:?}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// The value of an earlier stdout line with this prefix.
    pub fn line(&self, prefix: &str) -> Option<String> {
        self.lines.iter().find_map(|l| l.strip_prefix(prefix).map(|v| v.trim().to_string()))
    }

    /// The node's stderr log so far.
    pub fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Lazily unmounts `path` (`umount -l`, the tool keeping this crate free
/// of unsafe); errors (not mounted) are ignored.
fn detach(path: &Path) {
    let _ = Command::new("umount").arg("-l").arg(path).stdout(Stdio::null()).stderr(Stdio::null()).status();
}

/// Arguments for `strata local` in `dir` on free ports with tiers inside `dir`.
pub fn local_args(dir: &Path, mem_bytes: u64, ssd_bytes: u64) -> Vec<String> {
    let d = dir.display();
    vec![
        "local".into(),
        "--data-dir".into(),
        format!("{d}"),
        "--rpc-port".into(),
        free_port().to_string(),
        "--data-port".into(),
        "0".into(),
        "--mesh-port".into(),
        "0".into(),
        "--tier".into(),
        format!("MEM:{d}/mem:{mem_bytes}"),
        "--tier".into(),
        format!("SSD:{d}/ssd:{ssd_bytes}"),
        "--no-mount".into(),
    ]
}

/// Arguments of a master with its own data dir and ports.
fn master_args(dir: &Path, rpc_port: u16, mesh_port: u16, secret: &str) -> Vec<String> {
    let mut a: Vec<String> = vec!["master".into(), "--data-dir".into(), dir.display().to_string()];
    for (flag, value) in [
        ("--rpc-port", rpc_port.to_string()),
        ("--mesh-port", mesh_port.to_string()),
        ("--secret", secret.to_string()),
        ("--worker-lost-timeout-ms", "3000".to_string()),
    ] {
        a.push(flag.into());
        a.push(value);
    }
    a
}

/// Arguments of a worker in `dir` joining the masters' mesh addresses, with the given tiers.
fn worker_args(dir: &Path, masters_mesh: &str, secret: &str, tiers: &[String]) -> Vec<String> {
    let mut a: Vec<String> = vec!["worker".into(), "--data-dir".into(), dir.display().to_string()];
    for (flag, value) in [
        ("--data-port", "0".to_string()),
        ("--mesh-port", "0".to_string()),
        ("--master-mesh", masters_mesh.to_string()),
        ("--secret", secret.to_string()),
        ("--heartbeat-interval-ms", "200".to_string()),
    ] {
        a.push(flag.into());
        a.push(value);
    }
    for t in tiers {
        a.push("--tier".into());
        a.push(t.clone());
    }
    a
}

/// Several masters (one Raft group) and workers, each a process with its own ports and data dir.
pub struct HaCluster {
    /// Masters, in id order (id = index + 1).
    pub masters: Vec<Node>,
    /// Client address of each master.
    pub master_addrs: Vec<String>,
    /// Mesh address of each master.
    pub master_mesh: Vec<String>,
    /// Workers.
    pub workers: Vec<Node>,
    bin: PathBuf,
    root: PathBuf,
    secret: String,
}

impl HaCluster {
    /// Starts `masters` masters and `workers` workers under `root`.
    pub fn start(bin: &Path, root: &Path, masters: usize, workers: usize, secret: &str) -> Result<HaCluster> {
        Self::start_with(bin, root, masters, workers, secret, &[])
    }

    /// Like [`HaCluster::start`], with extra arguments for every master.
    pub fn start_with(
        bin: &Path,
        root: &Path,
        masters: usize,
        workers: usize,
        secret: &str,
        extra_master_args: &[&str],
    ) -> Result<HaCluster> {
        std::fs::create_dir_all(root)?;
        let ports: Vec<(u16, u16)> = (0..masters).map(|_| (free_port(), free_port())).collect();
        let peer = |i: usize| format!("{}=127.0.0.1:{}:{}", i + 1, ports[i].0, ports[i].1);
        let mut nodes = Vec::new();
        for (i, (rpc_port, mesh_port)) in ports.iter().enumerate() {
            let peers: Vec<String> = (0..masters).filter(|j| *j != i).map(peer).collect();
            let mut args = master_args(&root.join(format!("master{}", i + 1)), *rpc_port, *mesh_port, secret);
            args.extend(["--id".to_string(), (i + 1).to_string()]);
            if !peers.is_empty() {
                args.extend(["--peers".to_string(), peers.join(",")]);
            }
            args.extend(extra_master_args.iter().map(|a| a.to_string()));
            nodes.push(Node::spawn(bin, &args, "master: ", &root.join(format!("master{}.log", i + 1)))?);
        }
        for n in nodes.iter_mut() {
            n.wait_ready(Duration::from_secs(60))?;
        }
        let mesh: Vec<String> = ports.iter().map(|(_, m)| format!("127.0.0.1:{m}")).collect();
        let mut ws = Vec::new();
        for i in 0..workers {
            let wdir = root.join(format!("worker{i}"));
            let args = worker_args(&wdir, &mesh.join(","), secret, &[format!("SSD:{}/ssd:4294967296", wdir.display())]);
            ws.push(Node::start(
                bin,
                &args,
                "worker: ",
                &root.join(format!("worker{i}.log")),
                Duration::from_secs(60),
            )?);
        }
        Ok(HaCluster {
            masters: nodes,
            master_addrs: ports.iter().map(|(r, _)| format!("127.0.0.1:{r}")).collect(),
            master_mesh: mesh,
            workers: ws,
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            secret: secret.to_string(),
        })
    }

    /// Starts one more master (id = its index + 1) with `--join`: it
    /// initializes nothing and waits for the leader to add it. Returns its
    /// `ID=HOST:RPC_PORT:MESH_PORT` spec for `strata admin master add`.
    pub fn start_joining_master(&mut self) -> Result<String> {
        let id = self.masters.len() + 1;
        let (rpc_port, mesh_port) = (free_port(), free_port());
        let mut args = master_args(&self.root.join(format!("master{id}")), rpc_port, mesh_port, &self.secret);
        args.extend(["--id".to_string(), id.to_string(), "--join".to_string()]);
        let log = self.root.join(format!("master{id}.log"));
        self.masters.push(Node::start(&self.bin, &args, "master: ", &log, Duration::from_secs(60))?);
        self.master_addrs.push(format!("127.0.0.1:{rpc_port}"));
        self.master_mesh.push(format!("127.0.0.1:{mesh_port}"));
        Ok(format!("{id}=127.0.0.1:{rpc_port}:{mesh_port}"))
    }

    /// Data directory of master `id` (1-based).
    pub fn master_dir(root: &Path, id: u64) -> std::path::PathBuf {
        root.join(format!("master{id}"))
    }

    /// All master client addresses, comma-separated (a client's master list).
    pub fn master_list(&self) -> String {
        self.master_addrs.join(",")
    }
}

/// A master process and worker processes, each with its own ports and data dir.
pub struct Cluster {
    /// The master.
    pub master: Node,
    /// The master's mesh address.
    pub master_mesh: String,
    /// Workers.
    pub workers: Vec<Node>,
    bin: PathBuf,
    root: PathBuf,
    secret: String,
}

impl Cluster {
    /// Starts a master and `workers` workers under `root`.
    pub fn start(bin: &Path, root: &Path, workers: usize, secret: &str) -> Result<Cluster> {
        Self::start_with(bin, root, workers, secret, &[])
    }

    /// As [`Cluster::start`], with more arguments for the master.
    pub fn start_with(bin: &Path, root: &Path, workers: usize, secret: &str, extra: &[&str]) -> Result<Cluster> {
        let mesh_port = free_port();
        let rpc_port = free_port();
        let mut args = master_args(&root.join("master"), rpc_port, mesh_port, secret);
        args.extend(extra.iter().map(|a| a.to_string()));
        std::fs::create_dir_all(root)?;
        let master = Node::start(bin, &args, "master: ", &root.join("master.log"), Duration::from_secs(60))?;
        let mut c = Cluster {
            master,
            master_mesh: format!("127.0.0.1:{mesh_port}"),
            workers: Vec::new(),
            bin: bin.to_path_buf(),
            root: root.to_path_buf(),
            secret: secret.into(),
        };
        for _ in 0..workers {
            let w = c.start_worker(&c.secret.clone())?;
            c.workers.push(w);
        }
        Ok(c)
    }

    /// Arguments of worker number `i` (its own data dir and ports).
    pub fn worker_args(&self, i: usize, secret: &str) -> Vec<String> {
        let wdir = self.root.join(format!("worker{i}"));
        let tiers = [format!("MEM:{}/mem:268435456", wdir.display()), format!("SSD:{}/ssd:4294967296", wdir.display())];
        worker_args(&wdir, &self.master_mesh, secret, &tiers)
    }

    /// Starts one more worker with the given secret (not added to `workers`).
    pub fn start_worker(&self, secret: &str) -> Result<Node> {
        let i = self.workers.len();
        Node::start(
            &self.bin,
            &self.worker_args(i, secret),
            "worker: ",
            &self.root.join(format!("worker{i}.log")),
            Duration::from_secs(60),
        )
    }

    /// The master's client address.
    pub fn master_addr(&self) -> &str {
        &self.master.ready
    }
}
