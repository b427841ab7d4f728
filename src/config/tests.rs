use super::*;

fn props(pairs: &[(&str, &str)]) -> Result<Config, String> {
    let s = Settings::from_properties(|k| {
        pairs
            .iter()
            .find(|(pk, _)| *pk == k)
            .map(|(_, v)| v.to_string())
    })
    .map_err(|e| e.to_string())?;
    s.validate().map_err(|e| e.to_string())
}

#[test]
fn defaults() {
    let c = props(&[("bucket", "my-trail")]).unwrap();
    assert_eq!(c.selection.as_str(), DEFAULT_PATH_EXPRESSION);
    assert_eq!(c.selection.kinds(), crate::layout::Kinds::EVENTS);
    assert_eq!(c.scan_interval, Duration::from_secs(60));
    assert_eq!(c.batch_bytes, 4 << 20);
    assert_eq!(c.buffer_bytes, 8 << 20);
    assert_eq!(c.workers, 8);
    assert_eq!(c.list_concurrency, 16);
    assert_eq!(c.scan_claims.get(), 100_000);
    assert_eq!(c.start_time, StartTime::Before(Duration::from_secs(86_400)));
}

#[test]
fn event_kinds_as_a_list_or_all() {
    use crate::layout::{Kind, Kinds};
    let c = props(&[("bucket", "bkt"), ("event_kinds", "insights, events")]).unwrap();
    assert_eq!(
        c.selection.kinds(),
        Kinds::of([Kind::Events, Kind::Insights])
    );
    let c = props(&[("bucket", "bkt"), ("event_kinds", "all")]).unwrap();
    assert_eq!(c.selection.kinds(), Kinds::ALL);
    // A typo is caught wherever it stands.
    assert!(props(&[("bucket", "bkt"), ("event_kinds", "all,insight")]).is_err());
    // Unset, kinds the expression matches as written stay shipped, as before kinds
    // existed; the default expression matches management and data events only.
    let c = props(&[("bucket", "bkt"), ("path_expression", "AWSLogs/*")]).unwrap();
    assert_eq!(c.selection.kinds(), Kinds::ALL);
    let c = props(&[("bucket", "bkt"), ("path_expression", "*.json.gz")]).unwrap();
    assert_eq!(c.selection.kinds(), Kinds::ALL);
    let c = props(&[
        ("bucket", "bkt"),
        ("path_expression", "logs/*/AWSLogs/*/CloudTrail-Insight/*"),
    ])
    .unwrap();
    assert_eq!(
        c.selection.kinds(),
        Kinds::of([Kind::Events, Kind::Insights])
    );
    let c = props(&[
        ("bucket", "bkt"),
        ("path_expression", "myorg/AWSLogs/*/CloudTrail/*"),
    ])
    .unwrap();
    assert_eq!(c.selection.kinds(), Kinds::EVENTS);
    // Set, it is what the user chose.
    let c = props(&[
        ("bucket", "bkt"),
        ("path_expression", "AWSLogs/*"),
        ("event_kinds", "events"),
    ])
    .unwrap();
    assert_eq!(c.selection.kinds(), Kinds::EVENTS);
    let e = props(&[("bucket", "bkt"), ("event_kinds", "insight")]).unwrap_err();
    assert!(
        e.contains("events, insights, network_activity, aggregated, all"),
        "{e}"
    );
}

#[test]
fn strings_with_units() {
    let c = props(&[
        ("bucket", "b-1"),
        ("scan_interval", "5m"),
        ("batch_bytes", "16M"),
        ("workers", "8"),
        ("force_path_style", "On"),
        ("start_time", "-7d"),
    ])
    .unwrap();
    assert_eq!(c.scan_interval, Duration::from_secs(300));
    assert_eq!(c.batch_bytes, 16 << 20);
    assert_eq!(
        c.batch_bytes_max,
        16 << 20,
        "a batch_bytes set alone is a fixed size"
    );
    let d = props(&[("bucket", "b-1")]).unwrap();
    assert_eq!((d.batch_bytes, d.batch_bytes_max), (4 << 20, 10 << 20));
    let e = props(&[
        ("bucket", "b-1"),
        ("batch_bytes", "1M"),
        ("batch_bytes_max", "8M"),
    ]);
    assert_eq!(e.unwrap().batch_bytes_max, 8 << 20);
    let f = props(&[
        ("bucket", "b-1"),
        ("batch_bytes", "8M"),
        ("batch_bytes_max", "1M"),
    ]);
    assert!(f.unwrap_err().to_string().contains("'batch_bytes_max'"));
    assert_eq!(c.workers, 8);
    assert_eq!(
        c.start_time,
        StartTime::Before(Duration::from_secs(7 * 86_400))
    );
    let Source::S3(s3) = c.source else { panic!() };
    assert!(s3.force_path_style);
}

#[test]
fn errors_name_the_key() {
    for (pairs, key) in [
        (&[][..], "'bucket'"),
        (&[("bucket", "s3://x")][..], "'bucket'"),
        (&[("bucket", "abc"), ("dir", "/x")][..], "'bucket'"),
        (&[("bucket", "abc"), ("workers", "0")][..], "'workers'"),
        (
            &[("bucket", "abc"), ("list_concurrency", "0")][..],
            "'list_concurrency'",
        ),
        (
            &[("bucket", "abc"), ("list_concurrency", "257")][..],
            "'list_concurrency'",
        ),
        (
            &[("bucket", "abc"), ("scan_claims", "0")][..],
            "'scan_claims'",
        ),
        (
            &[("bucket", "abc"), ("scan_claims", "10000001")][..],
            "'scan_claims'",
        ),
        (&[("bucket", "abc"), ("workers", "many")][..], "'workers'"),
        (
            &[("bucket", "abc"), ("event_kinds", "events,insight")][..],
            "'event_kinds'",
        ),
        (
            &[("bucket", "abc"), ("event_kinds", " , ")][..],
            "'event_kinds'",
        ),
        (
            &[
                ("bucket", "abc"),
                ("path_expression", "AWSLogs/*/CloudTrail-Insight/*"),
                ("event_kinds", "events"),
            ][..],
            "'event_kinds'",
        ),
        (
            &[("bucket", "abc"), ("batch_bytes", "1")][..],
            "'batch_bytes'",
        ),
        (
            &[("bucket", "abc"), ("start_time", "yesterday")][..],
            "'start_time'",
        ),
        (
            &[("bucket", "abc"), ("endpoint", "localhost:9000")][..],
            "'endpoint'",
        ),
        (
            &[("bucket", "abc"), ("access_key_id", "AKIA")][..],
            "'secret_access_key'",
        ),
        (
            &[("bucket", "abc"), ("role_arn", "admin")][..],
            "'role_arn'",
        ),
        (
            &[("bucket", "abc"), ("force_path_style", "maybe")][..],
            "'force_path_style'",
        ),
    ] {
        let err = props(pairs).unwrap_err();
        assert!(err.contains(key), "{pairs:?}: {err}");
    }
}

#[test]
fn the_defaults_shown_in_the_key_table_are_the_defaults() {
    let base = [
        ("bucket", "my-trail"),
        ("sqs.queue_url", "https://sqs.us-east-1.amazonaws.com/1/q"),
    ];
    let implicit = format!("{:?}", props(&base).unwrap());
    let mut explicit: Vec<(&str, &str)> = base.to_vec();
    // The shared ledger's keys go with a table, which this base has none of.
    explicit.extend(
        KEYS.iter()
            .filter(|k| !k.name.starts_with("ledger.") && !k.name.starts_with("digest."))
            .filter_map(|k| Some((k.name, k.default?))),
    );
    assert_eq!(format!("{:?}", props(&explicit).unwrap()), implicit);
    for k in KEYS {
        let Some(d) = k.default else { continue };
        let parses = match k.kind {
            KeyKind::Bool => ["true", "false", "on", "off"].contains(&d),
            KeyKind::Int => d.parse::<u64>().is_ok(),
            KeyKind::Size => de::parse_bytes(d).is_some(),
            KeyKind::Time => d.parse::<u64>().is_ok(),
            KeyKind::Str => true,
        };
        assert!(
            parses,
            "{}: default {d} is not a plain {:?}",
            k.name, k.kind
        );
    }
}

#[test]
fn a_shared_ledger_is_for_s3_in_the_cloudtrail_layout_and_in_place_of_db() {
    let q = ("sqs.queue_url", "https://sqs.us-east-1.amazonaws.com/1/q");
    let c = props(&[q, ("ledger.dynamodb_table", "ct-ledger")]).unwrap();
    let shared = c.shared_ledger.expect("shared");
    assert_eq!(
        (shared.table.as_str(), shared.lease_time.as_secs()),
        ("ct-ledger", 60)
    );
    let table = ("ledger.dynamodb_table", "tab");
    for listing in [
        &[("bucket", "my-trail"), table][..],
        &[q, ("bucket", "my-trail"), table][..],
    ] {
        assert!(
            props(listing).unwrap().shared_ledger.is_some(),
            "{listing:?}"
        );
    }
    for (pairs, key, says) in [
        (
            &[
                table,
                ("bucket", "my-trail"),
                ("path_expression", "exports/*"),
            ][..],
            "'ledger.dynamodb_table'",
            "CloudTrail's layout",
        ),
        (
            &[table, ("dir", "/tmp")][..],
            "'ledger.dynamodb_table'",
            "not 'dir'",
        ),
        (
            &[q, ("ledger.dynamodb_table", "tab"), ("db", "/tmp/x")][..],
            "'ledger.dynamodb_table'",
            "not both",
        ),
        (
            &[q, ("ledger.dynamodb_table", "no spaces")][..],
            "'ledger.dynamodb_table'",
            "table name",
        ),
        (
            &[
                q,
                ("ledger.dynamodb_table", "tab"),
                ("ledger.lease_time", "2"),
            ][..],
            "'ledger.lease_time'",
            "between",
        ),
        (
            &[q, ("ledger.dynamodb_endpoint", "http://x")][..],
            "'ledger.dynamodb_endpoint'",
            "needs",
        ),
        (
            &[q, ("ledger.lease_time", "60")][..],
            "'ledger.lease_time'",
            "needs",
        ),
    ] {
        let err = props(pairs).unwrap_err();
        assert!(err.contains(key) && err.contains(says), "{pairs:?}: {err}");
    }
}

#[test]
fn digest_checks_have_their_bucket_lookback_and_a_safe_default_for_shipping() {
    let q = ("sqs.queue_url", "https://sqs.us-east-1.amazonaws.com/1/q");
    let on = ("digest.validate", "true");
    let listing = props(&[("bucket", "trail"), on]).unwrap().digest.unwrap();
    assert_eq!(
        (listing.bucket.as_str(), listing.ship_missing),
        ("trail", true)
    );
    assert_eq!(
        (listing.every.as_secs(), listing.grace.as_secs()),
        (600, 3600)
    );
    // SQS alone with this shipper's own ledger: other shippers on the queue may ship
    // what it never hears of, so it does not ship from digests unless told to.
    let alone = props(&[q, on, ("digest.bucket", "trail")])
        .unwrap()
        .digest
        .unwrap();
    assert!(!alone.ship_missing);
    let told = props(&[
        q,
        on,
        ("digest.bucket", "trail"),
        ("digest.ship_missing", "true"),
    ]);
    let told = told.unwrap().digest.unwrap();
    assert!(told.ship_missing);
    assert!(!told.findings_as_records, "off unless asked");
    let records = props(&[
        q,
        on,
        ("digest.bucket", "trail"),
        ("digest.findings_as_records", "true"),
    ]);
    assert!(records.unwrap().digest.unwrap().findings_as_records);
    let alone = props(&[("bucket", "trail"), ("digest.findings_as_records", "true")]);
    assert!(
        alone
            .unwrap_err()
            .to_string()
            .contains("'digest.findings_as_records'")
    );
    let shared = props(&[
        q,
        on,
        ("digest.bucket", "trail"),
        ("ledger.dynamodb_table", "tab"),
    ]);
    assert!(shared.unwrap().digest.unwrap().ship_missing);
    assert!(props(&[("bucket", "trail")]).unwrap().digest.is_none());
    for (pairs, key, says) in [
        (&[q, on][..], "'digest.validate'", "digest.bucket"),
        (
            &[("bucket", "trail"), on, ("lookback", "24h")][..],
            "'digest.validate'",
            "27h",
        ),
        (
            &[("bucket", "trail"), ("digest.grace", "0")][..],
            "'digest.grace'",
            "needs",
        ),
        (
            &[("bucket", "trail"), on, ("digest.every", "0")][..],
            "'digest.every'",
            "between",
        ),
    ] {
        let err = props(pairs).unwrap_err();
        assert!(err.contains(key) && err.contains(says), "{pairs:?}: {err}");
    }
}

#[test]
fn a_non_aws_queue_url_names_the_sqs_endpoint() {
    let sqs = |pairs: &[(&str, &str)]| {
        let Source::S3(s3) = props(pairs).unwrap().source else {
            panic!()
        };
        s3.sqs.unwrap().endpoint
    };
    let q = "http://127.0.0.1:4566/000000000000/q";
    assert_eq!(
        sqs(&[("sqs.queue_url", q)]).as_deref(),
        Some("http://127.0.0.1:4566")
    );
    assert_eq!(
        sqs(&[
            ("sqs.queue_url", q),
            ("sqs.endpoint", "http://localhost:9324")
        ])
        .as_deref(),
        Some("http://localhost:9324"),
        "an explicit sqs.endpoint wins"
    );
    for aws in [
        "https://sqs.us-east-1.amazonaws.com/123456789012/q",
        "https://sqs.cn-north-1.amazonaws.com.cn/123456789012/q",
        "https://queue.amazonaws.com/123456789012/q",
    ] {
        assert_eq!(sqs(&[("sqs.queue_url", aws)]), None, "{aws}");
    }
}

#[test]
fn a_missing_dir_and_a_poll_longer_than_the_timeout_are_refused() {
    let err = props(&[("dir", "/nonexistent/cloudtrail-s3-test")]).unwrap_err();
    assert!(
        err.contains("'dir'") && err.contains("does it exist"),
        "{err}"
    );
    let err = props(&[
        ("sqs.queue_url", "https://sqs.us-east-1.amazonaws.com/1/q"),
        ("request_timeout", "20"),
    ])
    .unwrap_err();
    assert!(err.contains("'request_timeout'"), "{err}");
}

#[test]
fn secrets_are_not_in_debug_output() {
    let c = props(&[
        ("bucket", "abc"),
        ("access_key_id", "AKIAEXAMPLE"),
        ("secret_access_key", "wJalrXUtnFEMI/K7MDENG"),
    ])
    .unwrap();
    let dbg = format!("{c:?}");
    assert!(!dbg.contains("wJalrXUtnFEMI"), "{dbg}");
}

#[test]
fn keys_list_matches_settings_fields() {
    // Every listed key is accepted...
    let toml: String = KEYS
        .iter()
        .map(|k| format!("\"{}\" = \"1\"\n", k.name))
        .collect();
    let parsed: Result<Settings, _> = toml::from_str(&toml);
    assert!(parsed.is_ok(), "{parsed:?}");
    // ...and a key that is not listed is refused by name.
    let err = toml::from_str::<Settings>("bucket = \"b\"\nscan_intervall = 5\n").unwrap_err();
    assert!(err.to_string().contains("scan_intervall"), "{err}");
    // ...and every field of the struct is listed.
    let mut fields = struct_fields::<Settings>();
    fields.sort_unstable();
    let mut keys: Vec<&str> = KEYS.iter().map(|k| k.name).collect();
    keys.sort_unstable();
    assert_eq!(fields, keys);
}

/// The field names serde's derive gives a struct, read by asking it to deserialize.
fn struct_fields<'de, T: Deserialize<'de>>() -> Vec<&'static str> {
    struct Probe<'a>(&'a mut Vec<&'static str>);
    #[derive(Debug)]
    struct Stop;
    impl std::fmt::Display for Stop {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("stop")
        }
    }
    impl std::error::Error for Stop {}
    impl serde::de::Error for Stop {
        fn custom<M: std::fmt::Display>(_: M) -> Self {
            Stop
        }
    }
    impl<'de> Deserializer<'de> for Probe<'_> {
        type Error = Stop;
        fn deserialize_any<V: serde::de::Visitor<'de>>(self, _: V) -> Result<V::Value, Stop> {
            Err(Stop)
        }
        fn deserialize_struct<V: serde::de::Visitor<'de>>(
            self,
            _: &'static str,
            fields: &'static [&'static str],
            _: V,
        ) -> Result<V::Value, Stop> {
            self.0.extend_from_slice(fields);
            Err(Stop)
        }
        serde::forward_to_deserialize_any! {
            bool i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes
            byte_buf option unit unit_struct newtype_struct seq tuple tuple_struct map enum
            identifier ignored_any
        }
    }
    let mut out = Vec::new();
    let _ = T::deserialize(Probe(&mut out));
    out
}
