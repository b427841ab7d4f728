//! Inputs the fuzzer (`fuzz/`, target `split`) found interesting, replayed with the fuzz
//! target's invariants: no panic, every handed-over event is an object's text, and every
//! event either fails to encode or becomes exactly one record and one JSON line.

use cloudtrail_s3::Encoder;
use cloudtrail_s3::encode::msgpack::MsgpackEncoder;
use cloudtrail_s3::encode::ndjson::NdjsonEncoder;
use cloudtrail_s3::object::ObjectRef;
use cloudtrail_s3::read::decode;
use cloudtrail_s3::read::split::{SplitOptions, split};
use cloudtrail_s3::timestamp::EventTime;

#[test]
fn fuzz_regressions_replay_cleanly() {
    let dir = std::path::PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("fuzz/regressions");
    let mut n = 0;
    for entry in std::fs::read_dir(&dir).unwrap() {
        let data = std::fs::read(entry.unwrap().path()).unwrap();
        let fallback = EventTime::from_parts(1, 0).unwrap();
        let object = ObjectRef::s3(&"b".into(), "k".into(), data.len() as u64, fallback);
        let msgpack = MsgpackEncoder {
            metadata_key: Some("m".into()),
        };
        let ndjson = NdjsonEncoder {
            metadata_key: Some("m".into()),
            time_key: Some("t".into()),
        };
        let options = SplitOptions {
            skip: 0,
            passed: Vec::new(),
            fallback,
            max_event_bytes: 1 << 16,
        };
        let out = split(decode::open(&data, 1 << 20), options, |e| {
            assert!(
                e.json.starts_with('{') && e.json.ends_with('}'),
                "{:?}",
                e.json
            );
            let mut buf = Vec::new();
            if msgpack.encode(&e, &object, &mut buf).is_ok() {
                let mut rest = &buf[..];
                rmpv::decode::read_value(&mut rest).expect("one complete msgpack value");
                assert!(rest.is_empty());
            }
            let mut line = Vec::new();
            if ndjson.encode(&e, &object, &mut line).is_ok() {
                serde_json::from_slice::<serde_json::Value>(&line).expect("the line is JSON");
            }
            Ok(())
        });
        assert!(out.stats.events + out.stats.not_objects <= out.stats.position);
        n += 1;
    }
    assert!(n > 0, "no regression inputs in {}", dir.display());
}
