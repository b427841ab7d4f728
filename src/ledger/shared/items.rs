//! How the shared ledger's rows and lease rows lie in DynamoDB items: the key split of an
//! object id, and each attribute (see [`super::dynamo`] for what they are for).

use std::collections::HashMap;

use aws_sdk_dynamodb::primitives::Blob;
use aws_sdk_dynamodb::types::AttributeValue;

use super::super::entry::Entry;
use super::table::{LeaseKind, LeaseRow, Row};

/// The partition of each kind of lease row (the sort key is the prefix id or owner id).
pub(super) fn lease_partition(kind: LeaseKind) -> &'static str {
    match kind {
        LeaseKind::Prefix => "~prefix",
        LeaseKind::Shipper => "~shipper",
        LeaseKind::Finding => "~finding",
    }
}

pub(super) fn lease_key(kind: LeaseKind, id: &str) -> HashMap<String, AttributeValue> {
    HashMap::from([
        (
            "p".to_string(),
            AttributeValue::S(lease_partition(kind).into()),
        ),
        ("k".to_string(), AttributeValue::S(id.into())),
    ])
}

pub(super) fn lease_item(
    kind: LeaseKind,
    id: &str,
    row: &LeaseRow,
) -> HashMap<String, AttributeValue> {
    let mut m = lease_key(kind, id);
    m.insert("ver".into(), AttributeValue::N(row.version.to_string()));
    let mut text = |name: &str, v: &Option<String>| {
        if let Some(v) = v {
            m.insert(name.into(), AttributeValue::S(v.clone()));
        }
    };
    text("own", &row.owner);
    text("wm", &row.watermark);
    text("fl", &row.floor);
    if let Some(exp) = row.expires {
        m.insert("exp".into(), AttributeValue::N(exp.to_string()));
    }
    m
}

pub(super) fn lease_row(m: &HashMap<String, AttributeValue>) -> Option<(String, LeaseRow)> {
    let text = |name: &str| m.get(name).and_then(|v| v.as_s().ok()).cloned();
    Some((
        text("k")?,
        LeaseRow {
            version: number(m, "ver")?,
            owner: text("own"),
            watermark: text("wm"),
            floor: text("fl"),
            expires: number(m, "exp").and_then(|v| u32::try_from(v).ok()),
        },
    ))
}

/// The partition and sort key of an object id: `s3://BUCKET/…/ACCOUNT/KIND/REGION/` and
/// the rest, or the bucket and the whole key for a key outside CloudTrail's layout.
pub(super) fn split(id: &str) -> (String, String) {
    if let Some((bucket, key)) = id.strip_prefix("s3://").and_then(|r| r.split_once('/')) {
        if let Some(prefix) = crate::layout::region_prefix(key)
            && key.len() > prefix.len()
        {
            return (
                format!("s3://{bucket}/{prefix}"),
                key[prefix.len()..].to_string(),
            );
        }
        if !key.is_empty() {
            return (format!("s3://{bucket}/"), key.to_string());
        }
    }
    // Key attributes may not be empty strings.
    (id.to_string(), ".".to_string())
}

pub(super) fn key_of(id: &str) -> HashMap<String, AttributeValue> {
    let (p, k) = split(id);
    HashMap::from([
        ("p".to_string(), AttributeValue::S(p)),
        ("k".to_string(), AttributeValue::S(k)),
    ])
}

pub(super) fn item(id: &str, row: &Row) -> HashMap<String, AttributeValue> {
    let mut m = key_of(id);
    m.insert("id".into(), AttributeValue::S(id.into()));
    m.insert("ver".into(), AttributeValue::N(row.version.to_string()));
    m.insert("e".into(), AttributeValue::B(Blob::new(row.entry.encode())));
    m.insert("lc".into(), AttributeValue::N(row.lease.to_string()));
    if let Some(o) = &row.owner {
        m.insert("own".into(), AttributeValue::S(o.clone()));
    }
    if let Some(exp) = row.expires {
        m.insert("exp".into(), AttributeValue::N(exp.to_string()));
    }
    if row.is_open() {
        m.insert("q".into(), AttributeValue::S("open".into()));
        m.insert(
            "due".into(),
            AttributeValue::N(row.entry.not_before.to_string()),
        );
    }
    m
}

pub(super) fn number(m: &HashMap<String, AttributeValue>, k: &str) -> Option<u64> {
    m.get(k)?.as_n().ok()?.parse().ok()
}

/// `None` for items that are not rows (settings, or bytes of another form).
pub(super) fn row(m: &HashMap<String, AttributeValue>) -> Option<(String, Row)> {
    let id = m.get("id")?.as_s().ok()?.clone();
    let entry = Entry::decode(m.get("e")?.as_b().ok()?.as_ref())?;
    Some((
        id,
        Row {
            version: number(m, "ver")?,
            entry,
            owner: m.get("own").and_then(|v| v.as_s().ok()).cloned(),
            lease: number(m, "lc").unwrap_or(0),
            expires: number(m, "exp").and_then(|v| u32::try_from(v).ok()),
        },
    ))
}

#[cfg(test)]
mod tests {
    #[test]
    fn rows_are_partitioned_by_their_region_prefix() {
        let id = "s3://b/AWSLogs/o-1/111122223333/CloudTrail/us-east-1/2023/07/10/f.json.gz";
        assert_eq!(
            super::split(id),
            (
                "s3://b/AWSLogs/o-1/111122223333/CloudTrail/us-east-1/".to_string(),
                "2023/07/10/f.json.gz".to_string()
            )
        );
        assert_eq!(
            super::split("s3://b/other/f.json.gz"),
            ("s3://b/".to_string(), "other/f.json.gz".to_string())
        );
        assert_eq!(
            super::split("dir:x"),
            ("dir:x".to_string(), ".".to_string())
        );
    }
}
