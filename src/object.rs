//! An object to ship: where it is and what identifies it in the state.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;

use crate::timestamp::EventTime;

/// A discovered object. Cheap to clone.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectRef {
    /// `s3://bucket/key` or `dir:relative/path`: the name in the state and in log lines.
    pub id: Arc<str>,
    pub location: Location,
    pub size: u64,
    /// Stamped on events whose `eventTime` is missing or unreadable.
    pub last_modified: EventTime,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    S3 { bucket: Arc<str>, key: String },
    File { path: PathBuf, rel: String },
}

impl ObjectRef {
    pub fn s3(bucket: &Arc<str>, key: String, size: u64, last_modified: EventTime) -> Self {
        Self {
            id: s3_id(bucket, &key).into(),
            location: Location::S3 {
                bucket: bucket.clone(),
                key,
            },
            size,
            last_modified,
        }
    }

    pub fn file(path: PathBuf, rel: String, size: u64, last_modified: EventTime) -> Self {
        Self {
            id: format!("dir:{rel}").into(),
            location: Location::File { path, rel },
            size,
            last_modified,
        }
    }

    /// The source's name and the key, for the optional metadata field.
    pub fn meta(&self) -> ObjectMeta<'_> {
        match &self.location {
            Location::S3 { bucket, key } => ObjectMeta {
                bucket: Some(bucket),
                key,
            },
            Location::File { rel, .. } => ObjectMeta {
                bucket: None,
                key: rel,
            },
        }
    }
}

/// `s3://bucket/key`, the state's name for an S3 object.
pub fn s3_id(bucket: &str, key: &str) -> String {
    format!("s3://{bucket}/{key}")
}

impl fmt::Display for ObjectRef {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.id)
    }
}

/// Where an event came from, as front ends print it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ObjectMeta<'a> {
    pub bucket: Option<&'a str>,
    pub key: &'a str,
}

impl ObjectRef {
    /// The object a ledger id names: `s3://bucket/key`, or `dir:relative/path` below `root`
    /// (`None` for a folder id without a folder, or an id of neither form).
    pub fn from_id(
        id: &str,
        size: u64,
        last_modified: EventTime,
        root: Option<&std::path::Path>,
    ) -> Option<Self> {
        if let Some(rest) = id.strip_prefix("s3://") {
            let (bucket, key) = rest.split_once('/')?;
            return Some(Self::s3(&bucket.into(), key.into(), size, last_modified));
        }
        let rel = id.strip_prefix("dir:")?;
        Some(Self::file(root?.join(rel), rel.into(), size, last_modified))
    }
}
