//! The path table: Strata's RPCs are path based, so the mount keeps the
//! path it reaches each inode by (the name it was last looked up, created
//! or renamed to), the inode at each such path, and the names known in
//! each directory (a renamed directory's descendants are found through
//! them and re-pointed).
//!
//! Invariants, kept under the table's one lock: every name in `names` is a
//! key of `by_path`, and the other way round; `by_ino[i] == p` and
//! `by_path[p] == i` agree wherever both are present. Readers that need
//! several answers from one state take [`PathTable::read`]; every change
//! goes through a method here.

use std::collections::{BTreeSet, HashMap};

use parking_lot::{RwLock, RwLockReadGuard};
use strata_client::DirEntry;

use super::attrs::AttrCache;

/// The three maps (see the module's invariants).
#[derive(Default)]
pub(super) struct PathMap {
    by_ino: HashMap<u64, String>,
    by_path: HashMap<String, u64>,
    names: HashMap<String, BTreeSet<String>>,
}

/// A path's directory and name.
pub(super) fn split(path: &str) -> (&str, &str) {
    let dir = strata_protocol::path::parent(path);
    (dir, path[dir.len()..].trim_start_matches('/'))
}

/// `name` in directory `parent`.
pub(super) fn join(parent: &str, name: &str) -> String {
    if parent == "/" {
        format!("/{name}")
    } else {
        format!("{parent}/{name}")
    }
}

impl PathMap {
    /// The path this mount knows `ino` by.
    pub(super) fn get(&self, ino: u64) -> Option<&String> {
        self.by_ino.get(&ino)
    }

    /// The inode last known at `path`.
    pub(super) fn ino_at(&self, path: &str) -> Option<u64> {
        self.by_path.get(path).copied()
    }

    /// The names known in directory `dir`.
    pub(super) fn names_in(&self, dir: &str) -> impl Iterator<Item = &String> {
        self.names.get(dir).into_iter().flatten()
    }

    fn link_path(&mut self, path: String, ino: u64) {
        let (dir, name) = split(&path);
        self.names.entry(dir.to_string()).or_default().insert(name.to_string());
        self.by_path.insert(path, ino);
    }

    /// Forgets the name `path` (whatever inode it had).
    fn unlink_path(&mut self, path: &str) {
        if self.by_path.remove(path).is_some() {
            let (dir, name) = split(path);
            if let Some(set) = self.names.get_mut(dir) {
                set.remove(name);
                if set.is_empty() {
                    self.names.remove(dir);
                }
            }
        }
    }

    fn insert(&mut self, ino: u64, path: String) {
        if let Some(before) = self.by_ino.insert(ino, path.clone()) {
            if before != path && self.by_path.get(&before) == Some(&ino) {
                self.unlink_path(&before);
            }
        }
        self.link_path(path, ino);
    }

    fn remove(&mut self, ino: u64) {
        if let Some(p) = self.by_ino.remove(&ino) {
            if self.by_path.get(&p) == Some(&ino) {
                self.unlink_path(&p);
            }
        }
    }

    /// `src` was renamed to `dst` (the inode `ino`): it and everything known
    /// below it move.
    fn rename(&mut self, src: &str, dst: &str, ino: u64) {
        // Everything known below `src`, through the names index.
        let mut moved: Vec<(u64, String)> = Vec::new();
        let mut dirs = vec![src.to_string()];
        while let Some(dir) = dirs.pop() {
            for name in self.names_in(&dir) {
                let p = join(&dir, name);
                if let Some(i) = self.ino_at(&p) {
                    moved.push((i, p.clone()));
                    dirs.push(p);
                }
            }
        }
        for (i, p) in moved {
            self.remove(i);
            self.insert(i, format!("{dst}{}", &p[src.len()..]));
        }
        self.remove(ino);
        self.unlink_path(dst);
        self.insert(ino, dst.to_string());
    }

    /// Records `entries` of directory `dir` (their attributes in `attrs`
    /// first, as the master answered them).
    fn learn(&mut self, dir: &str, entries: &[DirEntry], attrs: &AttrCache) {
        for e in entries {
            attrs.fresh(&e.attr);
            self.insert(e.attr.inode, join(dir, &e.name));
        }
    }
}

/// The path table part of [`super::StrataFs`]: one lock over a [`PathMap`].
/// Lock order: taken before the attribute cache (entries learnt here are
/// freshened there under this lock), the open handles and the copies.
pub(super) struct PathTable {
    map: RwLock<PathMap>,
}

impl PathTable {
    /// A table that knows the root (inode 1 at `/`).
    pub(super) fn new() -> Self {
        let mut map = PathMap::default();
        map.insert(1, "/".to_string());
        PathTable { map: RwLock::new(map) }
    }

    /// A consistent view for several reads.
    pub(super) fn read(&self) -> RwLockReadGuard<'_, PathMap> {
        self.map.read()
    }

    /// The path this mount knows `ino` by.
    pub(super) fn path(&self, ino: u64) -> Option<String> {
        self.map.read().get(ino).cloned()
    }

    /// The inode last known at `path`.
    pub(super) fn ino_at(&self, path: &str) -> Option<u64> {
        self.map.read().ino_at(path)
    }

    /// Whether any name is known in directory `dir`.
    pub(super) fn has_names_in(&self, dir: &str) -> bool {
        self.map.read().names_in(dir).next().is_some()
    }

    /// Every name known in directory `dir` with its inode; None if a name
    /// has none (the listing is not complete here).
    pub(super) fn entries_in(&self, dir: &str) -> Option<Vec<(String, u64)>> {
        let map = self.map.read();
        map.names_in(dir).map(|n| Some((n.clone(), map.ino_at(&join(dir, n))?))).collect()
    }

    /// `ino` is at `path` now.
    pub(super) fn insert(&self, ino: u64, path: String) {
        self.map.write().insert(ino, path);
    }

    /// Forgets `ino` (and its name, if that name is still its).
    pub(super) fn remove(&self, ino: u64) {
        self.map.write().remove(ino);
    }

    /// Forgets that `ino` is reachable at `path` (it was unlinked there); a
    /// file with other names stays reachable through them.
    pub(super) fn forget_name(&self, ino: u64, path: &str) {
        let mut map = self.map.write();
        if map.get(ino).is_some_and(|p| p == path) {
            map.remove(ino);
        }
        if map.ino_at(path) == Some(ino) {
            map.unlink_path(path);
        }
    }

    /// `src` was renamed to `dst` (the inode `ino`): it and, for a
    /// directory, everything known below it move.
    pub(super) fn rename(&self, src: &str, dst: &str, ino: u64) {
        self.map.write().rename(src, dst, ino);
    }

    /// [`Self::rename`] over inode `replaced` (if any), which `gone` is
    /// told of and which is forgotten, all under the table's lock.
    pub(super) fn rename_over(&self, src: &str, dst: &str, ino: u64, replaced: Option<u64>, gone: impl FnOnce(u64)) {
        let mut map = self.map.write();
        if let Some(r) = replaced {
            gone(r);
            map.remove(r);
        }
        map.rename(src, dst, ino);
    }

    /// Records the master's listing of directory `dir` (attributes into
    /// `attrs` under the table's lock).
    pub(super) fn learn(&self, dir: &str, entries: &[DirEntry], attrs: &AttrCache) {
        self.map.write().learn(dir, entries, attrs);
    }

    /// Records the whole listing of directory `dir` (a lease was granted on
    /// it): names known there that the listing lacks are forgotten.
    pub(super) fn learn_all(&self, dir: &str, entries: &[DirEntry], attrs: &AttrCache) {
        let mut map = self.map.write();
        let stale: Vec<String> =
            map.names_in(dir).filter(|n| !entries.iter().any(|e| &e.name == *n)).map(|n| join(dir, n)).collect();
        for p in stale {
            map.unlink_path(&p);
        }
        map.learn(dir, entries, attrs);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_renamed_directory_takes_what_is_known_below_it() {
        let t = PathTable::new();
        t.insert(2, "/a".into());
        t.insert(3, "/a/b".into());
        t.insert(4, "/a/b/c".into());
        t.insert(5, "/x".into());
        t.rename_over("/a", "/x", 2, Some(5), |r| assert_eq!(r, 5));
        assert_eq!(t.path(2).as_deref(), Some("/x"));
        assert_eq!(t.path(3).as_deref(), Some("/x/b"));
        assert_eq!(t.path(4).as_deref(), Some("/x/b/c"));
        assert_eq!(t.path(5), None);
        assert_eq!(t.ino_at("/a/b"), None);
        assert!(!t.has_names_in("/a"));
        assert_eq!(t.entries_in("/x"), Some(vec![("b".to_string(), 3)]));
    }

    #[test]
    fn an_unlinked_name_is_forgotten_but_not_another_inodes() {
        let t = PathTable::new();
        t.insert(2, "/d".into());
        t.insert(3, "/d/f".into());
        t.forget_name(4, "/d/f");
        assert_eq!(t.ino_at("/d/f"), Some(3));
        t.forget_name(3, "/d/f");
        assert_eq!((t.ino_at("/d/f"), t.path(3)), (None, None));
        assert!(!t.has_names_in("/d"));
    }
}
