//! The real CloudTrail objects in `testdata/cloudtrail/` and their events.

use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use flate2::Compression;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use serde_json::value::RawValue;

use crate::json::J;

pub const EVENTS: usize = 2_900;
pub const OBJECTS: usize = 55;

pub fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("testdata/cloudtrail")
}

/// One real object: its key (relative to the bucket) and gzipped bytes.
pub struct Object {
    pub key: String,
    pub gz: Vec<u8>,
}

impl Object {
    pub fn json(&self) -> String {
        let mut s = String::new();
        GzDecoder::new(&self.gz[..]).read_to_string(&mut s).unwrap();
        s
    }

    /// The events' eventIDs, in order.
    pub fn ids(&self) -> Vec<String> {
        self.events()
            .iter()
            .map(|e| J::parse(e).str("eventID").unwrap().to_string())
            .collect()
    }

    /// The events' JSON texts, parsed by serde_json independently of the splitter.
    pub fn events(&self) -> Vec<String> {
        #[derive(serde::Deserialize)]
        struct File {
            #[serde(rename = "Records")]
            records: Vec<Box<RawValue>>,
        }
        let f: File = serde_json::from_str(&self.json()).unwrap();
        f.records.into_iter().map(|r| r.get().to_string()).collect()
    }
}

/// All 55 objects, sorted by key.
pub fn objects() -> Vec<Object> {
    let mut out = Vec::new();
    collect(&root(), &root(), &mut out);
    out.sort_by(|a, b| a.key.cmp(&b.key));
    assert_eq!(
        out.len(),
        OBJECTS,
        "testdata/cloudtrail should hold the 55 real objects"
    );
    out
}

fn collect(root: &Path, dir: &Path, out: &mut Vec<Object>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            collect(root, &p, out);
        } else if p.extension().is_some_and(|x| x == "gz") {
            out.push(Object {
                key: p.strip_prefix(root).unwrap().to_str().unwrap().to_string(),
                gz: std::fs::read(&p).unwrap(),
            });
        }
    }
}

/// Every source event by eventID, as an ordered tree, with its eventTime in Unix seconds.
pub fn expected() -> std::collections::HashMap<String, (J, u32)> {
    let mut map = std::collections::HashMap::new();
    for o in objects() {
        for text in o.events() {
            let j = J::parse(&text);
            let id = j.str("eventID").unwrap().to_string();
            let t = time::OffsetDateTime::parse(
                j.str("eventTime").unwrap(),
                &time::format_description::well_known::Rfc3339,
            )
            .unwrap()
            .unix_timestamp() as u32;
            assert!(
                map.insert(id, (j, t)).is_none(),
                "eventIDs are unique in the data set"
            );
        }
    }
    assert_eq!(map.len(), EVENTS);
    map
}

pub fn gzip(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Uploads all real objects under their layout keys, optionally below `prefix`.
pub fn upload_all(bucket: &str, prefix: &str) {
    for o in objects() {
        crate::server::put(bucket, &format!("{prefix}{}", o.key), o.gz.clone());
    }
}
