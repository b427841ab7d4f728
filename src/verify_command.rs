//! `cloudtrail-s3 verify`: the command-line front of [`cloudtrail_s3::ops::verify`].

use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;

use cloudtrail_s3::config::Source;
use cloudtrail_s3::digest::keys::{CloudTrailKeys, KeyRing};
use cloudtrail_s3::discover::listing::S3Lister;
use cloudtrail_s3::observe::Observe;
use cloudtrail_s3::ops::verify::{S3Reader, base_of, verify};
use cloudtrail_s3::timestamp::EventTime;

/// A time: RFC 3339, or `-DURATION` before now (`-24h`, `-7d`).
fn time(text: &str, now: EventTime) -> Option<EventTime> {
    if let Some(ago) = text.strip_prefix('-') {
        let secs = cloudtrail_s3::config::parse_duration_secs(ago)?;
        return EventTime::new(i64::from(now.secs()) - i64::try_from(secs).ok()?, 0);
    }
    EventTime::parse_rfc3339(text)
}

pub fn run(args: impl Iterator<Item = String>) -> ExitCode {
    let usage = |e: &str| {
        eprintln!("cloudtrail-s3 verify: {e} (see --help)");
        ExitCode::from(2)
    };
    let now = EventTime::now();
    let (mut config, mut from, mut to, mut json, mut endpoint) = (None, None, now, false, None);
    let mut use_ledger = true;
    let mut args = args;
    while let Some(arg) = args.next() {
        let mut value = |what: &str| args.next().ok_or_else(|| format!("{arg} needs {what}"));
        match arg.as_str() {
            "-c" | "--config" => match value("a file") {
                Ok(f) => config = Some(PathBuf::from(f)),
                Err(e) => return usage(&e),
            },
            "--from" | "--to" => {
                let parsed = value("a time").map(|t| (time(&t, now), t));
                match parsed {
                    Ok((Some(t), _)) if arg == "--from" => from = Some(t),
                    Ok((Some(t), _)) => to = t,
                    Ok((None, t)) => {
                        return usage(&format!(
                            "{arg} {t:?}: give an RFC 3339 time (2026-12-01T00:00:00Z) or -DURATION (-24h)"
                        ));
                    }
                    Err(e) => return usage(&e),
                }
            }
            "--cloudtrail-endpoint" => match value("a URL") {
                Ok(u) => endpoint = Some(u),
                Err(e) => return usage(&e),
            },
            "--json" => json = true,
            "--no-ledger" => use_ledger = false,
            other => return usage(&format!("unknown argument '{other}'")),
        }
    }
    let Some(config) = config else {
        return usage(
            "--config FILE is required (the shipper's settings: bucket, region, credentials)",
        );
    };
    let Some(from) = from else {
        return usage("--from TIME is required");
    };
    if from >= to {
        return usage("--from must be before --to");
    }
    let settings = match crate::load_settings(&config, None) {
        Ok((s, _)) => s,
        Err(e) => return usage(&format!("{e:#}")),
    };
    let s3 = match &settings.source {
        Source::S3(s3) if s3.bucket.is_some() => s3.clone(),
        _ => return usage("the settings name no 'bucket': verify reads one bucket's digests"),
    };
    let base = base_of(settings.selection.expr());
    // The shipper's ledger, when the settings name one: a file needs the shipper stopped
    // (one process at a time); a shared table is read while shippers run.
    let ledger = match (&settings.shared_ledger, &settings.db) {
        _ if !use_ledger => None,
        (Some(shared), _) => Some(cloudtrail_s3::ops::open_shared(
            &shared.table,
            shared.endpoint.as_deref(),
            s3.region.as_deref(),
        )),
        (None, Some(db)) => Some(cloudtrail_s3::ops::open(db, now.secs())),
        (None, None) => None,
    };
    let ledger = match ledger.transpose() {
        Ok(l) => l,
        Err(e) => {
            eprintln!(
                "cloudtrail-s3 verify: {e}\n(or give --no-ledger to check the bucket only, without what was shipped)"
            );
            return ExitCode::from(1);
        }
    };
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("cloudtrail-s3 verify: {e}");
            return ExitCode::from(1);
        }
    };
    let report = runtime.block_on(async {
        let (client, sdk) = cloudtrail_s3::aws::client::clients(&s3).await;
        let lister = S3Lister {
            client: client.clone(),
            bucket: Arc::from(s3.bucket.clone().unwrap_or_default()),
            observe: Arc::new(Observe::new(u32::MAX, Default::default())),
        };
        let keys = KeyRing::new(CloudTrailKeys::new(sdk, endpoint));
        verify(
            lister,
            S3Reader(client),
            keys,
            ledger.as_ref().map(|l| {
                (
                    l,
                    u32::try_from(settings.lookback.as_secs()).unwrap_or(u32::MAX),
                )
            }),
            base,
            from,
            to,
        )
        .await
    });
    if json {
        match serde_json::to_string_pretty(&report) {
            Ok(text) => println!("{text}"),
            Err(e) => {
                eprintln!("cloudtrail-s3 verify: {e}");
                return ExitCode::from(1);
            }
        }
    } else {
        print!("{}", report.to_text());
    }
    if report.all_verified() {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    }
}
