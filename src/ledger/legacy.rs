//! The state file of earlier releases (one JSON document, rewritten whole at every commit),
//! read once at start to convert it into the ledger.

use std::collections::{BTreeMap, BTreeSet};

use serde::Deserialize;

/// The JSON state, format 1.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StateV1 {
    pub version: u32,
    pub first_start: Option<u32>,
    pub done: BTreeSet<String>,
    pub failed: BTreeMap<String, String>,
    pub progress: BTreeMap<String, u64>,
    /// For each listed `…/CloudTrail/REGION/` key prefix (bucket-relative), the newest
    /// `YYYY/MM/DD` seen: the old listing resumed one day before it.
    pub newest_days: BTreeMap<String, String>,
}

/// Whether bytes look like a JSON state rather than a ledger file.
pub fn is_json(bytes: &[u8]) -> bool {
    bytes.iter().find(|b| !b.is_ascii_whitespace()) == Some(&b'{')
}

pub fn parse(bytes: &[u8]) -> Result<StateV1, String> {
    let state: StateV1 = serde_json::from_slice(bytes).map_err(|e| e.to_string())?;
    if state.version != 1 {
        return Err(format!("format version {}", state.version));
    }
    Ok(state)
}
