//! Reading an SQS message body: which objects does it announce?
//!
//! Every shape AWS delivers is detected per message, not configured: an S3 event
//! notification (keys form-encoded: `+` for a space, `%XX` for other bytes of the UTF-8
//! key, so a `+` in the key arrives as `%2B`), the same inside an SNS envelope (raw delivery
//! or not), an EventBridge "Object Created" event, and CloudTrail's own SNS notification
//! (`s3Bucket` plus a list in `s3ObjectKey`). S3's `s3:TestEvent` is recognised so it can be
//! deleted quietly. Anything else is `Unknown`, with a reason, so the caller can log it and
//! leave it to the queue's redrive policy.
//!
//! Only the S3 event notification's keys are decoded. The S3 user guide says so for that
//! shape ("The object key name value is URL encoded. For example, "red flower.jpg" becomes
//! "red+flower.jpg"", notification-content-structure); its EventBridge page
//! (ev-events) describes `detail.object.key` with no encoding, and EventBridge events seen
//! from S3 carry keys such as `raw/x/2023-08-08T14:03:40.532432.zip` with their `:` as they
//! are, where the notification form would have `%3A`. CloudTrail's own notification
//! carries keys as it wrote them. CloudTrail's keys contain none of the characters in
//! question anyway; the decoding matters for other producers' keys.

use serde_json::Value;

use crate::timestamp::EventTime;

/// An object named by a notification.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Announced {
    pub bucket: String,
    pub key: String,
    pub size: Option<u64>,
    /// The notification's event time, when it has one (CloudTrail's own notification has
    /// none). The time of events without a usable `eventTime` is the object's LastModified
    /// as the GET answers it ([`crate::read::fetch::Opened::last_modified`]), or this.
    pub time: Option<EventTime>,
}

/// What a message body says.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// New objects (possibly none, e.g. only deletions).
    Objects(Vec<Announced>),
    /// S3's test message, sent when a notification is configured.
    Test,
    Unknown(String),
}

/// Parses a message body.
pub fn parse(body: &str) -> Notice {
    match serde_json::from_str::<Value>(body) {
        Ok(v) => from_value(&v, 0),
        Err(e) => Notice::Unknown(format!("body is not JSON ({e})")),
    }
}

fn from_value(v: &Value, depth: u8) -> Notice {
    if v.get("Event").and_then(Value::as_str) == Some("s3:TestEvent") {
        return Notice::Test;
    }
    // SNS envelope: the real notification is a JSON string in "Message".
    if v.get("Type").and_then(Value::as_str) == Some("Notification") && depth == 0 {
        return match v.get("Message").and_then(Value::as_str) {
            Some(inner) => match serde_json::from_str::<Value>(inner) {
                Ok(inner) => from_value(&inner, depth + 1),
                Err(e) => Notice::Unknown(format!("SNS message is not JSON ({e})")),
            },
            None => Notice::Unknown("SNS envelope without a Message".into()),
        };
    }
    if let Some(records) = v.get("Records").and_then(Value::as_array) {
        return s3_event(records);
    }
    if v.get("source").and_then(Value::as_str) == Some("aws.s3") {
        return eventbridge(v);
    }
    if let (Some(bucket), Some(keys)) = (
        v.get("s3Bucket").and_then(Value::as_str),
        v.get("s3ObjectKey"),
    ) {
        let keys: Vec<&str> = match keys {
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            Value::String(s) => vec![s.as_str()],
            _ => return Notice::Unknown("s3ObjectKey is neither a list nor a string".into()),
        };
        return Notice::Objects(
            keys.into_iter()
                .map(|k| Announced {
                    bucket: bucket.to_string(),
                    key: k.to_string(),
                    size: None,
                    time: None,
                })
                .collect(),
        );
    }
    Notice::Unknown("not an S3, SNS, EventBridge or CloudTrail notification".into())
}

fn s3_event(records: &[Value]) -> Notice {
    let mut out = Vec::new();
    for r in records {
        let name = r.get("eventName").and_then(Value::as_str).unwrap_or("");
        if !name.starts_with("ObjectCreated:") {
            continue;
        }
        let (Some(bucket), Some(key)) = (
            r.pointer("/s3/bucket/name").and_then(Value::as_str),
            r.pointer("/s3/object/key").and_then(Value::as_str),
        ) else {
            return Notice::Unknown(
                "S3 event record without s3.bucket.name or s3.object.key".into(),
            );
        };
        let Some(key) = url_decode(key) else {
            return Notice::Unknown(format!("S3 event key {key:?} is not valid URL encoding"));
        };
        out.push(Announced {
            bucket: bucket.to_string(),
            key,
            size: r.pointer("/s3/object/size").and_then(Value::as_u64),
            time: r
                .get("eventTime")
                .and_then(Value::as_str)
                .and_then(EventTime::parse_rfc3339),
        });
    }
    Notice::Objects(out)
}

fn eventbridge(v: &Value) -> Notice {
    if v.get("detail-type").and_then(Value::as_str) != Some("Object Created") {
        return Notice::Objects(Vec::new());
    }
    match (
        v.pointer("/detail/bucket/name").and_then(Value::as_str),
        v.pointer("/detail/object/key").and_then(Value::as_str),
    ) {
        (Some(bucket), Some(key)) => Notice::Objects(vec![Announced {
            bucket: bucket.to_string(),
            key: key.to_string(),
            size: v.pointer("/detail/object/size").and_then(Value::as_u64),
            time: v
                .get("time")
                .and_then(Value::as_str)
                .and_then(EventTime::parse_rfc3339),
        }]),
        _ => Notice::Unknown(
            "EventBridge event without detail.bucket.name or detail.object.key".into(),
        ),
    }
}

/// S3 notification keys: `%XX` escapes (of UTF-8 bytes) and `+` for a space. `None` for a
/// `%` not followed by two hex digits, or bytes that are not UTF-8.
fn url_decode(s: &str) -> Option<String> {
    fn hex(c: u8) -> Option<u8> {
        match c {
            b'0'..=b'9' => Some(c - b'0'),
            b'a'..=b'f' => Some(c - b'a' + 10),
            b'A'..=b'F' => Some(c - b'A' + 10),
            _ => None,
        }
    }
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        match b[i] {
            b'+' => out.push(b' '),
            b'%' => {
                // Not `u8::from_str_radix`, which takes "+5" for 5.
                let (hi, lo) = (hex(*b.get(i + 1)?)?, hex(*b.get(i + 2)?)?);
                out.push(hi << 4 | lo);
                i += 2;
            }
            c => out.push(c),
        }
        i += 1;
    }
    String::from_utf8(out).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    const S3: &str = r#"{"Records":[{"eventVersion":"2.1","eventSource":"aws:s3","eventTime":"2023-07-10T11:45:01.123Z","eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"trail"},"object":{"key":"AWSLogs/1/CloudTrail/us-east-1/2023/07/10/a+b%3Dc.json.gz","size":42}}},{"eventName":"ObjectRemoved:Delete","s3":{"bucket":{"name":"trail"},"object":{"key":"x"}}}]}"#;

    fn one(n: Notice) -> Announced {
        match n {
            Notice::Objects(mut v) if v.len() == 1 => v.remove(0),
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn s3_event_notification_decodes_keys() {
        let a = one(parse(S3));
        assert_eq!(a.bucket, "trail");
        assert_eq!(
            a.key,
            "AWSLogs/1/CloudTrail/us-east-1/2023/07/10/a b=c.json.gz"
        );
        assert_eq!(a.size, Some(42));
        assert_eq!(a.time.map(|t| t.secs()), Some(1_688_989_501));
    }

    #[test]
    fn sns_envelope_around_s3_event() {
        let env = serde_json::json!({"Type": "Notification", "MessageId": "m", "Message": S3})
            .to_string();
        assert_eq!(
            one(parse(&env)).key,
            "AWSLogs/1/CloudTrail/us-east-1/2023/07/10/a b=c.json.gz"
        );
    }

    #[test]
    fn eventbridge_object_created() {
        let body = r#"{"version":"0","detail-type":"Object Created","source":"aws.s3","time":"2023-07-10T11:45:01Z","detail":{"bucket":{"name":"trail"},"object":{"key":"k+1.json.gz","size":7}}}"#;
        let a = one(parse(body));
        assert_eq!(
            (a.bucket.as_str(), a.key.as_str(), a.size),
            ("trail", "k+1.json.gz", Some(7))
        );
        let deleted = body.replace("Object Created", "Object Deleted");
        assert_eq!(parse(&deleted), Notice::Objects(vec![]));
    }

    #[test]
    fn cloudtrail_sns_message() {
        let inner = r#"{"s3Bucket":"trail","s3ObjectKey":["AWSLogs/1/CloudTrail/r/2023/07/10/a.json.gz","AWSLogs/1/CloudTrail/r/2023/07/10/b.json.gz"]}"#;
        let env = serde_json::json!({"Type": "Notification", "Message": inner}).to_string();
        match parse(&env) {
            Notice::Objects(v) => assert_eq!(
                v.iter().map(|a| a.key.as_str()).collect::<Vec<_>>().len(),
                2
            ),
            other => panic!("{other:?}"),
        }
    }

    /// The key `AWSLogs/a b+c/é.json.gz` (a space, a plus, a non-ASCII character) as each
    /// shape carries it.
    const KEY: &str = "AWSLogs/a b+c/é.json.gz";

    fn s3_event_with(key: &str) -> String {
        serde_json::json!({"Records": [{
            "eventName": "ObjectCreated:Put",
            "eventTime": "2023-07-10T11:45:01.123Z",
            "s3": {"bucket": {"name": "trail"}, "object": {"key": key, "size": 1}}
        }]})
        .to_string()
    }

    #[test]
    fn s3_event_keys_are_form_decoded() {
        let a = one(parse(&s3_event_with("AWSLogs/a+b%2Bc/%C3%A9.json.gz")));
        assert_eq!(a.key, KEY);
        // A raw non-ASCII character (not escaped) passes through.
        assert_eq!(
            one(parse(&s3_event_with("AWSLogs/%C3%A9é"))).key,
            "AWSLogs/éé"
        );
    }

    #[test]
    fn sns_wrapped_s3_event_keys_are_form_decoded() {
        let env = serde_json::json!({
            "Type": "Notification",
            "MessageId": "m",
            "Message": s3_event_with("AWSLogs/a+b%2Bc/%C3%A9.json.gz"),
        })
        .to_string();
        assert_eq!(one(parse(&env)).key, KEY);
    }

    #[test]
    fn eventbridge_and_cloudtrail_keys_are_taken_as_they_are() {
        let eb = serde_json::json!({
            "version": "0", "detail-type": "Object Created", "source": "aws.s3",
            "time": "2023-07-10T11:45:01Z",
            "detail": {"bucket": {"name": "trail"}, "object": {"key": KEY, "size": 7}}
        });
        assert_eq!(one(parse(&eb.to_string())).key, KEY);
        let mut literal = eb.clone();
        literal["detail"]["object"]["key"] = "AWSLogs/100%2B.json.gz".into();
        assert_eq!(
            one(parse(&literal.to_string())).key,
            "AWSLogs/100%2B.json.gz"
        );
        let env = serde_json::json!({"Type": "Notification", "Message": eb.to_string()});
        assert_eq!(one(parse(&env.to_string())).key, KEY);
        let ct = serde_json::json!({"s3Bucket": "trail", "s3ObjectKey": [KEY]}).to_string();
        let a = one(parse(&ct));
        assert_eq!((a.key.as_str(), a.time), (KEY, None));
    }

    #[test]
    fn bad_escapes_are_refused_not_guessed() {
        for key in ["%zz", "a%2", "a%", "%+5", "%-1", "%C3"] {
            assert!(
                matches!(parse(&s3_event_with(key)), Notice::Unknown(_)),
                "{key:?}"
            );
        }
    }

    #[test]
    fn test_event_and_unknown_shapes() {
        assert_eq!(
            parse(r#"{"Service":"Amazon S3","Event":"s3:TestEvent","Bucket":"b"}"#),
            Notice::Test
        );
        assert!(matches!(parse("hello"), Notice::Unknown(_)));
        assert!(matches!(parse(r#"{"foo":1}"#), Notice::Unknown(_)));
        assert!(matches!(
            parse(r#"{"Records":[{"eventName":"ObjectCreated:Put"}]}"#),
            Notice::Unknown(_)
        ));
        assert!(matches!(
            parse(
                r#"{"Records":[{"eventName":"ObjectCreated:Put","s3":{"bucket":{"name":"b"},"object":{"key":"%zz"}}}]}"#
            ),
            Notice::Unknown(_)
        ));
    }
}
