//! JSON lines: one event per line, its text exactly as in the source object.
//!
//! The event's own bytes are written as they are (CloudTrail writes compact JSON); only an
//! event with a raw line break inside (pretty-printed input) is re-serialized, since a line
//! break would split the record. The optional metadata object is spliced in as the last
//! member, and the optional time key as the first, so the line stays one JSON object.
//!
//! The time key is for receivers that find a message's time by themselves: Sumo Logic
//! takes the first timestamp in a message, and a CloudTrail event can hold an earlier one
//! before its `eventTime` (`additionalEventData`). With `time_key` the line starts with the
//! event's own time, as Fluent Bit's `json_date_key` does for the plugin's samples.

use std::io::Write;

use crate::encode::{Encoder, big_numbers};
use crate::object::ObjectRef;
use crate::read::split::Event;

/// Encodes events as newline-terminated JSON objects.
#[derive(Debug, Clone, Default)]
pub struct NdjsonEncoder {
    pub metadata_key: Option<String>,
    /// When set, each line starts with this key holding the event's time (RFC 3339, UTC).
    pub time_key: Option<String>,
}

impl Encoder for NdjsonEncoder {
    fn encode(
        &self,
        event: &Event<'_>,
        object: &ObjectRef,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let start = out.len();
        self.encode_text(event, object, out).or_else(|e| {
            // A number no JSON reader on the way can hold: the event goes with it as its
            // JSON text, never left out.
            let json = big_numbers::quoted(event.json).ok_or(e)?;
            out.truncate(start);
            let event = Event {
                json: &json,
                ..*event
            };
            self.encode_text(&event, object, out)
        })
    }
}

impl NdjsonEncoder {
    fn encode_text(
        &self,
        event: &Event<'_>,
        object: &ObjectRef,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        let text = event.json;
        let start = out.len();
        if let Some(key) = &self.time_key {
            out.push(b'{');
            serde_json::to_writer(&mut *out, key).map_err(|e| e.to_string())?;
            out.push(b':');
            serde_json::to_writer(&mut *out, &event.time.to_rfc3339())
                .map_err(|e| e.to_string())?;
        }
        let body = out.len();
        if text.contains(['\n', '\r']) {
            let value: serde_json::Value = serde_json::from_str(text).map_err(|e| e.to_string())?;
            serde_json::to_writer(&mut *out, &value).map_err(|e| e.to_string())?;
        } else {
            // The splitter checked structure only; the line must be JSON the reader can
            // parse, numbers in range included (as the msgpack path requires too).
            serde_json::from_str::<Checked>(text).map_err(|e| format!("invalid JSON: {e}"))?;
            out.extend_from_slice(text.as_bytes());
        }
        if self.time_key.is_some() {
            // `{"time":"…"` then the event without its opening brace, and a comma unless
            // the event is empty.
            let Some(open) = out[body..].iter().position(|&b| b == b'{') else {
                return Err("event is not a JSON object".into());
            };
            let rest = body + open + 1;
            let empty = out[rest..]
                .iter()
                .all(|&b| b == b'}' || b.is_ascii_whitespace());
            out.drain(body..rest);
            if !empty {
                out.insert(body, b',');
            }
        }
        if let Some(key) = &self.metadata_key {
            // The event is an object (the splitter guarantees it): drop its closing brace.
            let Some(close) = out[start..].iter().rposition(|&b| b == b'}') else {
                return Err("event is not a JSON object".into());
            };
            out.truncate(start + close);
            let empty = out[start..]
                .iter()
                .all(|&b| b == b'{' || b.is_ascii_whitespace());
            if !empty {
                out.push(b',');
            }
            let meta = object.meta();
            serde_json::to_writer(&mut *out, key).map_err(|e| e.to_string())?;
            out.push(b':');
            let value = match meta.bucket {
                Some(b) => serde_json::json!({ "bucket": b, "key": meta.key }),
                None => serde_json::json!({ "key": meta.key }),
            };
            serde_json::to_writer(&mut *out, &value).map_err(|e| e.to_string())?;
            out.push(b'}');
        }
        writeln!(out).map_err(|e| e.to_string())
    }
}

/// Parses a JSON value completely (numbers converted, strings unescaped) and keeps
/// nothing: stricter than `IgnoredAny`, which skips numbers without reading them.
struct Checked;

impl<'de> serde::Deserialize<'de> for Checked {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(CheckedVisitor)
    }
}

struct CheckedVisitor;

impl<'de> serde::de::Visitor<'de> for CheckedVisitor {
    type Value = Checked;
    fn expecting(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_bool<E>(self, _: bool) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_i64<E>(self, _: i64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_u64<E>(self, _: u64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_f64<E>(self, _: f64) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_str<E>(self, _: &str) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_unit<E>(self) -> Result<Checked, E> {
        Ok(Checked)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Checked, A::Error> {
        while seq.next_element::<Checked>()?.is_some() {}
        Ok(Checked)
    }
    fn visit_map<A: serde::de::MapAccess<'de>>(self, mut map: A) -> Result<Checked, A::Error> {
        while map.next_key::<serde::de::IgnoredAny>()?.is_some() {
            map.next_value::<Checked>()?;
        }
        Ok(Checked)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::timestamp::EventTime;

    fn enc(json: &str, meta: Option<&str>) -> String {
        let t = EventTime::from_parts(1, 0).unwrap();
        let event = Event {
            index: 0,
            json,
            time: t,
        };
        let object = ObjectRef::s3(&"b".into(), "k/x.json.gz".into(), 1, t);
        let mut out = Vec::new();
        NdjsonEncoder {
            metadata_key: meta.map(String::from),
            time_key: None,
        }
        .encode(&event, &object, &mut out)
        .unwrap();
        String::from_utf8(out).unwrap()
    }

    #[test]
    fn keeps_the_source_text() {
        assert_eq!(
            enc(r#"{"b":1.50,"a":"\u00e9"}"#, None),
            "{\"b\":1.50,\"a\":\"\\u00e9\"}\n"
        );
    }

    #[test]
    fn refuses_what_a_json_reader_would_refuse() {
        let t = EventTime::from_parts(1, 0).unwrap();
        let object = ObjectRef::s3(&"b".into(), "k".into(), 1, t);
        for bad in [r#"{"a" 1}"#, r#"{"a":[1}"#, r#"{"a":1e999,"b"}"#] {
            let event = Event {
                index: 0,
                json: bad,
                time: t,
            };
            let mut out = Vec::new();
            let r = NdjsonEncoder::default().encode(&event, &object, &mut out);
            assert!(r.is_err(), "{bad}");
        }
    }

    #[test]
    fn numbers_beyond_f64_go_as_their_text() {
        assert_eq!(
            enc(r#"{"a":1e999,"b":[2]}"#, None),
            "{\"a\":\"1e999\",\"b\":[2]}\n"
        );
        assert_eq!(
            enc("{\n \"a\": -1e999\n}", Some("src")),
            "{\"a\":\"-1e999\",\"src\":{\"bucket\":\"b\",\"key\":\"k/x.json.gz\"}}\n"
        );
    }

    #[test]
    fn one_line_even_for_pretty_input() {
        assert_eq!(enc("{\n \"a\": 1\n}", None), "{\"a\":1}\n");
    }

    #[test]
    fn time_key_first_then_the_event_then_metadata() {
        let t = EventTime::parse("2023-07-10T11:42:36Z").unwrap();
        let object = ObjectRef::s3(&"b".into(), "k".into(), 1, t);
        let line = |json: &str, meta: Option<&str>| {
            let mut out = b"prev\n".to_vec();
            let encoder = NdjsonEncoder {
                metadata_key: meta.map(String::from),
                time_key: Some("timestamp".into()),
            };
            let event = Event {
                index: 0,
                json,
                time: t,
            };
            encoder.encode(&event, &object, &mut out).unwrap();
            String::from_utf8(out).unwrap()
        };
        assert_eq!(
            line(r#"{"eventTime":"2023-07-10T11:42:36Z","a":1}"#, None),
            "prev\n{\"timestamp\":\"2023-07-10T11:42:36Z\",\"eventTime\":\"2023-07-10T11:42:36Z\",\"a\":1}\n"
        );
        assert_eq!(
            line("{ }", None),
            "prev\n{\"timestamp\":\"2023-07-10T11:42:36Z\" }\n"
        );
        assert_eq!(
            line("{\n \"a\": 1\n}", Some("m")),
            "prev\n{\"timestamp\":\"2023-07-10T11:42:36Z\",\"a\":1,\"m\":{\"bucket\":\"b\",\"key\":\"k\"}}\n"
        );
        for l in [line(r#"{"a":[{}]}"#, Some("m")), line("{}", Some("m"))] {
            let v: serde_json::Value = serde_json::from_str(l.lines().nth(1).unwrap()).unwrap();
            assert_eq!(v["timestamp"], "2023-07-10T11:42:36Z", "{l}");
        }
    }

    #[test]
    fn metadata_spliced_in_last() {
        assert_eq!(
            enc(r#"{"a":1}"#, Some("s3")),
            "{\"a\":1,\"s3\":{\"bucket\":\"b\",\"key\":\"k/x.json.gz\"}}\n"
        );
        assert_eq!(
            enc("{ }", Some("m")),
            "{ \"m\":{\"bucket\":\"b\",\"key\":\"k/x.json.gz\"}}\n"
        );
    }
}
