//! The command's HTTP output: JSON lines posted to a receiver (Vector's acknowledged
//! `http_server` source, a Sumo Logic HTTP source, any endpoint that answers 2xx once it has
//! the data), the ledger moving only for what the receiver acknowledged.
//!
//! ```text
//!  engine.take() ─► bodies (per account/region, ≤ max_body_bytes) ─► gzip ─► POST, retried
//!        ▲                                                                     │ 2xx
//!        └─ engine.commit(marks) ◄── in take order, once every body of a batch ◄┘
//! ```
//!
//! Several requests are in flight at once, but batches are committed strictly in the order
//! they were taken: an object's later events never commit before its earlier ones. A
//! delivered batch is committed at once, or `http.commit_delay` after its answer for a
//! receiver that answers before what it holds is durable. While the
//! receiver fails, nothing new is taken, so the engine's bounded queue fills and downloads
//! stop: memory stays at `buffer_bytes` plus the bodies in flight.

pub mod body;
pub mod client;
pub mod deliver;
pub mod retry;
pub mod settings;

use std::collections::VecDeque;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio::runtime::Runtime;
use tokio::sync::{Semaphore, watch};

use crate::engine::handoff::{Batch, Mark};
use crate::engine::{Engine, Unsettled};
use client::{Client, ClientError, Request};
use deliver::{Alarm, Ended, Shared, deliver};
use settings::HttpConfig;

/// How long a take waits for the engine, and a full window for an answer, before the loop
/// looks at its stop flag again.
const TICK: Duration = Duration::from_millis(100);

/// A batch taken and not yet committed.
struct Pending {
    seq: u64,
    marks: Vec<Mark>,
    events: u64,
    bytes: u64,
    taken: Instant,
    /// Requests of this batch not answered yet.
    left: usize,
    /// Each body's chunks (indexes in `marks`) and when it was delivered.
    bodies: Vec<(Vec<usize>, Option<Instant>)>,
    gave_up: bool,
    /// When the last of its requests was delivered.
    delivered_at: Option<Instant>,
}

impl Pending {
    /// Every request delivered, `delay` ago or more: the batch may commit.
    fn is_due(&self, delay: Duration) -> bool {
        self.left == 0 && !self.gave_up && self.delivered_at.is_some_and(|at| at.elapsed() >= delay)
    }

    /// Whether each chunk's events were all delivered `delay` ago or more (every body
    /// carrying it was; a chunk without lines needs none).
    fn chunks_delivered(&self, delay: Duration) -> Vec<bool> {
        let mut delivered = vec![true; self.marks.len()];
        for (chunks, at) in &self.bodies {
            let ok = at.is_some_and(|at| at.elapsed() >= delay);
            for &i in chunks {
                if let Some(d) = delivered.get_mut(i) {
                    *d &= ok;
                }
            }
        }
        delivered
    }

    /// A body delivered less than `delay` ago: it counts once the delay has passed.
    fn has_young_body(&self, delay: Duration) -> bool {
        self.bodies
            .iter()
            .any(|(_, at)| at.is_some_and(|at| at.elapsed() < delay))
    }
}

/// A request task's last word.
struct Report {
    seq: u64,
    /// Which of the batch's bodies.
    body: usize,
    ended: Ended,
}

/// Why the output could not start.
#[derive(Debug, thiserror::Error)]
pub enum OutputError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("could not start the http output's runtime: {0}")]
    Runtime(std::io::Error),
}

/// Posts batches and commits them once acknowledged, in order.
pub struct HttpOutput {
    runtime: Runtime,
    shared: Arc<Shared>,
    config: Arc<HttpConfig>,
    permits: Arc<Semaphore>,
    stopping: watch::Sender<bool>,
    reports: mpsc::Receiver<Report>,
    report_tx: mpsc::Sender<Report>,
    window: VecDeque<Pending>,
    next_seq: u64,
    /// Requests sent and not answered, over every batch in the window.
    outstanding: usize,
}

impl HttpOutput {
    pub fn start(config: HttpConfig, engine: &Engine) -> Result<Self, OutputError> {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("cloudtrail-s3-http")
            .enable_all()
            .build()
            .map_err(OutputError::Runtime)?;
        let config = Arc::new(config);
        let client = {
            let _entered = runtime.enter();
            Client::new(config.clone())?
        };
        let observe = engine.observe().clone();
        observe.output.enabled.store(true, Ordering::Relaxed);
        let alarm = Alarm::new(engine.logger().clone(), config.display_url());
        let (report_tx, reports) = mpsc::channel();
        Ok(Self {
            runtime,
            shared: Arc::new(Shared {
                client,
                alarm,
                observe,
            }),
            permits: Arc::new(Semaphore::new(config.max_in_flight)),
            config,
            stopping: watch::Sender::new(false),
            reports,
            report_tx,
            window: VecDeque::new(),
            next_seq: 0,
            outstanding: 0,
        })
    }

    /// Whether another batch may be taken: fewer requests out than `http.max_in_flight`.
    pub fn has_room(&self) -> bool {
        self.outstanding < self.config.max_in_flight
    }

    /// Nothing taken is waiting for an answer.
    pub fn is_empty(&self) -> bool {
        self.window.is_empty()
    }

    /// The most bytes to take per batch (one request's body, before grouping).
    pub fn batch_bytes(&self) -> usize {
        self.config.max_body_bytes
    }

    /// Sends a taken batch: one request per body, each retried until delivered.
    pub fn send(&mut self, batch: Batch) {
        let seq = self.next_seq;
        self.next_seq += 1;
        let bodies = body::bodies(&batch, self.config.grouped(), self.config.max_body_bytes);
        let bytes = batch.bytes.len() as u64;
        let o = &self.shared.observe.output;
        o.bytes_waiting.fetch_add(bytes, Ordering::Relaxed);
        self.window.push_back(Pending {
            seq,
            marks: batch.marks,
            events: batch.events,
            bytes,
            taken: Instant::now(),
            left: bodies.len(),
            bodies: bodies.iter().map(|b| (b.chunks.clone(), None)).collect(),
            gave_up: false,
            // A batch of marks only (an object that ended without events) has nothing to
            // send: delivered as it is taken.
            delivered_at: bodies.is_empty().then(Instant::now),
        });
        self.outstanding += bodies.len();
        for (body, b) in bodies.into_iter().enumerate() {
            let shared = self.shared.clone();
            let tx = self.report_tx.clone();
            let stopping = self.stopping.subscribe();
            let permits = self.permits.clone();
            let gzip = self.config.gzip;
            shared.alarm.waiting.fetch_add(1, Ordering::Relaxed);
            self.runtime.spawn(async move {
                let ended = match permits.acquire_owned().await {
                    Ok(_permit) => {
                        let lines = b.lines;
                        let payload = if gzip {
                            tokio::task::spawn_blocking(move || body::gzip(&lines)).await
                        } else {
                            Ok(lines)
                        };
                        match payload {
                            Ok(payload) => {
                                let request = Request {
                                    body: Bytes::from(payload),
                                    account: b.account,
                                    region: b.region,
                                };
                                let s = &shared;
                                deliver(&s.client, &request, &s.alarm, &s.observe, stopping).await
                            }
                            // Only a panic in the compressor: never sent, sent again next
                            // run (the batch is not committed).
                            Err(_) => Ended::GaveUp,
                        }
                    }
                    Err(_) => Ended::GaveUp,
                };
                shared.alarm.waiting.fetch_sub(1, Ordering::Relaxed);
                let _ = tx.send(Report { seq, body, ended });
            });
        }
    }

    /// Takes the answers in (waiting up to `wait` for the first) and commits every batch
    /// at the front of the window whose requests were all delivered.
    pub fn settle(&mut self, engine: &Engine, wait: Duration) {
        let first = if wait.is_zero() {
            self.reports.try_recv().ok()
        } else {
            self.reports.recv_timeout(wait).ok()
        };
        let mut next = first;
        while let Some(report) = next {
            self.outstanding -= 1;
            if let Some(p) = self.window.iter_mut().find(|p| p.seq == report.seq) {
                p.left -= 1;
                p.gave_up |= report.ended == Ended::GaveUp;
                if report.ended == Ended::Delivered
                    && let Some(b) = p.bodies.get_mut(report.body)
                {
                    b.1 = Some(Instant::now());
                }
                if p.left == 0 && !p.gave_up {
                    p.delivered_at = Some(Instant::now());
                }
            }
            next = self.reports.try_recv().ok();
        }
        let o = &self.shared.observe.output;
        let delay = self.config.commit_delay;
        while self.window.front().is_some_and(|p| p.is_due(delay)) {
            let Some(p) = self.window.pop_front() else {
                break;
            };
            engine.commit(&p.marks);
            o.events_acked.fetch_add(p.events, Ordering::Relaxed);
            o.bytes_acked.fetch_add(p.bytes, Ordering::Relaxed);
            o.bytes_waiting.fetch_sub(p.bytes, Ordering::Relaxed);
            o.delivery_seconds.observe(p.taken.elapsed());
        }
    }

    /// Graceful stop: no new tries; requests on the wire get their answer (up to
    /// `http.timeout` and a second), and what was delivered is committed. What is left is
    /// sent again by the next run.
    pub fn finish(mut self, engine: &Engine) {
        self.stopping.send_replace(true);
        let wait = self.config.timeout + Duration::from_secs(1);
        if self.outstanding > 0 {
            engine.logger().info(format_args!(
                "http output: stopping; waiting up to {} s for the answers to {} requests on the wire",
                wait.as_secs(),
                self.outstanding
            ));
        }
        let deadline = Instant::now() + wait;
        while self.outstanding > 0 && Instant::now() < deadline {
            self.settle(engine, TICK);
        }
        // Delivered requests wait out `commit_delay` before they count: as long as the
        // youngest needs, at most that long (answers that come later are not counted).
        let delay = self.config.commit_delay;
        let delay_end = Instant::now() + delay;
        loop {
            self.settle(engine, Duration::ZERO);
            let waiting = self.window.iter().any(|p| p.has_young_body(delay));
            if !waiting || Instant::now() >= delay_end {
                break;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        // Chunks delivered behind a request left unanswered (a receiver that stops, as
        // Vector does, answers some posts and closes others): recorded ahead, not sent
        // again.
        let delivered: Vec<Vec<bool>> = self
            .window
            .iter()
            .map(|p| p.chunks_delivered(delay))
            .collect();
        let window: Vec<Unsettled<'_>> = self
            .window
            .iter()
            .zip(&delivered)
            .flat_map(|(p, d)| {
                p.marks
                    .iter()
                    .zip(d)
                    .map(|(mark, &delivered)| Unsettled { delivered, mark })
            })
            .collect();
        let ahead = engine.commit_ahead(&window);
        self.shared
            .observe
            .output
            .events_acked
            .fetch_add(ahead, Ordering::Relaxed);
        let chunks = window.len();
        let passed = window.iter().filter(|c| c.delivered).count();
        if !self.window.is_empty() {
            engine.logger().info(format_args!(
                "http output: {} batches not acknowledged at stop; of their {chunks} chunks, {} are sent again by the next run and {passed} were delivered ({ahead} events, recorded so the next run passes them)",
                self.window.len(),
                chunks - passed
            ));
        }
        self.runtime.shutdown_timeout(Duration::from_secs(1));
    }
}

/// Drives the engine into the output until `stop` is set (or, with `once`, until the first
/// scan's objects are all acknowledged). `tick` runs every turn (the progress line).
pub fn run(
    engine: &Engine,
    config: HttpConfig,
    stop: &AtomicBool,
    once: bool,
    tick: &mut dyn FnMut(&Engine),
) -> Result<(), OutputError> {
    let mut out = HttpOutput::start(config, engine)?;
    loop {
        out.settle(engine, Duration::ZERO);
        if stop.load(Ordering::Relaxed) {
            break;
        }
        if once && out.is_empty() && engine.is_idle() {
            break;
        }
        if out.has_room() {
            if let Some(batch) = engine.take(out.batch_bytes(), TICK) {
                out.send(batch);
            }
        } else {
            out.settle(engine, TICK);
        }
        tick(engine);
    }
    out.finish(engine);
    Ok(())
}
