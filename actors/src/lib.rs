//! Strata's server side: every stateful part is a supervised ractor actor.
//!
//! - [`master`]: journal (openraft over RocksDB), namespace, worker manager, client gateway.
//! - [`worker`]: worker registration and heartbeats, storage tiers, data server.
//! - [`supervisor`]: the root supervisor of a node.
//! - [`mesh`]: the ractor_cluster mesh between server nodes.
//! - [`ufs`]: under-file-systems through OpenDAL.

pub mod cluster;
pub mod faults;
pub mod master;
pub mod mesh;
pub mod net;
pub mod supervisor;
pub mod ufs;
pub mod worker;
