//! Conformance and real workloads on the FUSE mount of `strata local`:
//! pjdfstest (all tests pass; the skips need a read-only remount or a
//! second filesystem), fsx random operations checked against a model, and
//! the realistic workload script (tar, rsync, git, sqlite WAL, rm -rf),
//! every step byte-exact. `scripts/test.sh` installs pjdfstest and fsx.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::*;
use strata_chaos::{local_args, Node};

fn start_mounted(dir: &Path) -> (Node, PathBuf) {
    let mnt = dir.join("mnt");
    let mut args: Vec<String> = local_args(dir, 512 << 20, 4 << 30).into_iter().filter(|a| a != "--no-mount").collect();
    args.push("--mount".into());
    args.push(mnt.display().to_string());
    let node = Node::start(Path::new(BIN), &args, "mount: ", &dir.join("local.log"), Duration::from_secs(60))
        .expect("strata local mounts (needs root and /dev/fuse)");
    (node, mnt)
}

fn tool(name: &str) -> PathBuf {
    let home = PathBuf::from(std::env::var_os("HOME").expect("HOME"));
    let p = home.join(".cargo/bin").join(name);
    assert!(p.exists(), "{name} is not installed: run scripts/test.sh (it runs `cargo install {name} --locked`)");
    p
}

#[test]
fn pjdfstest_passes() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, mnt) = start_mounted(dir.path());
    let cfg = dir.path().join("pjdfstest.toml");
    std::fs::write(
        &cfg,
        r#"[features]
posix_fallocate = {}
rename_ctime = {}
utime_now = {}
utimensat = {}

[settings]
naptime = 0.05

[dummy_auth]
entries = [["nobody", "nogroup"], ["daemon", "daemon"], ["bin", "bin"]]
"#,
    )
    .unwrap();
    let work = mnt.join("pjd");
    std::fs::create_dir(&work).unwrap();
    let out =
        Command::new(tool("pjdfstest")).arg("-c").arg(&cfg).arg("-p").arg(&work).current_dir(&work).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let summary = text.lines().find(|l| l.starts_with("Summary:")).unwrap_or_else(|| panic!("no summary:\n{text}"));
    eprintln!("pjdfstest: {summary}");
    assert!(summary.contains(" 0 failed"), "{summary}\n{text}");
    let passed: u32 = summary.split(", ").find_map(|p| p.strip_suffix(" passed")).and_then(|n| n.parse().ok()).unwrap();
    assert!(passed >= 380, "{summary}");
}

#[test]
fn fsx_random_operations() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, mnt) = start_mounted(dir.path());
    let ops: u32 = std::env::var("STRATA_FSX_OPS").ok().and_then(|v| v.parse().ok()).unwrap_or(100_000);
    fsx(dir.path(), &mnt.join("fsx.bin"), ops, 42, None);
    // Again with the file closed and reopened every ~30 operations: a
    // reopen of a file over 64 KiB hands the kernel the mount's copy
    // (passthrough), whose reads, writes and mappings then bypass the
    // mount until the next close publishes them.
    let config = dir.path().join("fsx-reopen.toml");
    std::fs::write(&config, "[weights]\nclose_open = 2\ninvalidate = 1\nfsync = 1\nfdatasync = 1\n").unwrap();
    fsx(dir.path(), &mnt.join("fsx-reopen.bin"), ops / 5, 7, Some(&config));
}

/// Runs fsx for `ops` operations on `file` (artifacts in `dir`), with a config file if given.
fn fsx(dir: &Path, file: &Path, ops: u32, seed: u32, config: Option<&Path>) {
    let mut cmd = Command::new(tool("fsx"));
    cmd.args(["-N", &ops.to_string(), "-S", &seed.to_string()]);
    if let Some(c) = config {
        cmd.arg("-f").arg(c);
    }
    let out = cmd.arg("-P").arg(dir).arg(file).output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    let config = config.map_or(String::new(), |c| format!(" ({})", c.display()));
    assert!(out.status.success(), "fsx{config} failed:\n{}", text.lines().take(80).collect::<Vec<_>>().join("\n"));
}

#[test]
fn realistic_workload_is_byte_exact() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, mnt) = start_mounted(dir.path());
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("../bench/workload.sh");
    let out = Command::new("bash")
        .arg(&script)
        .arg(&mnt)
        .arg(dir.path().join("scratch"))
        .env("WORKLOAD_FILES", "2000")
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).into_owned() + &String::from_utf8_lossy(&out.stderr);
    eprintln!("{text}");
    assert!(out.status.success(), "workload failed:\n{text}");
    assert_eq!(std::fs::read_dir(&mnt).unwrap().count(), 0, "rm -rf left nothing behind");
}
