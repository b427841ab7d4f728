//! Fluent Bit's record format: `[[EventTime, {}], body]`, with the event's JSON transcoded
//! straight into msgpack. Pure Rust with no host types, so it lives in the engine crate where
//! benchmarks can reach it; the plugin only hands the bytes over.
//!
//! The transcoder walks the JSON with serde and writes msgpack as it goes, with no
//! intermediate tree, so key order and value types are exactly the source's. JSON does not
//! announce how many entries a map or array has, so a 5-byte header is reserved and shrunk
//! to the smallest form once the count is known.

use std::fmt;

use crate::encode::{Encoder, big_numbers};
use crate::object::{ObjectMeta, ObjectRef};
use crate::read::split::Event;
use crate::timestamp::EventTime;
use serde::de::{self, DeserializeSeed, MapAccess, SeqAccess, Visitor};

/// Encodes events as Fluent Bit v2 log records.
pub struct MsgpackEncoder {
    /// When set, each body gets `{"bucket": ..., "key": ...}` under this key.
    pub metadata_key: Option<String>,
}

impl Encoder for MsgpackEncoder {
    fn encode(
        &self,
        event: &Event<'_>,
        object: &ObjectRef,
        out: &mut Vec<u8>,
    ) -> Result<(), String> {
        write_header(event.time, out);
        let body = out.len();
        let extra = self.metadata_key.as_deref().map(|k| (k, object.meta()));
        transcode_object(event.json, extra, out).or_else(|e| {
            // A number msgpack cannot hold: the event goes with it as its JSON text.
            let json = big_numbers::quoted(event.json).ok_or(e)?;
            out.truncate(body);
            transcode_object(&json, extra, out)
        })
    }
}

/// `[[EventTime, {}],` : array of 2, array of 2, fixext8 type 0, empty map.
///
/// An [`EventTime`] never holds Fluent Bit's group-marker seconds (0xFFFFFFFE, 0xFFFFFFFF):
/// its constructors refuse them, so no record written here can open or close a group.
pub fn write_header(time: EventTime, out: &mut Vec<u8>) {
    debug_assert!(time.secs() <= EventTime::MAX_SECS);
    out.extend_from_slice(&[0x92, 0x92, 0xd7, 0x00]);
    out.extend_from_slice(&time.secs().to_be_bytes());
    out.extend_from_slice(&time.nanos().to_be_bytes());
    out.push(0x80);
}

/// Transcodes a JSON object, appending `extra` as one more entry at the end.
pub fn transcode_object(
    json: &str,
    extra: Option<(&str, ObjectMeta<'_>)>,
    out: &mut Vec<u8>,
) -> Result<(), String> {
    let mut de = serde_json::Deserializer::from_str(json);
    Value { out, extra }
        .deserialize(&mut de)
        .and_then(|()| de.end())
        .map_err(|e| format!("msgpack transcoding: {e}"))
}

const MAP: (u8, u8, u8) = (0x80, 0xde, 0xdf);
const ARRAY: (u8, u8, u8) = (0x90, 0xdc, 0xdd);

/// Reserves a 3-byte header (the 16-bit count form), the right size for CloudTrail's
/// top-level maps, so the biggest container is never moved; [`finish_container`] shrinks
/// it for small ones and grows it past 65,535 entries.
const RESERVED: usize = 3;

fn start_container(out: &mut Vec<u8>) -> usize {
    let at = out.len();
    out.extend_from_slice(&[0; RESERVED]);
    at
}

fn finish_container(out: &mut Vec<u8>, at: usize, n: usize, (fix, c16, c32): (u8, u8, u8)) {
    let mut hdr = [0u8; 5];
    let len = if n <= 15 {
        hdr[0] = fix | n as u8;
        1
    } else if let Ok(n) = u16::try_from(n) {
        hdr[0] = c16;
        hdr[1..3].copy_from_slice(&n.to_be_bytes());
        3
    } else {
        hdr[0] = c32;
        hdr[1..5].copy_from_slice(&(n as u32).to_be_bytes());
        5
    };
    match len.cmp(&RESERVED) {
        std::cmp::Ordering::Less => {
            out.copy_within(at + RESERVED.., at + len);
            out.truncate(out.len() - (RESERVED - len));
        }
        std::cmp::Ordering::Greater => {
            let grow = len - RESERVED;
            let end = out.len();
            out.extend_from_slice(&[0; 2][..grow]);
            out.copy_within(at + RESERVED..end, at + len);
        }
        std::cmp::Ordering::Equal => {}
    }
    out[at..at + len].copy_from_slice(&hdr[..len]);
}

pub fn write_str(s: &str, out: &mut Vec<u8>) {
    let n = s.len();
    if n <= 31 {
        out.push(0xa0 | n as u8);
    } else if n <= 0xff {
        out.extend_from_slice(&[0xd9, n as u8]);
    } else if n <= 0xffff {
        out.push(0xda);
        out.extend_from_slice(&(n as u16).to_be_bytes());
    } else {
        out.push(0xdb);
        out.extend_from_slice(&(n as u32).to_be_bytes());
    }
    out.extend_from_slice(s.as_bytes());
}

fn write_u64(v: u64, out: &mut Vec<u8>) {
    if v <= 0x7f {
        out.push(v as u8);
    } else if v <= 0xff {
        out.extend_from_slice(&[0xcc, v as u8]);
    } else if v <= 0xffff {
        out.push(0xcd);
        out.extend_from_slice(&(v as u16).to_be_bytes());
    } else if v <= 0xffff_ffff {
        out.push(0xce);
        out.extend_from_slice(&(v as u32).to_be_bytes());
    } else {
        out.push(0xcf);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn write_i64(v: i64, out: &mut Vec<u8>) {
    if v >= 0 {
        write_u64(v as u64, out);
    } else if v >= -32 {
        out.push(v as i8 as u8);
    } else if v >= i64::from(i8::MIN) {
        out.extend_from_slice(&[0xd0, v as i8 as u8]);
    } else if v >= i64::from(i16::MIN) {
        out.push(0xd1);
        out.extend_from_slice(&(v as i16).to_be_bytes());
    } else if v >= i64::from(i32::MIN) {
        out.push(0xd2);
        out.extend_from_slice(&(v as i32).to_be_bytes());
    } else {
        out.push(0xd3);
        out.extend_from_slice(&v.to_be_bytes());
    }
}

fn write_meta(key: &str, meta: ObjectMeta<'_>, out: &mut Vec<u8>) {
    write_str(key, out);
    match meta.bucket {
        Some(bucket) => {
            out.push(0x82);
            write_str("bucket", out);
            write_str(bucket, out);
        }
        None => out.push(0x81),
    }
    write_str("key", out);
    write_str(meta.key, out);
}

/// One JSON value; `extra` is only set for the top-level object.
struct Value<'o, 'e> {
    out: &'o mut Vec<u8>,
    extra: Option<(&'e str, ObjectMeta<'e>)>,
}

impl<'de> DeserializeSeed<'de> for Value<'_, '_> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for Value<'_, '_> {
    type Value = ();

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }

    fn visit_bool<E>(self, v: bool) -> Result<(), E> {
        self.out.push(if v { 0xc3 } else { 0xc2 });
        Ok(())
    }
    fn visit_i64<E>(self, v: i64) -> Result<(), E> {
        write_i64(v, self.out);
        Ok(())
    }
    fn visit_u64<E>(self, v: u64) -> Result<(), E> {
        write_u64(v, self.out);
        Ok(())
    }
    fn visit_f64<E>(self, v: f64) -> Result<(), E> {
        self.out.push(0xcb);
        self.out.extend_from_slice(&v.to_be_bytes());
        Ok(())
    }
    fn visit_str<E>(self, v: &str) -> Result<(), E> {
        write_str(v, self.out);
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        self.out.push(0xc0);
        Ok(())
    }
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        let at = start_container(self.out);
        let mut n = 0;
        while seq
            .next_element_seed(Value {
                out: &mut *self.out,
                extra: None,
            })?
            .is_some()
        {
            n += 1;
        }
        finish_container(self.out, at, n, ARRAY);
        Ok(())
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        let at = start_container(self.out);
        let mut n = 0;
        while map
            .next_key_seed(Value {
                out: &mut *self.out,
                extra: None,
            })?
            .is_some()
        {
            map.next_value_seed(Value {
                out: &mut *self.out,
                extra: None,
            })?;
            n += 1;
        }
        if let Some((key, meta)) = self.extra {
            write_meta(key, meta, self.out);
            n += 1;
        }
        finish_container(self.out, at, n, MAP);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tx(json: &str) -> Vec<u8> {
        let mut out = Vec::new();
        transcode_object(json, None, &mut out).unwrap();
        out
    }

    #[test]
    fn small_forms() {
        assert_eq!(tx(r#"{"a":1}"#), [0x81, 0xa1, b'a', 0x01]);
        assert_eq!(
            tx(r#"{"n":-1,"t":true,"z":null}"#),
            [0x83, 0xa1, b'n', 0xff, 0xa1, b't', 0xc3, 0xa1, b'z', 0xc0]
        );
        assert_eq!(tx(r#"{"a":[1,2]}"#), [0x81, 0xa1, b'a', 0x92, 1, 2]);
        assert_eq!(
            tx(r#"{"e":"\u00e9"}"#),
            [0x81, 0xa1, b'e', 0xa2, 0xc3, 0xa9]
        );
    }

    #[test]
    fn large_containers_and_numbers() {
        let json = format!("{{\"a\":[{}]}}", vec!["300"; 20].join(","));
        let out = tx(&json);
        assert_eq!(&out[..6], &[0x81, 0xa1, b'a', 0xdc, 0, 20]);
        assert_eq!(&out[6..9], &[0xcd, 0x01, 0x2c]);
        assert_eq!(tx(r#"{"f":1.5}"#)[3], 0xcb);
        assert_eq!(tx(r#"{"b":-200}"#)[3..], [0xd1, 0xff, 0x38]);
        assert_eq!(tx(r#"{"u":18446744073709551615}"#)[3], 0xcf);
    }

    #[test]
    fn numbers_beyond_f64_go_as_their_text() {
        let t = EventTime::from_parts(7, 0).unwrap();
        let object = ObjectRef::file("x".into(), "x".into(), 0, t);
        let event = Event {
            index: 0,
            json: r#"{"a":1e400,"b":1}"#,
            time: t,
        };
        let mut out = Vec::new();
        MsgpackEncoder { metadata_key: None }
            .encode(&event, &object, &mut out)
            .unwrap();
        let record = rmpv::decode::read_value(&mut &out[..]).unwrap();
        assert_eq!(record[1]["a"].as_str(), Some("1e400"));
        assert_eq!(record[1]["b"].as_u64(), Some(1));
        assert!(transcode_object(r#"{"a":1e400}"#, None, &mut Vec::new()).is_err());
    }

    #[test]
    fn containers_past_65535_entries_grow_their_header() {
        let json = format!("{{\"a\":[{}]}}", vec!["1"; 70_000].join(","));
        let out = tx(&json);
        assert_eq!(&out[..8], &[0x81, 0xa1, b'a', 0xdd, 0, 1, 0x11, 0x70]);
        assert_eq!(out.len(), 3 + 5 + 70_000);
        let v = rmpv::decode::read_value(&mut &out[..]).unwrap();
        assert_eq!(v["a"].as_array().unwrap().len(), 70_000);
    }

    #[test]
    fn no_record_carries_a_group_marker_time() {
        use crate::object::ObjectRef;
        use crate::read::split::{SplitOptions, split};
        let json = r#"{"Records":[{"eventTime":"2106-02-07T06:28:14Z"},{"eventTime":"2106-02-07T06:28:15Z"},{"eventTime":"2200-01-01T00:00:00Z"},{"eventTime":"1969-12-31T23:59:59Z"},{"eventTime":"2023-07-10T11:42:36Z"}]}"#;
        let fallback = EventTime::from_parts(1_000, 5).unwrap();
        let object = ObjectRef::file("x".into(), "x".into(), 0, fallback);
        let encoder = MsgpackEncoder { metadata_key: None };
        let mut out = Vec::new();
        let options = SplitOptions {
            skip: 0,
            passed: Vec::new(),
            fallback,
            max_event_bytes: 1 << 20,
        };
        let done = split(json.as_bytes(), options, |e| {
            encoder.encode(&e, &object, &mut out).unwrap();
            Ok(())
        });
        assert_eq!(done.error, None);
        let mut rest = &out[..];
        let mut times = Vec::new();
        while !rest.is_empty() {
            let record = rmpv::decode::read_value(&mut rest).unwrap();
            let rmpv::Value::Ext(0, data) = &record[0][0] else {
                panic!("no EventTime in {record}");
            };
            let secs = u32::from_be_bytes(data[..4].try_into().unwrap());
            let nanos = u32::from_be_bytes(data[4..].try_into().unwrap());
            assert!(secs < 0xFFFF_FFFE, "group marker {secs:#x} in {record}");
            times.push((secs, nanos));
        }
        assert_eq!(
            times,
            [
                (1_000, 5),
                (1_000, 5),
                (1_000, 5),
                (1_000, 5),
                (1_688_989_356, 0)
            ]
        );
    }

    #[test]
    fn metadata_is_appended_as_last_entry() {
        let mut out = Vec::new();
        let meta = ObjectMeta {
            bucket: Some("b"),
            key: "k",
        };
        transcode_object(r#"{"a":1}"#, Some(("src", meta)), &mut out).unwrap();
        assert_eq!(out[0], 0x82);
        assert_eq!(&out[4..8], &[0xa3, b's', b'r', b'c']);
    }
}
