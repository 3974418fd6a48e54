//! Fault injection for tests, read once from `STRATA_FAULT` when a node
//! starts and handed to the parts that act on it (no process-global
//! state). `STRATA_FAULT` is a comma-separated list:
//!
//! - `crash-after-ufs-op`: the master aborts right after a delete's or
//!   rename's UFS operation, before the namespace change is journaled;
//! - `no-ufs-redrive`: the leader does not re-drive recorded UFS operations
//!   (to check that the crash test fails without it);
//! - `panic-in-request=PATH`: a master request naming exactly PATH panics
//!   in its handler (the client must get an internal error at once);
//! - `stop-raft-core-after-ms=N`: the master's Raft core is shut down N ms
//!   after the journal starts, as openraft does on a storage error (the
//!   master must exit non-zero).
//!
//! Never set it outside tests. It is an environment variable rather than a
//! cargo feature so the binary the tests run is the one `run-local.sh` and
//! the benchmarks build (a feature would rebuild the crates twice).

use std::time::Duration;

/// The faults to inject; the default injects none.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Faults {
    /// Abort after a delete's or rename's UFS operation.
    pub crash_after_ufs_op: bool,
    /// Leave recorded UFS operations alone.
    pub no_ufs_redrive: bool,
    /// Panic in the handler of a request naming this path.
    pub panic_in_request: Option<String>,
    /// Shut the Raft core down this long after the journal starts.
    pub stop_raft_core_after: Option<Duration>,
}

impl Faults {
    /// Parses a `STRATA_FAULT` value; unknown entries are an error.
    pub fn parse(spec: &str) -> Result<Faults, String> {
        let mut f = Faults::default();
        for item in spec.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            let (k, v) = item.split_once('=').map_or((item, None), |(k, v)| (k, Some(v)));
            match (k, v) {
                ("crash-after-ufs-op", None) => f.crash_after_ufs_op = true,
                ("no-ufs-redrive", None) => f.no_ufs_redrive = true,
                ("panic-in-request", Some(p)) => f.panic_in_request = Some(p.to_string()),
                ("stop-raft-core-after-ms", Some(ms)) => {
                    let ms: u64 = ms.parse().map_err(|_| format!("STRATA_FAULT: {item:?}: not a number of ms"))?;
                    f.stop_raft_core_after = Some(Duration::from_millis(ms));
                }
                _ => return Err(format!("STRATA_FAULT: unknown fault {item:?}")),
            }
        }
        Ok(f)
    }

    /// The faults `STRATA_FAULT` names (none when unset).
    pub fn from_env() -> Result<Faults, String> {
        std::env::var("STRATA_FAULT").map_or(Ok(Faults::default()), |v| Faults::parse(&v))
    }

    /// Panics if `path` is the one a request must panic on.
    pub fn request_path(&self, path: &str) {
        if self.panic_in_request.as_deref() == Some(path) {
            panic!("STRATA_FAULT=panic-in-request={path}: panicking in the request handler");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_a_list_and_refuses_the_unknown() {
        let f = Faults::parse("no-ufs-redrive, panic-in-request=/p,stop-raft-core-after-ms=1500").unwrap();
        assert!(f.no_ufs_redrive && !f.crash_after_ufs_op);
        assert_eq!(f.panic_in_request.as_deref(), Some("/p"));
        assert_eq!(f.stop_raft_core_after, Some(Duration::from_millis(1500)));
        assert_eq!(Faults::parse("").unwrap(), Faults::default());
        assert!(Faults::parse("crash-after-everything").is_err());
        assert!(Faults::parse("stop-raft-core-after-ms=soon").is_err());
    }
}
