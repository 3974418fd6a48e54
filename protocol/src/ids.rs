//! Identifiers. Plain `u64` newtypes would force rkyv wrappers everywhere, so
//! ids are type aliases with documented meaning; their allocation rules are
//! what matters and live with their owners.

/// An inode number. Allocated by the namespace state machine when a journal
/// entry that creates an inode is applied, so every master assigns the same one.
pub type InodeId = u64;
/// A block id. Allocated from a journaled counter when `AddBlock` is applied;
/// never reused, so a stale cached copy can never be mistaken for new data.
pub type BlockId = u64;
/// A worker id: chosen at random by the worker on its first start and kept
/// in its data directory, so a restarted worker is recognised.
pub type WorkerId = u64;
/// A client request id, unique per client connection; responses carry it back.
pub type RequestId = u64;

/// The root directory's inode.
pub const ROOT_INODE: InodeId = 1;
