//! What a chunk handed to the host means for the ledger: the [`Mark`] each chunk carries
//! and the ledger commits once the host has it. It lives with the ledger, which reads it,
//! rather than with the engine's queue, which only carries it (`engine::handoff` re-exports
//! it), so the ledger depends on nothing above it.

use std::sync::Arc;

/// What handing a chunk over means for the state.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Mark {
    pub id: Arc<str>,
    /// Events in the chunk this mark closes.
    pub events: u64,
    /// Elements of `Records` consumed once this chunk is handed over.
    pub position: u64,
    /// Set on an object's last chunk.
    pub end: Option<End>,
    /// The newest `eventTime` in the chunk (Unix seconds; 0 without events): freshness.
    pub newest_event: u32,
    /// The object's LastModified (Unix seconds): freshness.
    pub modified: u32,
    /// On a done object's last mark: the SHA-256 of all its decompressed bytes, read as it
    /// was shipped (what CloudTrail's digests name for each log file).
    pub sha256: Option<[u8; 32]>,
    /// On the mark of an integrity finding sent as a record (no object): recorded as
    /// reported once the host has it.
    pub finding: Option<Arc<FindingMark>>,
}

/// An integrity finding sent as a record, for its commit.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FindingMark {
    pub text: String,
    /// How long the ledger remembers it was reported (seconds).
    pub keep: u32,
}

/// How an object ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    Done,
    Failed(String),
    /// Stopped by a transient failure (the reason): progress kept, the object tried again
    /// after a backoff.
    Abandoned(String),
}
