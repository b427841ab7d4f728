//! Start-up: opens the ledger, builds the clients and the discovery, and starts the
//! engine's threads.

use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize};
use std::sync::{Arc, Mutex};

use tokio::sync::{mpsc, watch};

use super::progress::watch_loop;
use super::sqs_side::settle_loop;
use super::worker::run;
use super::{Core, Engine, LastScan, StartError};
use crate::config::{Config, Source, StartTime};
use crate::discover::Discovery;
use crate::discover::bucket::{BucketScan, ClaimLimit};
use crate::discover::folder::FolderScan;
use crate::discover::listing::{S3Lister, SystemClock};
use crate::discover::sqs::{Queue, Tracker};
use crate::encode::Encoder;
use crate::engine::handoff::Handoff;
use crate::ledger::shared::{DynamoTable, SharedLedger};
use crate::ledger::{Ledger, LedgerError};
use crate::log::Logger;
use crate::observe::Observe;
use crate::timestamp::EventTime;

impl Engine {
    /// Opens the state, builds the client and starts scanning.
    pub fn start(
        config: Config,
        encoder: Arc<dyn Encoder>,
        log: Logger,
    ) -> Result<Self, StartError> {
        let now = EventTime::now().secs();
        let bucket = match &config.source {
            Source::S3(s3) => s3.bucket.clone(),
            Source::Dir(_) => None,
        };
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .max_blocking_threads(config.workers + 4)
            .thread_name("cloudtrail-s3")
            .enable_all()
            .build()
            .map_err(StartError::Runtime)?;
        let clients = match &config.source {
            Source::S3(s3) => Some(runtime.block_on(crate::aws::client::clients(s3))),
            Source::Dir(_) => None,
        };
        let ledger = match (&config.shared_ledger, &clients) {
            (Some(shared), Some((_, sdk))) => {
                let client = crate::aws::client::dynamodb(sdk, shared.endpoint.as_deref());
                let table =
                    DynamoTable::open(client, &shared.table).map_err(|e| LedgerError::Shared {
                        table: shared.table.clone(),
                        reason: e.0,
                    })?;
                let keep_done = u32::try_from(config.lookback.as_secs()).unwrap_or(u32::MAX);
                let mut shared_ledger = SharedLedger::new(
                    Box::new(table),
                    shared.table.clone(),
                    shared.lease_time,
                    keep_done,
                    None,
                );
                if let Some(bucket) = &bucket {
                    shared_ledger = shared_ledger.listing(bucket);
                }
                log.info(format_args!(
                    "ledger: DynamoDB table {} shared with the other shippers, as owner {} (lease time {}s)",
                    shared.table,
                    shared_ledger.owner(),
                    shared.lease_time.as_secs()
                ));
                Ledger::with_shared(shared_ledger)?
            }
            _ => Ledger::open(config.db.as_deref(), bucket.as_deref(), now)?,
        };
        if config.db.is_none() && config.shared_ledger.is_none() {
            log.warn(format_args!(
                "no 'db' set: what was shipped is remembered in memory only, so a restart ships the start_time window again"
            ));
        }
        let first_start = ledger.first_start_or(now)?;
        let start = match config.start_time {
            StartTime::At(t) => t,
            StartTime::Before(d) => {
                let secs = i64::from(first_start) - i64::try_from(d.as_secs()).unwrap_or(i64::MAX);
                EventTime::new(secs.max(0), 0).unwrap_or(EventTime::now())
            }
        };
        let lookback = u32::try_from(config.lookback.as_secs()).unwrap_or(u32::MAX);

        let mut endpoints = String::new();
        let observe = Arc::new(Observe::new(
            u32::try_from(config.silence_alarm.as_secs()).unwrap_or(u32::MAX),
            config.per_region,
        ));
        // Freshness picks up where the last run left it: each prefix's watermark key names
        // the newest object finished there.
        for (_, mark) in ledger.watermarks()? {
            observe.freshness.seed(&mark);
        }
        // Bound before anything starts: an address in use stops start-up with its key.
        let metrics_listener = match &config.metrics_listen {
            None => None,
            Some(addr) => {
                let l = std::net::TcpListener::bind(addr.as_str())
                    .and_then(|l| l.set_nonblocking(true).map(|()| l))
                    .map_err(|e| StartError::Listen {
                        addr: addr.clone(),
                        source: e,
                    })?;
                Some(l)
            }
        };
        let mut audit = None;
        let (client, discovery, sqs) = match &config.source {
            Source::S3(s3) => {
                let (client, sdk) = match clients {
                    Some(c) => c,
                    None => runtime.block_on(crate::aws::client::clients(s3)),
                };
                let aws = || {
                    format!(
                        "AWS ({})",
                        sdk.region()
                            .map_or("region from the SDK chain: none found", |r| r.as_ref())
                    )
                };
                endpoints = format!(
                    " s3 endpoint={}{}",
                    s3.endpoint.clone().unwrap_or_else(aws),
                    s3.sqs.as_ref().map_or(String::new(), |q| format!(
                        ", sqs endpoint={}",
                        q.endpoint.clone().unwrap_or_else(aws)
                    ))
                );
                let discovery = s3.bucket.as_ref().map(|bucket| {
                    Discovery::Bucket(
                        BucketScan::new(
                            S3Lister {
                                client: client.clone(),
                                bucket: bucket.as_str().into(),
                                observe: observe.clone(),
                            },
                            SystemClock,
                            config.selection.clone(),
                            start,
                            lookback,
                            log.clone(),
                        )
                        .with_concurrency(config.list_concurrency)
                        .with_claim_limit(ClaimLimit::PerScan(config.scan_claims)),
                    )
                });
                let sqs = s3.sqs.clone().map(|q| {
                    Arc::new(runtime.block_on(Queue::new(q, &sdk, log.clone(), observe.clone())))
                });
                audit = config
                    .digest
                    .as_ref()
                    .map(|d| {
                        crate::digest::audit::Audit::new(
                            S3Lister {
                                client: client.clone(),
                                bucket: d.bucket.as_str().into(),
                                observe: observe.clone(),
                            },
                            crate::digest::audit::S3Reader(client.clone()),
                            crate::digest::keys::KeyRing::new(
                                crate::digest::keys::CloudTrailKeys::new(
                                    sdk.clone(),
                                    d.cloudtrail_endpoint.clone(),
                                ),
                            ),
                            crate::ops::verify::base_of(config.selection.expr()),
                            u32::try_from(d.grace.as_secs()).unwrap_or(u32::MAX),
                            false,
                        )
                        .remembering(crate::digest::audit::remembered(lookback))
                        .wanting({
                            // This shipper's files only: `path_expression`, and landed
                            // (by the time in their name) at or after `start_time`.
                            let select = config.selection.clone();
                            Box::new(move |key: &str| {
                                select.matches(key)
                                    && crate::layout::file_time(key)
                                        .is_none_or(|t| t >= start.secs())
                            })
                        })
                    })
                    .map(|a| {
                        let ship = config.digest.as_ref().is_some_and(|d| d.ship_missing);
                        (if ship { a } else { a.not_shipping() }, start)
                    });
                (Some(client), discovery, sqs)
            }
            Source::Dir(root) => (
                None,
                Some(Discovery::Folder(FolderScan {
                    root: root.clone(),
                    clock: SystemClock,
                    select: config.selection.clone(),
                    start,
                    lookback,
                    log: log.clone(),
                })),
                None,
            ),
        };
        log.info(format_args!(
            "started: {}{endpoints} path_expression={} event_kinds={} start_time={} lookback={}s scan_interval={}s workers={} batch_bytes={} batch_bytes_max={}",
            match &config.source {
                Source::S3(s) => format!(
                    "bucket={} sqs.queue_url={}",
                    s.bucket.as_deref().unwrap_or("-"),
                    s.sqs.as_ref().map_or("-", |q| q.queue_url.as_str())
                ),
                Source::Dir(d) => format!("dir={}", d.display()),
            },
            config.selection.as_str(),
            config.selection.kinds(),
            start.secs(),
            lookback,
            config.scan_interval.as_secs(),
            config.workers,
            config.batch_bytes,
            config.batch_bytes_max,
        ));

        let chunk_target = (config.batch_bytes / 4).clamp(16 << 10, 1 << 20);
        let (batch_bytes, batch_bytes_max) = (config.batch_bytes, config.batch_bytes_max);
        let (settle_tx, settle_rx) = mpsc::unbounded_channel();
        if discovery.is_some() && sqs.is_some() {
            // Hybrid: a notification may come again after the listing forgot its key.
            ledger.keep_for_notifications();
        }
        let core = Arc::new(Core {
            queue: Handoff::new(config.buffer_bytes),
            ledger,
            log,
            encoder,
            client,
            paused: watch::Sender::new(false),
            observe,
            last_scan: LastScan::default(),
            backfill: Mutex::new(None),
            unmatched_logged_at: AtomicU64::new(0),
            chunk_target,
            tracker: Mutex::new(Tracker::new(
                sqs.as_ref().map_or(1, |q| q.config.max_receive_count),
                config.db.is_some() || config.shared_ledger.is_some(),
            )),
            sqs,
            sqs_busy: AtomicUsize::new(0),
            sqs_polled: AtomicUsize::new(0),
            listing: discovery.is_some(),
            settling: Arc::new(watch::Sender::new(0)),
            settle_tx,
            digest_counts: audit.as_ref().map(|(a, _)| a.counts.clone()),
            integrity: audit.as_ref().map(|_| Default::default()),
            findings_in_flight: Mutex::default(),
            digests_announced: Arc::default(),
            config,
        });
        let (stop, stop_rx) = watch::channel(false);
        if let Some(listener) = metrics_listener {
            let _guard = runtime.enter();
            let listener =
                tokio::net::TcpListener::from_std(listener).map_err(|e| StartError::Listen {
                    addr: core.config.metrics_listen.clone().unwrap_or_default(),
                    source: e,
                })?;
            let route_core = core.clone();
            runtime.spawn(crate::observe::serve::serve(
                listener,
                Arc::new(move |request: &crate::observe::serve::Request| {
                    route_core.answer(request)
                }),
            ));
        }
        if let Some(queue) = &core.sqs {
            runtime.spawn(settle_loop(queue.clone(), settle_rx, core.settling.clone()));
        }
        runtime.spawn(watch_loop(core.clone(), stop_rx.clone()));
        runtime.spawn(run(core.clone(), discovery, audit, stop_rx));
        Ok(Self {
            core,
            runtime: Some(runtime),
            stop,
            closed: AtomicBool::new(false),
            pace: Mutex::new(super::pace::BatchSize::new(batch_bytes, batch_bytes_max)),
        })
    }
}
