//! The FUSE mount through the kernel: POSIX file operations on a mount of
//! `strata local`, and close-to-open consistency between two mounts of the
//! same cluster (write and close in one, open in the other sees the new
//! bytes and size at once, although both cache attributes for a second).

mod common;

use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::*;
use strata_chaos::{local_args, Node};

fn start_mounted(dir: &Path) -> (Node, std::path::PathBuf) {
    let mnt = dir.join("mnt");
    let mut args: Vec<String> = local_args(dir, 256 << 20, 2 << 30).into_iter().filter(|a| a != "--no-mount").collect();
    args.push("--mount".into());
    args.push(mnt.display().to_string());
    let node = Node::start(Path::new(BIN), &args, "mount: ", &dir.join("local.log"), Duration::from_secs(60))
        .expect("strata local mounts (needs root and /dev/fuse)");
    (node, mnt)
}

/// Asserts equal bytes; on a mismatch says where and shows the node's log.
fn same(node: &Node, got: &[u8], want: &[u8], what: &str) {
    if got == want {
        return;
    }
    let first = got.iter().zip(want).position(|(a, b)| a != b);
    let log = node.log();
    let tail: String = log.lines().rev().take(40).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
    panic!(
        "{what}: got {} bytes, want {}; first differing byte at {first:?}\nnode log tail:\n{tail}",
        got.len(),
        want.len()
    );
}

#[test]
fn posix_operations_through_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let (mut node, m) = start_mounted(dir.path());

    // create, write, read back
    let data = bytes(3 << 20, 5);
    std::fs::write(m.join("f.bin"), &data).unwrap();
    same(&node, &std::fs::read(m.join("f.bin")).unwrap(), &data, "write then read");
    assert_eq!(std::fs::metadata(m.join("f.bin")).unwrap().len(), data.len() as u64);

    // overwrite in place and random writes into the existing file
    let mut expect = data.clone();
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(m.join("f.bin")).unwrap();
        for (off, byte) in [(0u64, 1u8), (1 << 20, 2), (3_000_000, 3), (100, 4)] {
            f.seek(SeekFrom::Start(off)).unwrap();
            f.write_all(&[byte; 4096]).unwrap();
            expect[off as usize..off as usize + 4096].fill(byte);
        }
    }
    same(&node, &std::fs::read(m.join("f.bin")).unwrap(), &expect, "random writes");
    let ino = std::fs::metadata(m.join("f.bin")).unwrap().ino();

    // append
    {
        let mut f = std::fs::OpenOptions::new().append(true).open(m.join("f.bin")).unwrap();
        f.write_all(b"tail").unwrap();
        expect.extend_from_slice(b"tail");
    }
    same(&node, &std::fs::read(m.join("f.bin")).unwrap(), &expect, "append");
    assert_eq!(std::fs::metadata(m.join("f.bin")).unwrap().ino(), ino, "rewrites keep the inode");

    // read at an offset
    {
        let mut f = std::fs::File::open(m.join("f.bin")).unwrap();
        f.seek(SeekFrom::Start(2_000_000)).unwrap();
        let mut buf = vec![0u8; 10_000];
        f.read_exact(&mut buf).unwrap();
        assert!(buf[..] == expect[2_000_000..2_010_000]);
    }

    // truncate down and up (sparse tail reads as zeros)
    let f = std::fs::OpenOptions::new().write(true).open(m.join("f.bin")).unwrap();
    f.set_len(1000).unwrap();
    drop(f);
    assert!(std::fs::read(m.join("f.bin")).unwrap() == expect[..1000]);
    {
        let mut f = std::fs::OpenOptions::new().write(true).open(m.join("f.bin")).unwrap();
        f.seek(SeekFrom::Start(10_000)).unwrap();
        f.write_all(b"end").unwrap();
    }
    let got = std::fs::read(m.join("f.bin")).unwrap();
    assert_eq!(got.len(), 10_003);
    assert!(got[..1000] == expect[..1000] && got[1000..10_000].iter().all(|b| *b == 0) && &got[10_000..] == b"end");

    // O_TRUNC
    std::fs::write(m.join("f.bin"), b"short").unwrap();
    assert_eq!(std::fs::read(m.join("f.bin")).unwrap(), b"short");

    // directories, rename (also over an existing file), readdir
    std::fs::create_dir_all(m.join("a/b/c")).unwrap();
    std::fs::write(m.join("a/b/c/x"), b"x").unwrap();
    std::fs::write(m.join("a/y"), b"y").unwrap();
    std::fs::rename(m.join("a/b/c/x"), m.join("a/y")).unwrap();
    assert_eq!(std::fs::read(m.join("a/y")).unwrap(), b"x");
    std::fs::rename(m.join("a/b"), m.join("moved")).unwrap();
    assert!(m.join("moved/c").is_dir());
    std::fs::write(m.join("moved/c/z"), b"z").unwrap();
    assert_eq!(std::fs::read(m.join("moved/c/z")).unwrap(), b"z", "paths below a renamed dir still resolve");
    let mut names: Vec<String> =
        std::fs::read_dir(&m).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, vec!["a", "f.bin", "moved"]);
    assert_eq!(std::fs::remove_dir(m.join("moved")).unwrap_err().raw_os_error(), Some(libc::ENOTEMPTY));
    assert_eq!(std::fs::remove_file(m.join("a")).unwrap_err().raw_os_error(), Some(libc::EISDIR));
    assert_eq!(std::fs::read(m.join("nope")).unwrap_err().raw_os_error(), Some(libc::ENOENT));

    // symlinks, chmod, chown
    std::os::unix::fs::symlink("f.bin", m.join("link")).unwrap();
    assert_eq!(std::fs::read_link(m.join("link")).unwrap(), Path::new("f.bin"));
    assert_eq!(std::fs::read(m.join("link")).unwrap(), b"short");
    std::fs::set_permissions(m.join("f.bin"), std::fs::Permissions::from_mode(0o600)).unwrap();
    assert_eq!(std::fs::metadata(m.join("f.bin")).unwrap().permissions().mode() & 0o7777, 0o600);
    std::os::unix::fs::chown(m.join("f.bin"), Some(1234), Some(5678)).unwrap();
    let md = std::fs::metadata(m.join("f.bin")).unwrap();
    assert_eq!((md.uid(), md.gid()), (1234, 5678));

    // remove everything
    std::fs::remove_dir_all(m.join("moved")).unwrap();
    std::fs::remove_dir_all(m.join("a")).unwrap();
    std::fs::remove_file(m.join("link")).unwrap();
    std::fs::remove_file(m.join("f.bin")).unwrap();
    assert_eq!(std::fs::read_dir(&m).unwrap().count(), 0);

    // The data is in the cluster: unmount on SIGTERM, restart, it's there.
    std::fs::write(m.join("persist"), b"kept").unwrap();
    assert!(node.stop(Duration::from_secs(20)), "clean stop unmounts");
    assert!(!std::fs::read_to_string("/proc/mounts").unwrap().contains(&m.display().to_string()), "unmounted");
    node.restart(Duration::from_secs(60)).unwrap();
    assert_eq!(std::fs::read(m.join("persist")).unwrap(), b"kept");
}

/// A `strata fuse` mount of `node`'s cluster at `<dir>/mnt-b`.
fn second_mount(dir: &Path, node: &Node) -> (Node, std::path::PathBuf) {
    let master = node.line("master: ").expect("master line");
    let b = dir.join("mnt-b");
    let n = Node::start(
        Path::new(BIN),
        &["fuse".into(), "--master".into(), master, b.display().to_string()],
        "mount: ",
        &dir.join("fuse-b.log"),
        Duration::from_secs(60),
    )
    .unwrap();
    (n, b)
}

#[test]
fn close_to_open_across_two_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let (node_a, a) = start_mounted(dir.path());
    let (_node_b, b) = second_mount(dir.path(), &node_a);

    // Sizes alternate between small files (content kept inline by the
    // master) and bigger ones (blocks); mode and mtime set through the open
    // handle before the close are published with the content.
    for round in 0..6u64 {
        let len = if round % 2 == 0 { 100_000 + round as usize * 7_777 } else { 1_000 + round as usize * 77 };
        let data = bytes(len, round);
        let mode = 0o600 + (round as u32 % 3) * 0o10;
        let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000 + round * 1000);
        {
            let mut f = std::fs::File::create(a.join("shared")).unwrap();
            f.write_all(&data).unwrap();
            f.set_permissions(std::fs::Permissions::from_mode(mode)).unwrap();
            f.set_modified(mtime).unwrap();
        } // closed here
          // Open in the other mount: size (fstat after open), bytes, mode and mtime are the new ones.
        let mut f = std::fs::File::open(b.join("shared")).unwrap();
        let md = f.metadata().unwrap();
        assert_eq!(md.len(), data.len() as u64, "round {round}: size seen by the other mount");
        assert_eq!(md.mode() & 0o7777, mode, "round {round}: mode seen by the other mount");
        assert_eq!(md.modified().unwrap(), mtime, "round {round}: mtime seen by the other mount");
        let mut got = Vec::new();
        f.read_to_end(&mut got).unwrap();
        assert!(got == data, "round {round}: bytes seen by the other mount");
    }
    // Same-size rewrites: the other mount keeps its cached pages across
    // read-only opens only while the file is unchanged, also when it saw
    // the new attributes first through a stat (after the attribute TTL).
    for (round, len) in [(10u64, 3_000usize), (11, 200_000)] {
        std::fs::write(a.join("same"), bytes(len, round)).unwrap();
        assert!(std::fs::read(b.join("same")).unwrap() == bytes(len, round));
        assert!(std::fs::read(b.join("same")).unwrap() == bytes(len, round), "kept pages, unchanged file");
        std::thread::sleep(Duration::from_millis(5));
        std::fs::write(a.join("same"), bytes(len, round + 100)).unwrap();
        assert!(std::fs::read(b.join("same")).unwrap() == bytes(len, round + 100), "{len}: reopened after a rewrite");
        std::thread::sleep(Duration::from_millis(5));
        std::fs::write(a.join("same"), bytes(len, round + 200)).unwrap();
        std::thread::sleep(Duration::from_millis(1100));
        let _ = std::fs::metadata(b.join("same")).unwrap();
        assert!(std::fs::read(b.join("same")).unwrap() == bytes(len, round + 200), "{len}: stat, then reopened");
    }
    // And the other direction.
    std::fs::write(b.join("back"), b"from b").unwrap();
    assert_eq!(std::fs::read(a.join("back")).unwrap(), b"from b");
}

/// Unlinks of files the mount has no handle open on are queued (one journal
/// entry per batch): the mount still reads its own removals at once (a
/// listing, a stat of the name or of the parent's times, a re-create of the
/// name), an rmdir waits for its children's, and after an fsync of the
/// directory another mount sees them all.
#[test]
fn queued_unlinks_are_read_back_and_reach_other_mounts() {
    let dir = tempfile::tempdir().unwrap();
    let (node_a, a) = start_mounted(dir.path());
    let (_node_b, b) = second_mount(dir.path(), &node_a);
    let names = |p: &Path| {
        let mut v: Vec<String> =
            std::fs::read_dir(p).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
        v.sort();
        v
    };
    let d = a.join("q");
    std::fs::create_dir(&d).unwrap();
    for i in 0..300 {
        std::fs::write(d.join(format!("f{i:03}")), format!("file {i}")).unwrap();
    }
    std::fs::create_dir(d.join("sub")).unwrap();
    std::fs::write(d.join("sub/x"), b"x").unwrap();
    assert_eq!(names(&b.join("q")).len(), 301, "the other mount sees every file");
    let before = std::fs::metadata(&d).unwrap().modified().unwrap();
    std::thread::sleep(Duration::from_millis(20));
    for i in (0..300).step_by(2) {
        std::fs::remove_file(d.join(format!("f{i:03}"))).unwrap();
    }
    // Read back in the same mount, right away.
    let left = names(&d);
    assert_eq!(left.len(), 151, "{left:?}");
    assert!(left.iter().all(|n| n == "sub" || n[1..].parse::<u32>().unwrap() % 2 == 1));
    assert!(!d.join("f000").exists());
    assert!(std::fs::metadata(&d).unwrap().modified().unwrap() > before, "the parent's mtime moved");
    std::fs::write(d.join("f000"), b"again").unwrap();
    assert_eq!(std::fs::read(d.join("f000")).unwrap(), b"again");
    // rm -rf of a subtree: the rmdir waits for the unlinks under it.
    std::fs::remove_dir_all(d.join("sub")).unwrap();
    assert!(!d.join("sub").exists());
    // After an fsync of the directory, the other mount sees all of it.
    std::fs::File::open(&d).unwrap().sync_all().unwrap();
    let seen = names(&b.join("q"));
    assert_eq!(seen.len(), 151, "{seen:?}");
    assert!(seen.contains(&"f000".to_string()) && seen.contains(&"f299".to_string()));
    assert_eq!(std::fs::read(b.join("q/f000")).unwrap(), b"again");
    // (Its kernel may keep a name it listed for the entry TTL; an open asks the master.)
    assert!(std::fs::File::open(b.join("q/f002")).is_err());
    assert!(std::fs::read_dir(b.join("q/sub")).is_err());
}

/// chmod, utimes and renames of files the mount knows are queued and ride
/// on the next create or close: the mount answers at once with what the
/// master will record (the same ctime), later requests see them, and after
/// an fsync another mount sees exactly that.
#[test]
fn queued_attribute_changes_and_renames_reach_other_mounts() {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    let dir = tempfile::tempdir().unwrap();
    let (node_a, a) = start_mounted(dir.path());
    let (_node_b, b) = second_mount(dir.path(), &node_a);
    let d = a.join("r");
    std::fs::create_dir(&d).unwrap();
    let mtime = std::time::UNIX_EPOCH + Duration::from_secs(1_000_000);
    // rsync's pattern: write a temporary name, set its times and mode,
    // rename it into place (over an existing file every third time).
    for i in 0..60 {
        let name = format!("f{i:02}");
        if i % 3 == 0 {
            std::fs::write(d.join(&name), b"old").unwrap();
        }
        let tmp = d.join(format!(".{name}.tmp"));
        std::fs::write(&tmp, format!("new {i}")).unwrap();
        std::fs::set_permissions(&tmp, std::fs::Permissions::from_mode(0o600 + i % 8)).unwrap();
        std::fs::File::options().write(true).open(&tmp).unwrap().set_modified(mtime).unwrap();
        std::fs::rename(&tmp, d.join(&name)).unwrap();
        // Read back right away in this mount.
        let m = std::fs::metadata(d.join(&name)).unwrap();
        assert_eq!((m.mode() & 0o7777, m.modified().unwrap()), (0o600 + i % 8, mtime), "{name}");
        assert!(!tmp.exists());
    }
    // A chmod of a directory, and a rename chain a -> b, c -> a.
    std::fs::set_permissions(&d, std::fs::Permissions::from_mode(0o750)).unwrap();
    std::fs::write(d.join("a"), b"A").unwrap();
    std::fs::write(d.join("c"), b"C").unwrap();
    std::fs::rename(d.join("a"), d.join("b")).unwrap();
    std::fs::rename(d.join("c"), d.join("a")).unwrap();
    assert_eq!(std::fs::read(d.join("a")).unwrap(), b"C");
    assert_eq!(std::fs::read(d.join("b")).unwrap(), b"A");
    // A chmod last: the ctime the mount answered is the one the master records.
    std::fs::set_permissions(d.join("b"), std::fs::Permissions::from_mode(0o604)).unwrap();
    let here: Vec<(String, u32, i64, i64)> = (0..60)
        .map(|i| format!("f{i:02}"))
        .chain(["a".to_string(), "b".to_string()])
        .map(|name| {
            let m = std::fs::metadata(d.join(&name)).unwrap();
            (name, m.mode() & 0o7777, m.mtime(), m.ctime_nsec() / 1_000_000 + m.ctime() * 1000)
        })
        .collect();
    std::fs::File::open(&d).unwrap().sync_all().unwrap();
    // The other mount: same names, modes, times and ctimes; nothing else.
    let br = b.join("r");
    let mut names: Vec<String> =
        std::fs::read_dir(&br).unwrap().map(|e| e.unwrap().file_name().to_string_lossy().into_owned()).collect();
    names.sort();
    assert_eq!(names.len(), 62, "{names:?}");
    assert!(names.iter().all(|n| !n.ends_with(".tmp")), "{names:?}");
    for (name, mode, mt, ct) in &here {
        let m = std::fs::metadata(br.join(name)).unwrap();
        let ctime = m.ctime_nsec() / 1_000_000 + m.ctime() * 1000;
        assert_eq!((m.mode() & 0o7777, m.mtime(), ctime), (*mode, *mt, *ct), "{name}");
        if let Ok(i) = name[1..].parse::<u32>() {
            assert_eq!(std::fs::read(br.join(name)).unwrap(), format!("new {i}").as_bytes());
        }
    }
    assert_eq!(std::fs::metadata(br.join("b")).unwrap().mode() & 0o7777, 0o604);
    assert_eq!(std::fs::metadata(&br).unwrap().mode() & 0o7777, 0o750);
    assert_eq!(std::fs::read(br.join("a")).unwrap(), b"C");
    assert_eq!(std::fs::read(br.join("b")).unwrap(), b"A");
}

/// The mount(8) helper mounts in the background and returns once the mount
/// is up; a plain `umount` stops its `strata fuse` process.
#[test]
fn mount_helper_and_umount() {
    let dir = tempfile::tempdir().unwrap();
    let node = strata_chaos::Node::start(
        Path::new(BIN),
        &local_args(dir.path(), 64 << 20, 1 << 30),
        "master: ",
        &dir.path().join("local.log"),
        Duration::from_secs(60),
    )
    .unwrap();
    let mnt = dir.path().join("helper-mnt");
    std::fs::create_dir_all(&mnt).unwrap();
    let helper = Path::new(env!("CARGO_MANIFEST_DIR")).join("../scripts/mount.fuse.strata");
    let st = std::process::Command::new(&helper)
        .arg(&node.ready)
        .arg(&mnt)
        .args(["-o", "rw"])
        .env("STRATA_BIN", BIN)
        .env("STRATA_FUSE_LOG", dir.path().join("helper.log"))
        .status()
        .unwrap();
    assert!(st.success());
    std::fs::write(mnt.join("x"), b"via helper").unwrap();
    assert_eq!(std::fs::read(mnt.join("x")).unwrap(), b"via helper");
    let st = std::process::Command::new("umount").arg(&mnt).status().unwrap();
    assert!(st.success());
    // The background `strata fuse` notices and exits.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let ps = std::process::Command::new("pgrep")
            .args(["-f", &format!("fuse --master {} {}", node.ready, mnt.display())])
            .output()
            .unwrap();
        if ps.stdout.is_empty() {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "strata fuse still running after umount");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// Extended attributes through the kernel, kept by the master: set, get,
/// list, create-only and replace-only flags, remove, on files and
/// directories; a file's attributes go with it when it is deleted.
#[test]
fn xattrs_through_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let (_node, m) = start_mounted(dir.path());
    std::fs::write(m.join("f"), b"x").unwrap();
    std::fs::create_dir(m.join("d")).unwrap();
    let script = r#"
import errno, os, sys
m = sys.argv[1]
for p in (m + "/f", m + "/d"):
    os.setxattr(p, "user.a", b"one")
    os.setxattr(p, "user.b", b"\x00" * 3000)
    assert os.getxattr(p, "user.a") == b"one"
    assert os.getxattr(p, "user.b") == b"\x00" * 3000
    assert sorted(os.listxattr(p)) == ["user.a", "user.b"], os.listxattr(p)
    for call, code in ((lambda: os.setxattr(p, "user.a", b"x", os.XATTR_CREATE), errno.EEXIST),
                       (lambda: os.setxattr(p, "user.c", b"x", os.XATTR_REPLACE), errno.ENODATA),
                       (lambda: os.getxattr(p, "user.c"), errno.ENODATA)):
        try:
            call(); raise SystemExit(f"{p}: expected errno {code}")
        except OSError as e:
            assert e.errno == code, (p, e)
    os.setxattr(p, "user.a", b"two", os.XATTR_REPLACE)
    assert os.getxattr(p, "user.a") == b"two"
    os.removexattr(p, "user.b")
    assert os.listxattr(p) == ["user.a"]
os.unlink(m + "/f")
open(m + "/f", "wb").close()
assert os.listxattr(m + "/f") == [], "a new file under the old name has no attributes"
print("ok")
"#;
    let out = std::process::Command::new("python3").arg("-c").arg(script).arg(&m).output().unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// A directory made through a mount is leased to it: what it does below
/// (creates, mkdirs, small-file writes, unlinks, renames, rmdirs) is
/// answered there and queued. Another mount's first look recalls the
/// lease: it waits until the holder has sent everything, then sees exactly
/// what the holder saw (names, bytes, inode numbers, times), without any
/// fsync. After the recall the holder asks the master again, so it sees
/// the other mount's changes too.
#[test]
fn a_leased_tree_is_handed_over_to_another_mount() {
    let dir = tempfile::tempdir().unwrap();
    let (node_a, a) = start_mounted(dir.path());
    let (_node_b, b) = second_mount(dir.path(), &node_a);
    std::fs::create_dir(a.join("t")).unwrap();
    std::fs::create_dir(a.join("t/sub")).unwrap();
    for i in 0..50u64 {
        std::fs::write(a.join(format!("t/sub/f{i}")), bytes(100 + i as usize * 37, i)).unwrap();
    }
    // Bigger than inline: written as blocks, after the queued create.
    std::fs::write(a.join("t/big"), bytes(300_000, 99)).unwrap();
    std::fs::remove_file(a.join("t/sub/f0")).unwrap();
    std::fs::rename(a.join("t/sub/f1"), a.join("t/sub/g1")).unwrap();
    std::fs::create_dir(a.join("t/gone")).unwrap();
    std::fs::write(a.join("t/gone/x"), b"x").unwrap();
    std::fs::remove_file(a.join("t/gone/x")).unwrap();
    std::fs::remove_dir(a.join("t/gone")).unwrap();
    assert!(std::fs::create_dir(a.join("t/sub")).is_err_and(|e| e.kind() == std::io::ErrorKind::AlreadyExists));
    assert!(std::fs::remove_dir(a.join("t/sub")).is_err(), "not empty");
    let in_a = |name: &str| std::fs::metadata(a.join(name)).unwrap();
    let f2 = in_a("t/sub/f2");

    let mut names: Vec<String> =
        std::fs::read_dir(b.join("t/sub")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    let mut want: Vec<String> = (2..50).map(|i| format!("f{i}")).chain(["g1".to_string()]).collect();
    want.sort();
    assert_eq!(names, want);
    for i in 2..50u64 {
        same(&node_a, &std::fs::read(b.join(format!("t/sub/f{i}"))).unwrap(), &bytes(100 + i as usize * 37, i), "f");
    }
    same(&node_a, &std::fs::read(b.join("t/sub/g1")).unwrap(), &bytes(137, 1), "g1");
    same(&node_a, &std::fs::read(b.join("t/big")).unwrap(), &bytes(300_000, 99), "big");
    assert!(!b.join("t/gone").exists());
    let seen = std::fs::metadata(b.join("t/sub/f2")).unwrap();
    assert_eq!(
        (seen.ino(), seen.len(), seen.mode(), seen.mtime_nsec(), seen.mtime(), seen.ctime(), seen.ctime_nsec()),
        (f2.ino(), f2.len(), f2.mode(), f2.mtime_nsec(), f2.mtime(), f2.ctime(), f2.ctime_nsec()),
        "the holder's answer is what the master recorded"
    );

    // The other way: the holder no longer answers for the tree itself.
    std::fs::write(b.join("t/sub/from_b"), b"b").unwrap();
    std::fs::remove_file(b.join("t/sub/f2")).unwrap();
    assert_eq!(std::fs::read(a.join("t/sub/from_b")).unwrap(), b"b");
    std::thread::sleep(Duration::from_millis(1100)); // the kernel's own entry cache
    assert!(!a.join("t/sub/f2").exists(), "removed by the other mount");
}

/// Set-id bits and file capabilities are dropped by the mount (the kernel
/// leaves it to the filesystem) exactly as a local filesystem drops them:
/// the same chowns, writes and truncates, by root and by another user, on
/// a plain directory and on the mount end in the same modes and capabilities.
#[test]
fn privileges_are_dropped_as_on_a_local_filesystem() {
    use std::os::unix::process::CommandExt;
    let dir = tempfile::tempdir().unwrap();
    let (_node, m) = start_mounted(dir.path());
    let local = dir.path().join("local");
    std::fs::create_dir(&local).unwrap();
    let run = |d: &Path| -> Vec<String> {
        let sh = |uid: u32, cmd: &str| {
            let st = std::process::Command::new("sh").arg("-c").arg(cmd).current_dir(d).uid(uid).gid(uid).status();
            assert!(st.unwrap().success(), "{cmd} as {uid}");
        };
        let file = |name: &str, mode: u32| {
            std::fs::write(d.join(name), b"0123456789").unwrap();
            std::fs::set_permissions(d.join(name), std::fs::Permissions::from_mode(mode)).unwrap();
        };
        file("chown-suid", 0o6755);
        std::os::unix::fs::chown(d.join("chown-suid"), Some(1000), Some(1000)).unwrap();
        file("chown-sgid-noexec", 0o2745);
        std::os::unix::fs::chown(d.join("chown-sgid-noexec"), Some(1000), None).unwrap();
        file("write-other", 0o6777);
        sh(1000, "echo x >> write-other");
        file("write-root", 0o6777);
        sh(0, "echo x >> write-root");
        file("trunc-other", 0o6777);
        sh(1000, "truncate -s 3 trunc-other");
        file("caps-write", 0o755);
        sh(0, "setcap cap_net_raw+ep caps-write && echo x >> caps-write");
        file("caps-kept", 0o755);
        sh(0, "setcap cap_net_raw+ep caps-kept && cat caps-kept >/dev/null");
        std::fs::create_dir(d.join("dir")).unwrap();
        std::fs::set_permissions(d.join("dir"), std::fs::Permissions::from_mode(0o2775)).unwrap();
        std::os::unix::fs::chown(d.join("dir"), Some(1000), None).unwrap();
        let mut names: Vec<String> =
            std::fs::read_dir(d).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
        names.sort();
        names
            .iter()
            .map(|n| {
                let md = std::fs::metadata(d.join(n)).unwrap();
                let caps = std::process::Command::new("getcap").arg(d.join(n)).output().unwrap().stdout;
                let caps = String::from_utf8_lossy(&caps).split_whitespace().skip(1).collect::<Vec<_>>().join(" ");
                let len = if md.is_dir() { 0 } else { md.len() };
                format!("{n} {:o} {} {len} [{caps}]", md.mode() & 0o7777, md.uid())
            })
            .collect()
    };
    let want = run(&local);
    // The oracle itself: chown drops set-uid, and set-gid with group exec.
    assert!(want.contains(&"chown-suid 755 1000 10 []".to_string()), "{want:#?}");
    assert!(want.contains(&"write-root 6777 0 12 []".to_string()), "{want:#?}");
    assert!(want.contains(&"caps-kept 755 0 10 [cap_net_raw=ep]".to_string()), "{want:#?}");
    assert_eq!(run(&m), want);
}

/// A mount holding a directory's lease lets the kernel keep the names it
/// found absent there as negative entries; another mount creating one of
/// them recalls the lease, and the holder's kernel forgets them before the
/// create goes ahead: the holder sees the new file, directory or link at once.
#[test]
fn names_found_absent_under_a_lease_appear_when_another_mount_makes_them() {
    let dir = tempfile::tempdir().unwrap();
    let (node_a, a) = start_mounted(dir.path());
    let (_node_b, b) = second_mount(dir.path(), &node_a);
    for round in 0..4u64 {
        let d = format!("d{round}");
        std::fs::create_dir(a.join(&d)).unwrap(); // leased to a
        for name in ["f", "sub", "ln"] {
            for _ in 0..2 {
                assert!(!a.join(&d).join(name).exists(), "round {round}: {name} not there yet");
            }
        }
        let data = bytes(500 + round as usize * 1000, round);
        match round % 3 {
            0 => std::fs::write(b.join(&d).join("f"), &data).unwrap(),
            1 => std::fs::create_dir(b.join(&d).join("sub")).unwrap(),
            _ => std::os::unix::fs::symlink("f", b.join(&d).join("ln")).unwrap(),
        }
        match round % 3 {
            0 => same(&node_a, &std::fs::read(a.join(&d).join("f")).unwrap(), &data, "made by the other mount"),
            1 => assert!(a.join(&d).join("sub").is_dir(), "round {round}: directory made by the other mount"),
            _ => assert_eq!(std::fs::read_link(a.join(&d).join("ln")).unwrap(), Path::new("f"), "round {round}"),
        }
        assert!(!a.join(&d).join("f").exists() || round % 3 == 0, "round {round}: only what b made");
    }
}

/// A holder that stops answering (SIGSTOP) holds nobody up for longer than
/// the lease time: the other mount waits it out, then goes ahead. What the
/// holder sent before stopping is there; resumed, it sees the other's changes.
#[test]
fn a_stopped_holder_loses_its_lease() {
    let dir = tempfile::tempdir().unwrap();
    let (node, a) = start_mounted(dir.path());
    // The holder is the separate `strata fuse` process (the other mount
    // shares its process with the master).
    let (holder, h) = second_mount(dir.path(), &node);
    std::fs::create_dir(h.join("held")).unwrap();
    std::fs::write(h.join("held/one"), b"1").unwrap();
    std::fs::File::open(h.join("held")).unwrap().sync_all().unwrap();
    holder.pause().unwrap();
    let t0 = std::time::Instant::now();
    let names: Vec<String> =
        std::fs::read_dir(a.join("held")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    let waited = t0.elapsed();
    std::fs::write(a.join("held/two"), b"2").unwrap();
    holder.resume().unwrap();
    assert_eq!(names, vec!["one".to_string()]);
    assert!(waited < Duration::from_secs(8), "waited {waited:?} for a stopped holder");
    std::thread::sleep(Duration::from_millis(1100));
    assert_eq!(std::fs::read(h.join("held/two")).unwrap(), b"2");
}

/// A file over 64 KiB written through a mount is kept there as a local
/// copy after close; later opens that find the file unchanged hand the
/// copy to the kernel (FUSE passthrough), which reads and writes it
/// without the mount. Writes made that way are published at close like
/// any other; another mount's change makes the copy stale; a mapping
/// outlives its file's close and every later write of other files.
#[test]
fn copies_of_written_files_are_read_and_written_by_the_kernel() {
    let dir = tempfile::tempdir().unwrap();
    let (node_a, a) = start_mounted(dir.path());
    let (_node_b, b) = second_mount(dir.path(), &node_a);
    std::fs::create_dir(a.join("d")).unwrap(); // leased to mount a
    let big = bytes(300_000, 1);
    std::fs::write(a.join("d/big"), &big).unwrap();
    std::fs::write(a.join("top"), bytes(200_000, 2)).unwrap(); // not under a lease
    same(&node_a, &std::fs::read(a.join("d/big")).unwrap(), &big, "re-read of a written file");
    same(&node_a, &std::fs::read(a.join("top")).unwrap(), &bytes(200_000, 2), "re-read, no lease");

    // Written in place through an open of the copy: the size is right
    // before the close, and the other mount sees the bytes after it.
    let mut want = big.clone();
    {
        let mut f = std::fs::OpenOptions::new().read(true).write(true).open(a.join("d/big")).unwrap();
        f.seek(SeekFrom::Start(1000)).unwrap();
        f.write_all(b"written in place").unwrap();
        f.seek(SeekFrom::End(0)).unwrap();
        f.write_all(&[7u8; 5000]).unwrap();
        assert_eq!(f.metadata().unwrap().len(), 305_000, "size while open");
        want[1000..1016].copy_from_slice(b"written in place");
        want.extend_from_slice(&[7u8; 5000]);
    }
    assert_eq!(std::fs::metadata(a.join("d/big")).unwrap().len(), 305_000);
    same(&node_a, &std::fs::read(b.join("d/big")).unwrap(), &want, "other mount after an in-place write");
    same(&node_a, &std::fs::read(a.join("d/big")).unwrap(), &want, "own re-read after the recall");

    // Another mount's rewrite (same size) makes the copy stale.
    for (name, len) in [("d/big", 305_000usize), ("top", 200_000)] {
        std::fs::write(b.join(name), bytes(len, 9)).unwrap();
        same(&node_a, &std::fs::read(a.join(name)).unwrap(), &bytes(len, 9), "after the other mount's rewrite");
    }

    // A copy held open by a reader here is refilled when another mount
    // rewrote the file: a new open sees the new bytes.
    std::fs::write(a.join("held"), bytes(150_000, 4)).unwrap();
    std::thread::sleep(Duration::from_millis(300)); // the release of the write's handle
    let mut holder = std::fs::File::open(a.join("held")).unwrap();
    let mut first = vec![0u8; 10];
    holder.read_exact(&mut first).unwrap();
    std::fs::write(b.join("held"), bytes(150_000, 5)).unwrap();
    same(
        &node_a,
        &std::fs::read(a.join("held")).unwrap(),
        &bytes(150_000, 5),
        "reopened while a reader holds the copy",
    );
    drop(holder);

    // A mapping of a copy read after its close, once many other files
    // were written, rewritten and removed meanwhile, still has its bytes.
    std::fs::write(a.join("mapped"), bytes(400_000, 3)).unwrap();
    std::fs::write(a.join("mapped2"), bytes(400_000, 3)).unwrap();
    let script = r#"
import ctypes, os, sys, time
m = sys.argv[1]
want = open(sys.argv[2], "rb").read()
libc = ctypes.CDLL(None, use_errno=True)
libc.mmap.restype = ctypes.c_void_p
libc.mmap.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int, ctypes.c_int, ctypes.c_int, ctypes.c_long]
def mapped(path, unlink=False):
    # Not Python's mmap: it keeps a duplicate of the descriptor open.
    fd = os.open(path, os.O_RDONLY)
    n = os.fstat(fd).st_size
    p = libc.mmap(None, n, 1, 1, fd, 0)  # PROT_READ, MAP_SHARED
    assert p is not None and p != ctypes.c_void_p(-1).value, ctypes.get_errno()
    if unlink:
        os.unlink(path)
    os.close(fd)
    return lambda: ctypes.string_at(p, n)
# The releases of the writes' handles come in the background; an open
# while one is pending joins its mode (through the mount, not passthrough).
time.sleep(0.5)
mm = mapped(m + "/mapped")
mm2 = mapped(m + "/mapped2", unlink=True)  # its bytes live on in the mapping alone
time.sleep(0.5)  # the releases again
for i in range(40):
    data = bytes([i]) * (70_000 + i * 1000)
    with open(f"{m}/other{i % 5}", "wb") as f:
        f.write(data)
    assert open(f"{m}/other{i % 5}", "rb").read() == data
    if i % 7 == 0:
        os.unlink(f"{m}/other{i % 5}")
assert mm() == want, "the mapping changed"
assert mm2() == want, "the mapping of the unlinked file changed"
print("ok")
"#;
    std::fs::write(dir.path().join("want"), bytes(400_000, 3)).unwrap();
    let out = std::process::Command::new("python3")
        .arg("-c")
        .arg(script)
        .arg(&a)
        .arg(dir.path().join("want"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr));
}

/// The ids of the block files on the local node's tiers.
fn block_files(dir: &Path) -> std::collections::BTreeSet<u64> {
    ["mem", "ssd"]
        .iter()
        .filter_map(|t| std::fs::read_dir(dir.join(t)).ok())
        .flatten()
        .filter_map(|e| {
            let name = e.ok()?.file_name().into_string().ok()?;
            u64::from_str_radix(name.strip_suffix(".blk")?, 16).ok()
        })
        .collect()
}

/// An fsync writes only the blocks that changed since the last one: a
/// small file made durable gets 1 MiB blocks, and while the mount holds
/// the lease over it, each later fsync keeps the blocks nothing touched
/// (an overwrite, an append, a hole, a truncate: 9 blocks written in all
/// where rewriting the whole file would write 21). Another mount reads
/// the content byte-exact; after that handover (the lease recalled) an
/// fsync rewrites every block, and the other mount still reads it exactly.
#[test]
fn fsync_writes_only_the_blocks_that_changed() {
    use std::os::unix::fs::FileExt;
    const MIB: usize = 1 << 20;
    let dir = tempfile::tempdir().unwrap();
    let (node, a) = start_mounted(dir.path());
    std::fs::create_dir(a.join("db")).unwrap();
    let mut f = std::fs::OpenOptions::new().read(true).write(true).create_new(true).open(a.join("db/f")).unwrap();
    let mut model = bytes(3 * MIB + MIB / 2, 7);
    let mut seen = std::collections::BTreeSet::new();
    let mut step = |f: &std::fs::File, model: &[u8], what: &str| {
        f.sync_all().unwrap();
        seen.extend(block_files(dir.path()));
        let mut got = vec![0u8; model.len() + 1];
        let n = f.read_at(&mut got, 0).unwrap();
        same(&node, &got[..n], model, what);
    };
    f.write_all(&model).unwrap();
    step(&f, &model, "first fsync: 4 blocks");
    f.write_all_at(&[9u8; 100], (MIB + MIB / 2) as u64).unwrap();
    model[MIB + MIB / 2..MIB + MIB / 2 + 100].fill(9);
    step(&f, &model, "an overwrite in block 1");
    let tail = bytes(MIB / 2, 8);
    f.write_all_at(&tail, model.len() as u64).unwrap();
    model.extend_from_slice(&tail);
    step(&f, &model, "an append filling block 3");
    f.set_len((5 * MIB + 10) as u64).unwrap();
    model.resize(5 * MIB + 10, 0);
    step(&f, &model, "a hole: blocks 4 and 5");
    f.set_len((2 * MIB + 1000) as u64).unwrap();
    model.truncate(2 * MIB + 1000);
    f.write_all_at(b"tail", (2 * MIB + 500) as u64).unwrap();
    model[2 * MIB + 500..2 * MIB + 504].copy_from_slice(b"tail");
    step(&f, &model, "a truncate into block 2");
    assert_eq!(seen.len(), 4 + 1 + 1 + 2 + 1, "blocks written: {seen:?}");

    let (_node_b, b) = second_mount(dir.path(), &node);
    same(&node, &std::fs::read(b.join("db/f")).unwrap(), &model, "read by another mount");
    f.write_all_at(&[5u8; 10], 10).unwrap();
    model[10..20].fill(5);
    f.sync_all().unwrap();
    drop(f);
    same(&node, &std::fs::read(b.join("db/f")).unwrap(), &model, "rewritten after the handover");
}

/// Locks taken through one mount hold against the other (each mount is
/// a client of the master's lock table, as two hosts would be): byte
/// ranges, F_GETLK, a waiting F_SETLKW that the holder's unlock or close
/// lets through, a wait a signal interrupts, `flock` with a holder
/// killed, and a stopped holder mount whose locks lapse.
#[test]
fn locks_hold_across_mounts() {
    use libc::{EAGAIN, F_GETLK, F_RDLCK, F_SETLK, F_SETLKW, F_UNLCK, F_WRLCK};
    let dir = tempfile::tempdir().unwrap();
    let (node, a) = start_mounted(dir.path());
    let (holder, b) = second_mount(dir.path(), &node);
    std::fs::write(a.join("db"), vec![7u8; 4096]).unwrap();
    let rw = |p: &Path| std::fs::OpenOptions::new().read(true).write(true).open(p).unwrap();
    let (fa, fb) = (rw(&a.join("db")), rw(&b.join("db")));

    fcntl_lock(&fa, F_SETLK, F_WRLCK, 0, 100).unwrap();
    let e = fcntl_lock(&fb, F_SETLK, F_WRLCK, 50, 10).unwrap_err();
    assert_eq!(e.raw_os_error(), Some(EAGAIN), "a write lock in a range the other mount holds");
    fcntl_lock(&fb, F_SETLK, F_RDLCK, 100, 100).unwrap();
    let l = fcntl_lock(&fb, F_GETLK, F_RDLCK, 0, 0).unwrap();
    assert_eq!((l.l_type as i32, l.l_start, l.l_len), (F_WRLCK, 0, 100), "F_GETLK names the holder's range");
    assert_eq!(l.l_pid as u32, std::process::id());
    // Read locks share; the holder may read-lock what b read-locked.
    fcntl_lock(&fa, F_SETLK, F_RDLCK, 150, 10).unwrap();
    assert_eq!(fcntl_lock(&fa, F_GETLK, F_RDLCK, 100, 100).unwrap().l_type as i32, F_UNLCK);

    // A waiting lock goes through once the holder unlocks.
    std::thread::scope(|s| {
        let waiter = s.spawn(|| fcntl_lock(&fb, F_SETLKW, F_WRLCK, 0, 10).map(|_| ()));
        std::thread::sleep(Duration::from_millis(700));
        assert!(!waiter.is_finished(), "F_SETLKW waits while the other mount holds the range");
        let t0 = std::time::Instant::now();
        fcntl_lock(&fa, F_SETLK, F_UNLCK, 0, 0).unwrap();
        waiter.join().unwrap().unwrap();
        assert!(t0.elapsed() < Duration::from_secs(2), "let through {:?} after the unlock", t0.elapsed());
    });
    // A wait that would close a cycle (b waits for a, a for b) is EDEADLK.
    fcntl_lock(&fa, F_SETLK, F_WRLCK, 200, 10).unwrap();
    // (Threads of their own, so a wait left in a cycle fails the test
    // instead of hanging it; they share the descriptors, as a close of
    // any would drop the process's locks.)
    let (fa, fb) = (std::sync::Arc::new(fa), std::sync::Arc::new(fb));
    let lock_in_thread = |f: &std::sync::Arc<std::fs::File>, start| {
        let (f, (tx, rx)) = (f.clone(), std::sync::mpsc::channel());
        std::thread::spawn(move || {
            let r = fcntl_lock(&f, F_SETLKW, F_WRLCK, start, 10).map(|_| ());
            drop(f);
            tx.send(r)
        });
        rx
    };
    let b_waits = lock_in_thread(&fb, 200);
    std::thread::sleep(Duration::from_millis(300));
    let a_waits = lock_in_thread(&fa, 0);
    // Whichever reached the leader second closed the cycle (a loaded
    // machine may delay b's): it is answered EDEADLK, the other waits on.
    let t0 = std::time::Instant::now();
    let (refused, e, other) = loop {
        if let Ok(r) = a_waits.try_recv() {
            break (&fa, r.unwrap_err(), b_waits);
        }
        if let Ok(r) = b_waits.try_recv() {
            break (&fb, r.unwrap_err(), a_waits);
        }
        assert!(t0.elapsed() < Duration::from_secs(5), "a cycle of waits was not found");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(e.raw_os_error(), Some(libc::EDEADLK), "{e}");
    assert!(other.try_recv().is_err(), "the other wait goes on");
    // The refused owner gives up what the other waits for.
    let held = if std::sync::Arc::ptr_eq(refused, &fa) { 200 } else { 0 };
    fcntl_lock(refused, F_SETLK, F_UNLCK, held, 10).unwrap();
    other.recv_timeout(Duration::from_secs(5)).unwrap().unwrap();
    // As before the cycle: fb holds 0..=9.
    if held == 0 {
        fcntl_lock(&fa, F_SETLK, F_UNLCK, 0, 10).unwrap();
        fcntl_lock(&fb, F_SETLK, F_WRLCK, 0, 10).unwrap();
    }
    // Closing any descriptor of the file drops the process's locks there.
    fcntl_lock(&fa, F_SETLK, F_WRLCK, 0, 1).unwrap_err();
    drop(fb);
    fcntl_lock(&fa, F_SETLK, F_WRLCK, 0, 0).unwrap();
    fcntl_lock(&fa, F_SETLK, F_UNLCK, 0, 0).unwrap();
    // A read-only descriptor's close sends no flush: its locks go at its release.
    let ro = std::fs::File::open(b.join("db")).unwrap();
    fcntl_lock(&ro, F_SETLK, F_RDLCK, 0, 0).unwrap();
    assert_eq!(fcntl_lock(&fa, F_SETLK, F_WRLCK, 0, 0).unwrap_err().raw_os_error(), Some(EAGAIN));
    drop(ro);
    let t0 = std::time::Instant::now();
    while fcntl_lock(&fa, F_SETLK, F_WRLCK, 0, 0).is_err() {
        assert!(t0.elapsed() < Duration::from_secs(2), "the read-only handle's lock outlived its close");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A wait a signal interrupts: EINTR to the waiter, nothing held after.
    let script = "import fcntl,signal,sys\n\
        def on(*_): raise TimeoutError\n\
        signal.signal(signal.SIGALRM, on); signal.alarm(1)\n\
        f = open(sys.argv[1], 'r+')\n\
        try: fcntl.lockf(f, fcntl.LOCK_EX)\n\
        except TimeoutError: sys.exit(3)\n";
    let t0 = std::time::Instant::now();
    let st = std::process::Command::new("python3").args(["-c", script]).arg(b.join("db")).status().unwrap();
    assert_eq!(st.code(), Some(3), "the wait ends with the signal");
    assert!(t0.elapsed() < Duration::from_secs(4), "interrupted after {:?}", t0.elapsed());
    drop(fa);

    // flock: a holder on b killed with its lock; a waits on it and gets it.
    let mut hold =
        std::process::Command::new("flock").arg("-o").arg(b.join("db")).args(["sleep", "60"]).spawn().unwrap();
    // Once the holder has it, `flock -n` on the other mount fails.
    let t0 = std::time::Instant::now();
    while std::process::Command::new("flock").args(["-n"]).arg(a.join("db")).arg("true").status().unwrap().code()
        != Some(1)
    {
        assert!(t0.elapsed() < Duration::from_secs(5), "flock -n on the other mount never failed while held");
        std::thread::sleep(Duration::from_millis(20));
    }
    let mut waiter = std::process::Command::new("flock").arg(a.join("db")).arg("true").spawn().unwrap();
    std::thread::sleep(Duration::from_millis(500));
    assert!(waiter.try_wait().unwrap().is_none(), "flock waits while held");
    hold.kill().unwrap();
    hold.wait().unwrap();
    let t0 = std::time::Instant::now();
    while waiter.try_wait().unwrap().is_none() {
        assert!(t0.elapsed() < Duration::from_secs(3), "the killed holder's flock never went");
        std::thread::sleep(Duration::from_millis(20));
    }

    // A holder mount that stops answering loses its locks after the
    // session time. (The holder is another process: this one must have
    // nothing open on the stopped mount, or the fork of the `kill` that
    // resumes it would wait on its close of the descriptor.)
    let mut py = std::process::Command::new("python3")
        .args(["-c", "import fcntl,sys,time\nf = open(sys.argv[1], 'r+')\nfcntl.lockf(f, fcntl.LOCK_EX)\nprint('locked', flush=True)\ntime.sleep(60)\n"])
        .arg(b.join("db"))
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut line = String::new();
    std::io::BufRead::read_line(&mut std::io::BufReader::new(py.stdout.take().unwrap()), &mut line).unwrap();
    assert_eq!(line.trim(), "locked");
    holder.pause().unwrap();
    let fa = rw(&a.join("db"));
    let t0 = std::time::Instant::now();
    fcntl_lock(&fa, F_SETLKW, F_WRLCK, 0, 0).unwrap();
    let waited = t0.elapsed();
    holder.resume().unwrap();
    py.kill().unwrap();
    py.wait().unwrap();
    assert!(waited > Duration::from_secs(1) && waited < Duration::from_secs(8), "waited {waited:?}");
}

/// A directory of 250,000 entries lists whole through the library (a page
/// at a time), the CLI (`strata fs ls`) and `ls` on the mount; the old
/// whole-listing request is refused with a clear error (not a connection
/// closed without an answer), and the client stays usable.
#[test]
fn a_directory_of_250k_entries_lists_everywhere() {
    use strata_protocol::messages::MasterRequest;
    const N: usize = 250_000;
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (node, mnt) = start_mounted(dir.path());
    let master = node.line("master: ").expect("master line");
    let c = rt.block_on(client(&master, 64 * 1024));
    // Made fast: leased, the creates queued and sent in batches.
    rt.block_on(async {
        c.mkdir("/big", false).await.unwrap();
        let (generation, _) = c.lease("/big").await.unwrap().expect("leased");
        for i in 0..N {
            let path = format!("/big/entry-{i:07}");
            assert!(c.queue_create_empty(generation, &path, 64 * 1024).await.unwrap(), "the lease held");
        }
        c.flush_queued().await.unwrap();
    });
    let want: Vec<String> = (0..N).map(|i| format!("entry-{i:07}")).collect();
    let listed = rt.block_on(c.list("/big")).unwrap();
    assert_eq!(listed.iter().map(|e| e.name.clone()).collect::<Vec<_>>(), want, "the library's listing");
    let e = rt.block_on(c.call_raw(MasterRequest::List { path: "/big".into() })).unwrap_err();
    assert_eq!(e.code(), strata_client::ErrorCode::TooLarge, "{e}");
    assert!(rt.block_on(c.stat("/big/entry-0000007")).is_ok(), "the connection still serves");

    let (ok, out, err) = strata(&master, &["fs", "ls", "/big"]);
    assert!(ok, "{err}");
    assert_eq!(out.lines().filter(|l| l.contains("entry-")).count(), N, "strata fs ls");

    let mut names: Vec<String> =
        std::fs::read_dir(mnt.join("big")).unwrap().map(|e| e.unwrap().file_name().into_string().unwrap()).collect();
    names.sort();
    assert_eq!(names, want, "ls on the mount");
}
