//! Under-file-systems through OpenDAL: one operator per mount spec (kept in
//! a bounded cache owned by whoever made the [`Ufs`]), listing with
//! fingerprints, and the few namespace operations a mount forwards (mkdir,
//! rename, delete). Masters use it for metadata, workers for block bytes.

use std::num::NonZeroUsize;
use std::time::Duration;

use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::{ErrorKind, Operator};
use parking_lot::Mutex;
use strata_protocol::ufs::{Fingerprint, UfsEntry, UfsSpec};
use strata_protocol::{ErrorCode, ErrorInfo};

/// Backend options that are secrets: never logged or listed.
pub const SECRET_OPTIONS: [&str; 2] = ["secret_access_key", "session_token"];

/// Operators kept per [`Ufs`]: the specs of the mounts in use (a worker
/// also sees the specs clients send with their reads), least recently used
/// dropped first.
const OPERATORS_KEPT: usize = 64;

/// The UFS operators of one node, by spec, built on first use and kept in
/// a bounded LRU (an operator holds its HTTP client's connection pool, so
/// building one per request would throw the pool away).
pub struct Ufs {
    ops: Mutex<lru::LruCache<UfsSpec, Operator>>,
}

impl Default for Ufs {
    fn default() -> Self {
        opendal::install_default();
        Ufs { ops: Mutex::new(lru::LruCache::new(NonZeroUsize::new(OPERATORS_KEPT).expect("non-zero"))) }
    }
}

impl std::fmt::Debug for Ufs {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ufs").field("operators", &self.ops.lock().len()).finish()
    }
}

/// A UFS failure as a Strata error: not-found and permission errors keep
/// their meaning, the rest (unreachable endpoint, bad credentials, missing
/// bucket) say which UFS failed and why.
pub fn ufs_error(spec: &UfsSpec, what: &str, e: opendal::Error) -> ErrorInfo {
    let code = match e.kind() {
        ErrorKind::NotFound => ErrorCode::NotFound,
        ErrorKind::PermissionDenied => ErrorCode::PermissionDenied,
        ErrorKind::ConfigInvalid | ErrorKind::Unsupported => ErrorCode::InvalidArgument,
        ErrorKind::AlreadyExists => ErrorCode::AlreadyExists,
        ErrorKind::IsADirectory => ErrorCode::IsADirectory,
        ErrorKind::NotADirectory => ErrorCode::NotADirectory,
        _ => ErrorCode::Ufs,
    };
    ErrorInfo::new(code, format!("ufs {}: {what}: {}{}", spec.uri, e.kind(), detail(&e)))
}

fn detail(e: &opendal::Error) -> String {
    // OpenDAL's message carries the backend's answer (e.g. S3's error code);
    // the context carries the request, which may name credentials: leave it out.
    let m = e.message();
    if m.is_empty() {
        String::new()
    } else {
        format!(" ({})", m.chars().take(300).collect::<String>())
    }
}

/// The OpenDAL scheme and configuration of a spec.
///
/// - `s3://bucket/prefix` → `s3` with `bucket`, `root=/prefix` (plus options
///   such as `endpoint`, `region`, `access_key_id`, `secret_access_key`);
/// - `file:///dir` (or `/dir`) → `fs` with `root=/dir`;
/// - any other `scheme://authority/path` → that OpenDAL service (when built
///   with its feature) with `root=/path` and the options as given.
pub fn config_of(spec: &UfsSpec) -> Result<(String, Vec<(String, String)>), ErrorInfo> {
    let bad = |why: &str| ErrorInfo::new(ErrorCode::InvalidArgument, format!("UFS URI {:?}: {why}", spec.uri));
    let mut cfg: Vec<(String, String)> = Vec::new();
    let scheme;
    if let Some(dir) = spec.uri.strip_prefix("file://").or_else(|| spec.uri.strip_prefix('/').map(|_| &spec.uri[..])) {
        if !dir.starts_with('/') {
            return Err(bad("a local directory must be absolute (file:///dir)"));
        }
        scheme = "fs".to_string();
        cfg.push(("root".into(), dir.to_string()));
    } else {
        let (s, rest) = spec.uri.split_once("://").ok_or_else(|| bad("expected scheme://..."))?;
        let (authority, path) = rest.split_once('/').unwrap_or((rest, ""));
        match s {
            "s3" | "s3a" => {
                if authority.is_empty() {
                    return Err(bad("no bucket"));
                }
                scheme = "s3".into();
                cfg.push(("bucket".into(), authority.to_string()));
                cfg.push(("region".into(), "us-east-1".into()));
            }
            other => {
                scheme = other.to_string();
                if !authority.is_empty() {
                    cfg.push(("name".into(), authority.to_string()));
                }
            }
        }
        cfg.push(("root".into(), format!("/{}", path.trim_matches('/'))));
    }
    for (k, v) in spec.options.iter().filter(|(k, _)| !STRATA_OPTIONS.contains(&k.as_str())) {
        cfg.retain(|(ck, _)| ck != k);
        cfg.push((k.clone(), v.clone()));
    }
    Ok((scheme, cfg))
}

/// Options Strata itself reads (not passed to the backend): the per-request
/// timeout in ms (default 20000) and the retries after a failure (default 2).
pub const STRATA_OPTIONS: [&str; 2] = ["timeout_ms", "retries"];

fn strata_option(spec: &UfsSpec, key: &str, default: u64) -> Result<u64, ErrorInfo> {
    match spec.options.iter().find(|(k, _)| k == key) {
        None => Ok(default),
        Some((_, v)) => v
            .parse()
            .map_err(|_| ErrorInfo::new(ErrorCode::InvalidArgument, format!("option {key}={v:?} is not a number"))),
    }
}

/// A new operator for a spec (not cached: see [`Ufs::operator`]).
pub fn operator(spec: &UfsSpec) -> Result<Operator, ErrorInfo> {
    opendal::install_default();
    let (scheme, cfg) = config_of(spec)?;
    let timeout = Duration::from_millis(strata_option(spec, "timeout_ms", 20_000)?);
    let retries = strata_option(spec, "retries", 2)? as usize;
    let mut op = Operator::via_iter(&scheme, cfg)
        .map_err(|e| ufs_error(spec, "configuring the backend", e))?
        .layer(TimeoutLayer::new().with_timeout(timeout).with_io_timeout(timeout));
    if retries > 0 {
        op = op.layer(RetryLayer::new().with_max_times(retries).with_min_delay(Duration::from_millis(50)));
    }
    Ok(op)
}

fn mtime_ms(m: &opendal::Metadata) -> i64 {
    m.last_modified()
        .map(std::time::SystemTime::from)
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// The fingerprint of a file's metadata.
pub fn fingerprint(m: &opendal::Metadata) -> Fingerprint {
    Fingerprint {
        size: m.content_length(),
        mtime_ms: mtime_ms(m),
        etag: m.etag().map(|e| e.trim_matches('"').to_string()),
    }
}

/// The key of a directory as OpenDAL wants it (`a/b/`; the root is `/`).
pub fn dir_key(key: &str) -> String {
    let k = key.trim_matches('/');
    if k.is_empty() {
        "/".into()
    } else {
        format!("{k}/")
    }
}

impl Ufs {
    /// The operator of a spec, built on first use.
    pub fn operator(&self, spec: &UfsSpec) -> Result<Operator, ErrorInfo> {
        if let Some(op) = self.ops.lock().get(spec) {
            return Ok(op.clone());
        }
        let op = operator(spec)?;
        self.ops.lock().put(spec.clone(), op.clone());
        Ok(op)
    }

    /// The entries of a UFS directory with their fingerprints.
    pub async fn list_dir(&self, spec: &UfsSpec, key: &str) -> Result<Vec<UfsEntry>, ErrorInfo> {
        let op = self.operator(spec)?;
        let dir = dir_key(key);
        let entries = op.list(&dir).await.map_err(|e| ufs_error(spec, &format!("listing {dir}"), e))?;
        let mut out = Vec::with_capacity(entries.len());
        for e in entries {
            let path = e.path();
            if path == dir || path.is_empty() || path == "/" {
                continue; // the directory itself
            }
            let is_dir = e.metadata().is_dir();
            let name = path.trim_end_matches('/').rsplit('/').next().unwrap_or_default().to_string();
            if name.is_empty() || name == "." || name == ".." {
                continue;
            }
            let fingerprint = if is_dir {
                Fingerprint::default()
            } else if e.metadata().last_modified().is_some() {
                fingerprint(e.metadata())
            } else {
                // Some backends list names only.
                match op.stat(path).await {
                    Ok(m) => fingerprint(&m),
                    Err(err) if err.kind() == ErrorKind::NotFound => continue,
                    Err(err) => return Err(ufs_error(spec, &format!("stat {path}"), err)),
                }
            };
            out.push(UfsEntry { name, is_dir, fingerprint });
        }
        out.sort_by(|a, b| a.name.cmp(&b.name));
        out.dedup_by(|a, b| a.name == b.name);
        Ok(out)
    }

    /// The fingerprint of one object, `None` if it does not exist.
    pub async fn stat(&self, spec: &UfsSpec, key: &str) -> Result<Option<Fingerprint>, ErrorInfo> {
        let op = self.operator(spec)?;
        match op.stat(key).await {
            Ok(m) if !m.is_dir() => Ok(Some(fingerprint(&m))),
            Ok(_) => Ok(None),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(None),
            Err(e) => Err(ufs_error(spec, &format!("stat {key}"), e)),
        }
    }

    /// Whether a directory exists (on object stores: its marker or any object below it).
    pub async fn dir_exists(&self, spec: &UfsSpec, key: &str) -> Result<bool, ErrorInfo> {
        let op = self.operator(spec)?;
        let dir = dir_key(key);
        match op.stat(&dir).await {
            Ok(m) if m.is_dir() => return Ok(true),
            Ok(_) => {}
            Err(e) if e.kind() == ErrorKind::NotFound => {}
            Err(e) => return Err(ufs_error(spec, &format!("stat {dir}"), e)),
        }
        Ok(!self
            .list_dir(spec, key)
            .await
            .or_else(|e| if e.code == ErrorCode::NotFound { Ok(Vec::new()) } else { Err(e) })?
            .is_empty())
    }

    /// Creates a directory (a `key/` marker on object stores).
    pub async fn mkdir(&self, spec: &UfsSpec, key: &str) -> Result<(), ErrorInfo> {
        if key.is_empty() {
            return Ok(());
        }
        let op = self.operator(spec)?;
        op.create_dir(&dir_key(key)).await.map_err(|e| ufs_error(spec, &format!("mkdir {key}"), e))
    }

    /// Deletes a file, or a directory with everything below it. Missing is fine.
    pub async fn remove(&self, spec: &UfsSpec, key: &str, is_dir: bool) -> Result<(), ErrorInfo> {
        let op = self.operator(spec)?;
        let r = if is_dir { op.delete_with(&dir_key(key)).recursive(true).await } else { op.delete(key).await };
        match r {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == ErrorKind::NotFound => Ok(()),
            Err(e) => Err(ufs_error(spec, &format!("delete {key}"), e)),
        }
    }

    /// Renames a file or directory. Backends without rename (S3) get copy +
    /// delete, object by object: not atomic; a master crash in between leaves
    /// both names, and the leader's re-drive of the rename's journaled intent
    /// finishes it (see `master::mounts`).
    pub async fn rename(&self, spec: &UfsSpec, from: &str, to: &str, is_dir: bool) -> Result<(), ErrorInfo> {
        let op = self.operator(spec)?;
        let cap = op.info().capability();
        let err = |what: String| move |e| ufs_error(spec, &what, e);
        if !is_dir {
            if cap.rename {
                return op.rename(from, to).await.map_err(err(format!("rename {from} -> {to}")));
            }
            op.copy(from, to).await.map_err(err(format!("copy {from} -> {to}")))?;
            return self.remove(spec, from, false).await;
        }
        if cap.rename && op.info().scheme() == "fs" {
            // A local directory renames in one step.
            let (f, t) = (from.trim_end_matches('/'), to.trim_end_matches('/'));
            return op.rename(f, t).await.map_err(err(format!("rename {from} -> {to}")));
        }
        let src = dir_key(from);
        let dst = dir_key(to);
        let entries = op.list_with(&src).recursive(true).await.map_err(err(format!("listing {src}")))?;
        self.mkdir(spec, to).await?;
        for e in &entries {
            let rest = &e.path()[src.len().min(e.path().len())..];
            if rest.is_empty() {
                continue;
            }
            let target = format!("{dst}{rest}");
            if e.metadata().is_dir() {
                op.create_dir(&target).await.map_err(err(format!("mkdir {target}")))?;
            } else {
                op.copy(e.path(), &target).await.map_err(err(format!("copy {} -> {target}", e.path())))?;
            }
        }
        self.remove(spec, from, true).await
    }
}
