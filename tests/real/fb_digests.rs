//! CloudTrail's digests checked while shipping (`digest.validate`), through the real Fluent
//! Bit in SQS-only mode: digests built and signed as CloudTrail signs them (a generated
//! RSA key; `ListPublicKeys` answered by a stand-in on loopback), notifications for all but
//! two of the bundled files, a third file deleted before anything read it. The two are
//! found through the digests and shipped (every event once at the receiver), the deleted
//! one is reported missing, each said once in the host's log.
//!
//! Twice: with a listing pass every second, and with one listing pass (at start) and the
//! later digest announced on the queue, read at once.

use aws_lc_rs::rsa::{KeyPair, KeySize};
use aws_lc_rs::signature::KeyPair as _;
use libtest_mimic::Failed;

use crate::check::{Expected, Tally, Time};
use crate::digest_data::{Writer, key_on, key_server, upload_logs_on};
use crate::fluent_bit::{Conf, FluentBit, RUN_LIMIT, http_output, section};
use crate::receiver::Receiver;
use crate::wait::wait_until;
use crate::work::Work;
use crate::{Body, data, queue, server};

pub fn trials() -> Vec<(&'static str, Body<FluentBit>)> {
    vec![
        (
            "digests::files_no_notification_announced_are_shipped_from_the_digests",
            |fb| heal(fb, Found::Listed),
        ),
        (
            "digests::a_digest_announced_on_the_queue_is_read_without_a_listing",
            |fb| heal(fb, Found::Announced),
        ),
    ]
}

/// How the shipper finds the 13:00 digest.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Found {
    /// A listing pass every second.
    Listed,
    /// One listing pass, at start (`digest.every` an hour); the digest's notification on
    /// the queue.
    Announced,
}

fn heal(fb: &FluentBit, found: Found) -> Result<(), Failed> {
    let tag = fb.tag("digests");
    let work = Work::new(&tag);
    let bucket = server::bucket(&tag);
    let q = queue::create(&tag);
    let key = KeyPair::generate(KeySize::Rsa2048).unwrap();
    let keys = key_server(vec![key.public_key().as_ref().to_vec()]);
    // A recent day whose 13:00 is past: the ledger vouches for what it still remembers.
    let (y, m, d) = cloudtrail_s3::timestamp::civil_from_days(
        (i64::from(cloudtrail_s3::timestamp::EventTime::now().secs()) - 13 * 3600) / 86_400,
    );
    let day = format!("{y:04}-{m:02}-{d:02}");
    let (eleven, twelve) = upload_logs_on(&bucket, &day);
    let (unannounced, deleted) = ([&twelve[0].0, &twelve[1].0], &twelve[2].0);
    server::block_on(
        server::client()
            .delete_object()
            .bucket(&bucket)
            .key(deleted)
            .send(),
    )
    .unwrap();
    for (k, gz) in eleven.iter().chain(&twelve[3..]) {
        queue::send(&q, &queue::s3_notice(&bucket, k, gz.len()));
    }
    let shipped: Vec<data::Object> = data::objects()
        .into_iter()
        .filter(|o| key_on(&o.key, &day) != *deleted)
        .collect();
    let announced: Vec<data::Object> = data::objects()
        .into_iter()
        .filter(|o| {
            let k = key_on(&o.key, &day);
            k != *deleted && !unannounced.contains(&&k)
        })
        .collect();
    let mut w = Writer {
        bucket: &bucket,
        day: &day,
        trail: "org",
        key: &key,
        previous: None,
    };
    // Announced: the trail's first digest since the start is found by the listing pass.
    if found == Found::Announced {
        w.write(12, &eleven, None, None);
    }
    let rx = Receiver::start();
    let dir = work.path().join("host");
    std::fs::create_dir_all(&dir).unwrap();
    // Debug: each digest pass says so, and the test waits for passes.
    let listen = crate::http_get::free_addr();
    let conf = Conf::new()
        .service("log_level", "debug")
        .input(section(&[
            ("name", "cloudtrail"),
            ("tag", "ct"),
            ("sqs.queue_url", &q),
            ("sqs.wait_time_secs", "1"),
            ("endpoint", server::endpoint()),
            ("force_path_style", "on"),
            ("region", "us-east-1"),
            ("start_time", "2023-07-01T00:00:00Z"),
            ("lookback", "120h"),
            ("digest.validate", "true"),
            ("digest.bucket", &bucket),
            (
                "digest.every",
                if found == Found::Listed { "1" } else { "3600" },
            ),
            ("digest.grace", "0"),
            ("digest.cloudtrail_endpoint", &keys),
            // The only shipper on the queue: files found through digests are its to ship.
            ("digest.ship_missing", "true"),
            // Each finding a record at the receiver too.
            ("digest.findings_as_records", "true"),
            ("metrics.listen", &listen),
        ]))
        .output(http_output("*", &rx, "/"))
        .write_yaml(&dir);
    let mut host = fb.start(&dir, "host", &conf, &[]);
    // What the notifications announced arrives first; then the hour's digests land.
    let first = Expected::of(&announced);
    let mut tally = Tally::new(&first, Time::LeadingIso("timestamp"), true);
    wait_until("the announced events at the receiver", RUN_LIMIT, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        tally.follow(&rx).all_arrived()
    });
    wait_until("the queue to empty", RUN_LIMIT, || {
        queue::messages_in(&q) == 0
    });
    let passes = |h: &crate::fluent_bit::Fb, what: &str| {
        h.stderr
            .snapshot()
            .iter()
            .filter(|l| l.contains(what))
            .count()
    };
    // Announced: the listing pass at start is over before 13:00 lands, so only the
    // notification can bring it.
    if found == Found::Announced {
        wait_until("the listing pass at start", RUN_LIMIT, || {
            passes(&host, "digest: pass over") >= 1
        });
    }
    if found == Found::Listed {
        w.write(12, &eleven, None, None);
    }
    let thirteen = w.write(13, &twelve, None, None);
    if found == Found::Announced {
        queue::send(&q, &queue::s3_notice(&bucket, &thirteen, 100));
    }
    let expected = Expected::of(&shipped);
    let mut tally = Tally::new(&expected, Time::LeadingIso("timestamp"), true);
    wait_until("every event at the receiver", RUN_LIMIT, || {
        assert!(host.try_status().is_none(), "{}", host.stderr_tail(40));
        tally.follow(&rx).all_arrived()
    });
    // A few more passes (one a second): nothing is shipped or said twice.
    if found == Found::Listed {
        let seen = passes(&host, "digest: pass over");
        wait_until("three more digest passes", RUN_LIMIT, || {
            passes(&host, "digest: pass over") >= seen + 3
        });
    } else {
        // Read at once: the listing pass at start is the only one.
        assert_eq!(
            passes(&host, "digest: pass over"),
            1,
            "{}",
            host.stderr_tail(30)
        );
        let announced = crate::http_get::get(&listen, "/metrics").and_then(|(_, page)| {
            page.lines()
                .find_map(|l| l.strip_prefix("cloudtrail_s3_digests_announced_total "))
                .and_then(|v| v.trim().parse::<u64>().ok())
        });
        assert_eq!(announced, Some(1), "13:00 read from its notification");
    }
    let status = host.stop();
    assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
    tally.follow(&rx);
    let log = host.stderr.snapshot();
    let count = |needle: &str| log.iter().filter(|l| l.contains(needle)).count();
    eprintln!(
        "digests on {}: {}; found through digests {}, missing reported {}",
        fb.label(),
        tally.summary(),
        count("found through its digest"),
        count(&format!("missing: s3://{bucket}/{deleted}"))
    );
    tally.assert_exactly_once("files shipped from CloudTrail's digests");
    for k in unannounced {
        let lines = log
            .iter()
            .filter(|l| l.contains(k.as_str()) && l.contains("found through its digest"))
            .count();
        assert_eq!(lines, 1, "{k}");
    }
    assert_eq!(count(&format!("missing: s3://{bucket}/{deleted}")), 1);
    // The same findings as records at the receiver, each once.
    let records = &tally.findings;
    let once = |needle: &str| records.iter().filter(|f| f.contains(needle)).count() == 1;
    assert!(
        once(&format!("missing: s3://{bucket}/{deleted}")),
        "{records:#?}"
    );
    for k in unannounced {
        assert!(
            once(&format!("not shipped: s3://{bucket}/{k}")),
            "{k}: {records:#?}"
        );
    }
    let distinct: std::collections::HashSet<&String> = records.iter().collect();
    assert_eq!(distinct.len(), records.len(), "{records:#?}");
    host.assert_no_errors_except(&["missing: s3://", "no digest after"]);
    Ok(())
}
