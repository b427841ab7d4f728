//! Fuzzes the whole object path: decode (gzip or plain), split, and both encoders.
//! Invariants: nothing panics; every event handed over is an object's text; an event
//! either fails to encode or encodes into exactly one complete msgpack record and one
//! JSON line that parses.
#![no_main]

use cloudtrail_s3::Encoder;
use cloudtrail_s3::read::decode;
use cloudtrail_s3::encode::msgpack::MsgpackEncoder;
use cloudtrail_s3::encode::ndjson::NdjsonEncoder;
use cloudtrail_s3::object::ObjectRef;
use cloudtrail_s3::read::split::{SplitOptions, split};
use cloudtrail_s3::timestamp::EventTime;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let fallback = EventTime::from_parts(1, 0).unwrap();
    let object = ObjectRef::s3(&"b".into(), "k".into(), data.len() as u64, fallback);
    let msgpack = MsgpackEncoder { metadata_key: Some("m".into()) };
    let ndjson = NdjsonEncoder { metadata_key: Some("m".into()), time_key: Some("t".into()) };
    let options = SplitOptions { skip: 0, fallback, max_event_bytes: 1 << 16 };
    let out = split(decode::open(data, 1 << 20), options, |e| {
        assert!(e.json.starts_with('{') && e.json.ends_with('}'), "{:?}", e.json);
        let mut buf = Vec::new();
        if msgpack.encode(&e, &object, &mut buf).is_ok() {
            let mut rest = &buf[..];
            rmpv::decode::read_value(&mut rest).expect("one complete msgpack value");
            assert!(rest.is_empty(), "exactly one record");
        }
        let mut line = Vec::new();
        if ndjson.encode(&e, &object, &mut line).is_ok() {
            assert_eq!(line.iter().filter(|&&c| c == b'\n').count(), 1);
            serde_json::from_slice::<serde_json::Value>(&line).expect("the line is JSON");
        }
        Ok(())
    });
    assert!(out.stats.events + out.stats.not_objects <= out.stats.position);
});
