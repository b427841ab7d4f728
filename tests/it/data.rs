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

/// The bundled objects spread over `prefixes` account/region prefixes (object `i` under
/// prefix `i % prefixes`), keys rewritten to match: `(key, gz)` and each prefix.
pub fn spread_objects(prefixes: usize) -> (Vec<Object>, Vec<String>) {
    let regions = ["us-east-1", "eu-west-1"];
    let prefix = |p: usize| {
        let account = format!("{:012}", 111_122_223_330 + (p / regions.len()) as u64);
        (account, regions[p % regions.len()])
    };
    let objects = objects()
        .into_iter()
        .enumerate()
        .map(|(i, o)| {
            let (account, region) = prefix(i % prefixes);
            let key = o
                .key
                .replace("218007301253", &account)
                .replace("us-east-1", region);
            Object { key, gz: o.gz }
        })
        .collect();
    let names = (0..prefixes)
        .map(|p| {
            let (account, region) = prefix(p);
            format!("AWSLogs/{account}/CloudTrail/{region}/")
        })
        .collect();
    (objects, names)
}

/// One event of each kind a trail writes, in the shape of CloudTrail's documented record
/// contents for that kind (management events; Insights events for trails; network activity
/// events; aggregated events, which have `eventId` and no `eventTime`), and the time each
/// must be stamped with.
pub struct KindExample {
    /// The kind's folder under the account.
    pub folder: &'static str,
    /// `eventID` (`eventId` for aggregated events).
    pub id: &'static str,
    /// RFC 3339: `eventTime`, or for an aggregated event `timeWindow.windowStart`.
    pub time: &'static str,
    pub json: &'static str,
}

impl KindExample {
    /// Its key in `region_day` (`REGION/YYYY/MM/DD`) of the account prefix `account`
    /// (`AWSLogs/[o-ORG/]ACCOUNT`), in its kind's folder.
    pub fn key(&self, account: &str, region_day: &str) -> String {
        format!(
            "{account}/{}/{region_day}/{}.json.gz",
            self.folder, self.folder
        )
    }

    /// A gzipped log file holding the one event.
    pub fn object(&self) -> Vec<u8> {
        gzip(format!(r#"{{"Records":[{}]}}"#, self.json).as_bytes())
    }
}

pub const KIND_EXAMPLES: [KindExample; 4] = [
    KindExample {
        folder: "CloudTrail",
        id: "mgmt-1",
        time: "2023-07-10T11:42:36Z",
        json: r#"{"eventVersion":"1.09","eventTime":"2023-07-10T11:42:36Z","eventSource":"iam.amazonaws.com","eventName":"ListUsers","eventID":"mgmt-1","eventType":"AwsApiCall","eventCategory":"Management","recipientAccountId":"111122223333"}"#,
    },
    KindExample {
        folder: "CloudTrail-Insight",
        id: "insight-1",
        time: "2023-07-10T12:51:00Z",
        json: r#"{"eventVersion":"1.07","eventTime":"2023-07-10T12:51:00Z","awsRegion":"us-east-1","eventID":"insight-1","eventType":"AwsCloudTrailInsight","recipientAccountId":"111122223333","sharedEventID":"12edc982-3348-4794-83d3-a3db26525049","insightDetails":{"state":"Start","eventSource":"ssm.amazonaws.com","eventName":"UpdateInstanceAssociationStatus","insightType":"ApiCallRateInsight","insightContext":{"statistics":{"baseline":{"average":1.79},"insight":{"average":3.0},"insightDuration":1},"attributions":[{"attribute":"userIdentityArn","insight":[{"value":"arn:aws:sts::111122223333:assumed-role/Admin","average":3.0}],"baseline":[{"value":"arn:aws:sts::111122223333:assumed-role/Admin","average":1.79}]}]}},"eventCategory":"Insight"}"#,
    },
    KindExample {
        folder: "CloudTrail-NetworkActivity",
        id: "network-1",
        time: "2023-07-10T13:07:14Z",
        json: r#"{"eventVersion":"1.10","userIdentity":{"type":"AWSAccount","principalId":"","accountId":"444455556666"},"eventTime":"2023-07-10T13:07:14Z","eventSource":"cloudtrail.amazonaws.com","eventName":"ListTrails","awsRegion":"us-east-1","sourceIPAddress":"10.0.0.5","errorCode":"VpceAccessDenied","eventID":"network-1","eventType":"AwsVpceEvent","recipientAccountId":"111122223333","sharedEventID":"ff8b3ab6-cd6b-4b76-9e46-5ba1a2f2e1b7","vpcEndpointId":"vpce-0a1b2c3d4e5f67890","vpcEndpointAccountId":"111122223333","eventCategory":"NetworkActivity"}"#,
    },
    KindExample {
        folder: "CloudTrail-Aggregated",
        id: "aggregated-1",
        time: "2023-07-10T14:05:00Z",
        json: r#"{"eventVersion":"1.0","accountId":"111122223333","eventId":"aggregated-1","eventCategory":"Aggregated","eventType":"AwsAggregatedEvent","awsRegion":"us-east-1","eventSource":"s3.amazonaws.com","timeWindow":{"windowStart":"2023-07-10T14:05:00Z","windowEnd":"2023-07-10T14:10:00Z","windowSize":"PT5M"},"summary":{"primaryDimension":{"dimension":"eventName","statistics":[{"name":"GetObject","value":120}]},"details":[{"dimension":"userIdentity.arn","statistics":[{"name":"arn:aws:iam::111122223333:role/Reader","value":120}]}]}}"#,
    },
];
