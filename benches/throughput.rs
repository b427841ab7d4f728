//! Throughput and memory, side by side in one run: the floor (gzip alone, JSON parsing
//! alone), the engine on one thread, the plugin `.so` in the stand-in host (folder and S3
//! sources), the command, and the peers (`jq`, Python) when installed.
//!
//! Run with `scripts/bench` (it builds the release plugin and command first). Each stage runs
//! in its own process so its peak RSS is its own. The corpus is the real objects in
//! `testdata/cloudtrail`, copied and gzipped into `target/bench-corpus` on the fly.

#[path = "../tests/it/json.rs"]
#[allow(dead_code)]
mod json;

#[path = "../tests/it/host.rs"]
#[allow(dead_code)]
mod host;

#[path = "../tests/it/server.rs"]
#[allow(dead_code)]
mod server;

#[path = "stages/latency.rs"]
mod latency;

#[path = "stages/org_listing.rs"]
mod org_listing;

#[path = "stages/sqs_pace.rs"]
mod sqs_pace;

#[path = "stages/fb_backlog.rs"]
mod fb_backlog;

#[path = "stages/org_fb.rs"]
mod org_fb;

#[path = "stages/month_backfill.rs"]
mod month_backfill;

#[path = "../tests/real/http_get.rs"]
mod http_get;

#[path = "../tests/real/queue.rs"]
mod queue;

#[path = "../tests/real/receiver.rs"]
#[allow(dead_code)]
mod receiver;

use std::io::{Read, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use cloudtrail_s3::Encoder;
use cloudtrail_s3::encode::msgpack::MsgpackEncoder;
use cloudtrail_s3::encode::ndjson::NdjsonEncoder;
use cloudtrail_s3::object::ObjectRef;
use cloudtrail_s3::read::{decode, split};
use cloudtrail_s3::timestamp::EventTime;
use flate2::Compression;
use flate2::read::{GzDecoder, MultiGzDecoder};
use flate2::write::GzEncoder;
use serde::{Deserialize, Serialize};

/// Copies of the 55 real objects: 40 gives 2,200 objects, 116,000 events, ~146 MB of JSON.
const COPIES: usize = 40;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn corpus_dir() -> PathBuf {
    repo().join("target/bench-corpus")
}

const DAY_DIR: &str = "AWSLogs/218007301253/CloudTrail/us-east-1/2023/07/10";

/// Writes the corpus unless it is already there; returns its files.
fn corpus() -> Vec<PathBuf> {
    let dir = corpus_dir().join(DAY_DIR);
    let src = repo().join("testdata/cloudtrail").join(DAY_DIR);
    let mut sources: Vec<PathBuf> = std::fs::read_dir(&src)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    sources.sort();
    let want = sources.len() * COPIES;
    let existing = std::fs::read_dir(&dir).map(|d| d.count()).unwrap_or(0);
    if existing != want {
        let _ = std::fs::remove_dir_all(corpus_dir());
        std::fs::create_dir_all(&dir).unwrap();
        for copy in 0..COPIES {
            for s in &sources {
                let mut json = Vec::new();
                GzDecoder::new(std::fs::File::open(s).unwrap())
                    .read_to_end(&mut json)
                    .unwrap();
                let name = format!("c{copy:02}_{}", s.file_name().unwrap().to_str().unwrap());
                let mut e = GzEncoder::new(Vec::new(), Compression::default());
                e.write_all(&json).unwrap();
                std::fs::write(dir.join(name), e.finish().unwrap()).unwrap();
            }
        }
    }
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .collect();
    files.sort();
    files
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Result {
    stage: String,
    events: u64,
    /// Decompressed JSON bytes the stage went through.
    json_bytes: u64,
    secs: f64,
    peak_rss_kb: u64,
    note: String,
}

fn peak_rss_kb() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0)
}

fn gunzip(path: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    MultiGzDecoder::new(std::fs::File::open(path).unwrap())
        .read_to_end(&mut out)
        .unwrap();
    out
}

/// One stage, in this process; prints its result as a JSON line.
fn run_stage(stage: &str) {
    let files = corpus();
    let total_json: u64 = 146_000_000;
    let r = match stage {
        "floor-gunzip" => {
            let t = Instant::now();
            let mut bytes = 0;
            for f in &files {
                let data = std::fs::read(f).unwrap();
                bytes += std::io::copy(&mut MultiGzDecoder::new(&data[..]), &mut std::io::sink())
                    .unwrap();
            }
            result(stage, 0, bytes, t.elapsed(), "flate2 (zlib-rs), one thread")
        }
        "floor-gunzip-miniz" => {
            // The other pure-Rust inflate (flate2's default backend), on the same bytes: the
            // corpus is written without optional gzip header fields, so the deflate stream
            // is everything between the 10-byte header and the 8-byte trailer.
            let t = Instant::now();
            let mut bytes = 0;
            for f in &files {
                let data = std::fs::read(f).unwrap();
                let out =
                    miniz_oxide::inflate::decompress_to_vec(&data[10..data.len() - 8]).unwrap();
                bytes += out.len() as u64;
            }
            result(
                stage,
                0,
                bytes,
                t.elapsed(),
                "miniz_oxide, one thread (no CRC check)",
            )
        }
        "floor-json" => {
            let mut secs = Duration::ZERO;
            let mut bytes = 0;
            for f in &files {
                let json = gunzip(f);
                bytes += json.len() as u64;
                let t = Instant::now();
                let v: serde::de::IgnoredAny = serde_json::from_slice(&json).unwrap();
                secs += t.elapsed();
                std::hint::black_box(v);
            }
            result(
                stage,
                0,
                bytes,
                secs,
                "serde_json from_slice, IgnoredAny, parse time only",
            )
        }
        "engine-msgpack" | "engine-ndjson" | "engine-msgpack-sha256" => {
            // With `-sha256`: the SHA-256 of the decompressed bytes as they are read, as the
            // worker keeps it for CloudTrail's digests.
            let hashing = stage.ends_with("-sha256");
            let encoder: Box<dyn Encoder> = if stage.starts_with("engine-msgpack") {
                Box::new(MsgpackEncoder { metadata_key: None })
            } else {
                Box::new(NdjsonEncoder::default())
            };
            let fallback = EventTime::from_parts(0, 0).unwrap();
            let t = Instant::now();
            let (mut events, mut out_bytes, mut json_bytes) = (0u64, 0u64, 0u64);
            let mut out = Vec::with_capacity(2 << 20);
            for f in &files {
                let data = std::fs::read(f).unwrap();
                let object = ObjectRef::file(f.clone(), String::new(), data.len() as u64, fallback);
                let mut hash = hashing.then(cloudtrail_s3::digest::Sha256::default);
                let reader = CountingReader {
                    inner: decode::open(&data, 1 << 30),
                    n: &mut json_bytes,
                    hash: hash.as_mut(),
                };
                let options = split::SplitOptions {
                    skip: 0,
                    passed: Vec::new(),
                    fallback,
                    max_event_bytes: 16 << 20,
                };
                let outcome = split::split(reader, options, |e| {
                    encoder.encode(&e, &object, &mut out).unwrap();
                    if out.len() > (1 << 20) {
                        out_bytes += out.len() as u64;
                        out.clear();
                    }
                    Ok(())
                });
                assert!(outcome.error.is_none());
                events += outcome.stats.events;
                std::hint::black_box(hash.map(|h| h.finish()));
            }
            out_bytes += out.len() as u64;
            let note = format!(
                "decompress+split+time+encode, one thread; {:.0} B out/event",
                out_bytes as f64 / events as f64
            );
            result(stage, events, json_bytes, t.elapsed(), &note)
        }
        "plugin-dir" | "plugin-dir-defaults" | "plugin-s3" => {
            let events_total = 2_900 * COPIES as u64;
            let batch = if stage == "plugin-dir-defaults" {
                "4M"
            } else {
                "64M"
            };
            let mut props: Vec<(&str, String)> = vec![
                ("start_time", "2023-07-01T00:00:00Z".into()),
                ("batch_bytes", batch.into()),
                ("workers", "4".into()),
            ];
            if stage.starts_with("plugin-dir") {
                props.push(("dir", corpus_dir().to_str().unwrap().into()));
            } else {
                let bucket = server::bucket("bench");
                let c = server::client();
                server::block_on(async {
                    let mut tasks = Vec::new();
                    for f in &files {
                        let key = format!("{DAY_DIR}/{}", f.file_name().unwrap().to_str().unwrap());
                        let body = std::fs::read(f).unwrap();
                        let req = c
                            .put_object()
                            .bucket(&bucket)
                            .key(key)
                            .body(body.into())
                            .send();
                        tasks.push(req);
                        if tasks.len() == 16 {
                            for t in tasks.drain(..) {
                                t.await.unwrap();
                            }
                        }
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
                props.extend(
                    server::s3_props(&bucket)
                        .into_iter()
                        .filter(|(k, _)| *k != "start_time"),
                );
            }
            let list: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let plugin = host::Plugin::load();
            let t = Instant::now();
            let inst = plugin.start(&list).expect("init");
            let mut events = 0u64;
            let mut calls = 0u64;
            while events < events_total && t.elapsed() < Duration::from_secs(600) {
                let (_, data) = inst.collect();
                calls += 1;
                if data.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                    continue;
                }
                events += count_records(&data);
            }
            let secs = t.elapsed();
            drop(inst);
            let note = format!(
                "collect as fast as it returns, batch_bytes {batch}, 4 workers; {calls} collects"
            );
            result(stage, events, total_json, secs, &note)
        }
        "huge-object" => {
            // One object of about 1 GB decompressed (the real events repeated), written on
            // the fly, through the plugin with default settings: memory must follow the
            // queue, not the object.
            let dir = repo().join("target/bench-huge");
            let path = dir.join(DAY_DIR).join("huge.json.gz");
            let mut events_in_object = 0u64;
            let mut json_bytes = 0u64;
            if !path.exists() {
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                let events: Vec<String> = files[..55]
                    .iter()
                    .flat_map(|f| {
                        let v: serde_json::Value = serde_json::from_slice(&gunzip(f)).unwrap();
                        v["Records"]
                            .as_array()
                            .unwrap()
                            .iter()
                            .map(|e| e.to_string())
                            .collect::<Vec<_>>()
                    })
                    .collect();
                let mut e = GzEncoder::new(
                    std::io::BufWriter::new(std::fs::File::create(&path).unwrap()),
                    Compression::fast(),
                );
                e.write_all(b"{\"Records\":[").unwrap();
                let mut first = true;
                'outer: loop {
                    for ev in &events {
                        if json_bytes + ev.len() as u64 > 1_000_000_000 {
                            break 'outer;
                        }
                        if !first {
                            e.write_all(b",").unwrap();
                        }
                        first = false;
                        e.write_all(ev.as_bytes()).unwrap();
                        json_bytes += ev.len() as u64 + 1;
                        events_in_object += 1;
                    }
                }
                e.write_all(b"]}").unwrap();
                e.finish().unwrap();
                std::fs::write(
                    dir.join("events"),
                    format!("{events_in_object} {json_bytes}"),
                )
                .unwrap();
            } else {
                let t = std::fs::read_to_string(dir.join("events")).unwrap();
                let (a, b) = t.trim().split_once(' ').unwrap();
                events_in_object = a.parse().unwrap();
                json_bytes = b.parse().unwrap();
            }
            let before = peak_rss_kb();
            let list = [
                ("dir", dir.to_str().unwrap()),
                ("start_time", "2000-01-01T00:00:00Z"),
            ];
            let plugin = host::Plugin::load();
            let t = Instant::now();
            let inst = plugin.start(&list).expect("init");
            let mut events = 0u64;
            while events < events_in_object && t.elapsed() < Duration::from_secs(600) {
                let (_, data) = inst.collect();
                if data.is_empty() {
                    std::thread::sleep(Duration::from_millis(1));
                }
                events += count_records(&data);
            }
            let secs = t.elapsed();
            drop(inst);
            let note = format!(
                "one {:.2} GB object, default settings (batch 4M, buffer 8M); RSS before the plugin started {:.1} MB",
                json_bytes as f64 / 1e9,
                before as f64 / 1024.0
            );
            result(stage, events, json_bytes, secs, &note)
        }
        "sqs-pace" => {
            let (secs, objects, note) = sqs_pace::run();
            result(stage, objects, 0, Duration::from_secs_f64(secs), &note)
        }
        "fb-backlog" => {
            // The real host is needed: without `FLUENT_BIT` the row is left out.
            let Some(fb) = std::env::var_os("FLUENT_BIT") else {
                eprintln!("fb-backlog: skipped (set FLUENT_BIT to a Fluent Bit binary)");
                return;
            };
            let fb = PathBuf::from(fb);
            // `FB_BACKLOG_SETTINGS="batch_bytes=16M,buffer_bytes=16M"` runs one backlog with
            // those settings instead of the row's two, to explore.
            if let Ok(explore) = std::env::var("FB_BACKLOG_SETTINGS") {
                let pairs: Vec<(&str, &str)> = explore
                    .split(',')
                    .filter_map(|kv| kv.split_once('='))
                    .collect();
                let r = fb_backlog::backlog(&fb, &pairs);
                let note = format!(
                    "{explore}: {:.0} events/s, peak {:.0} MB, idle {:.0} MB, {} requests",
                    r.events as f64 / r.secs,
                    r.peak_kb as f64 / 1024.0,
                    r.idle_kb as f64 / 1024.0,
                    r.requests
                );
                let mut out = result(stage, r.events, 0, Duration::from_secs_f64(r.secs), &note);
                out.peak_rss_kb = r.peak_kb;
                println!("RESULT {}", serde_json::to_string(&out).unwrap());
                return;
            }
            let (secs, events, peak_kb, note) = fb_backlog::run(&fb);
            let mut out = result(stage, events, 0, Duration::from_secs_f64(secs), &note);
            out.peak_rss_kb = peak_kb;
            println!("RESULT {}", serde_json::to_string(&out).unwrap());
            return;
        }
        "org-fb" => {
            let Some(fb) = std::env::var_os("FLUENT_BIT") else {
                eprintln!("org-fb: skipped (set FLUENT_BIT to a Fluent Bit binary)");
                return;
            };
            let (secs, peak_kb, note) = org_fb::run(Path::new(&fb));
            let mut out = result(stage, 0, 0, Duration::from_secs_f64(secs), &note);
            out.peak_rss_kb = peak_kb;
            println!("RESULT {}", serde_json::to_string(&out).unwrap());
            return;
        }
        "month-backfill" => {
            let (secs, objects, note) = month_backfill::run();
            result(stage, objects, 0, Duration::from_secs_f64(secs), &note)
        }
        "org-listing" => {
            let (secs, note) = org_listing::run();
            result(stage, 0, 0, Duration::from_secs_f64(secs), &note)
        }
        "sqs-latency" => {
            // Upload to handoff through S3 -> SQS notifications on loopback (moto), one
            // object at a time, collect polled every 2 ms (Fluent Bit polls every second).
            let bucket = server::bucket("latency");
            let q = queue::create("latency");
            queue::notify_bucket(&bucket, &q);
            let props: Vec<(&str, String)> = server::s3_props("x")
                .into_iter()
                .filter(|(k, _)| *k != "bucket")
                .chain([
                    ("sqs.queue_url", q.clone()),
                    ("sqs.endpoint", server::endpoint().to_string()),
                ])
                .collect();
            let list: Vec<(&str, &str)> = props.iter().map(|(k, v)| (*k, v.as_str())).collect();
            let inst = host::Plugin::load().start(&list).expect("init");
            let body = std::fs::read(&files[0]).unwrap();
            let per_object = count_json_events(&gunzip(&files[0]));
            let mut lat = Vec::new();
            let t = Instant::now();
            for i in 0..20 {
                let key = format!("{DAY_DIR}/latency-{i}.json.gz");
                let t0 = Instant::now();
                server::put(&bucket, &key, body.clone());
                let mut got = 0;
                while got < per_object && t0.elapsed() < Duration::from_secs(60) {
                    got += count_records(&inst.collect().1);
                    std::thread::sleep(Duration::from_millis(2));
                }
                lat.push(t0.elapsed().as_secs_f64() * 1000.0);
            }
            let secs = t.elapsed();
            drop(inst);
            lat.sort_by(f64::total_cmp);
            let note = format!(
                "upload -> records in the host, 20 objects: p50 {:.0} ms, p95 {:.0} ms, max {:.0} ms",
                lat[10], lat[18], lat[19]
            );
            // Latency, not throughput: no events/s for this row.
            result(stage, 0, 0, secs, &note)
        }
        "plugin-1s-tick" => {
            // Fluent Bit's pace: one collect a second. What one instance moves per second
            // is what one collect returns.
            let dir = corpus_dir();
            let list = [
                ("dir", dir.to_str().unwrap()),
                ("start_time", "2023-07-01T00:00:00Z"),
                ("batch_bytes", "64M"),
                ("buffer_bytes", "128M"),
            ];
            let plugin = host::Plugin::load();
            let inst = plugin.start(&list).expect("init");
            std::thread::sleep(Duration::from_secs(1));
            let t = Instant::now();
            let mut events = 0u64;
            let mut per_tick = Vec::new();
            for _ in 0..2 {
                let tick = Instant::now();
                let (_, data) = inst.collect();
                let n = count_records(&data);
                per_tick.push(n);
                events += n;
                std::thread::sleep(Duration::from_secs(1).saturating_sub(tick.elapsed()));
            }
            let secs = t.elapsed();
            drop(inst);
            let note = format!("1 collect/s, batch_bytes 64M: events per collect {per_tick:?}");
            result(stage, events, 0, secs, &note)
        }
        other => panic!("unknown stage {other}"),
    };
    let mut r = r;
    r.peak_rss_kb = peak_rss_kb();
    println!("RESULT {}", serde_json::to_string(&r).unwrap());
}

struct CountingReader<'a, R> {
    inner: R,
    n: &'a mut u64,
    hash: Option<&'a mut cloudtrail_s3::digest::Sha256>,
}

impl<R: Read> Read for CountingReader<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        *self.n += n as u64;
        if let Some(h) = self.hash.as_mut() {
            h.update(&buf[..n]);
        }
        Ok(n)
    }
}

fn count_json_events(json: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    v["Records"].as_array().unwrap().len() as u64
}

/// `data` gzipped.
fn gzip_bytes(data: &[u8]) -> Vec<u8> {
    let mut e = GzEncoder::new(Vec::new(), Compression::default());
    e.write_all(data).unwrap();
    e.finish().unwrap()
}

/// Counts events in a collect buffer by walking the msgpack values.
fn count_records(mut data: &[u8]) -> u64 {
    let mut n = 0;
    while !data.is_empty() {
        rmpv::decode::read_value(&mut data).expect("valid msgpack");
        n += 1;
    }
    n
}

fn result(stage: &str, events: u64, json_bytes: u64, d: Duration, note: &str) -> Result {
    Result {
        stage: stage.into(),
        events,
        json_bytes,
        secs: d.as_secs_f64(),
        peak_rss_kb: 0,
        note: note.into(),
    }
}

/// Runs a command under `/usr/bin/time` for its peak RSS (children included).
fn external(stage: &str, script: &str, events: u64, json_bytes: u64, note: &str) -> Option<Result> {
    let t = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "MAXRSS %M", "sh", "-c", script])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .output()
        .ok()?;
    let secs = t.elapsed();
    let err = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        eprintln!("{stage}: failed: {err}");
        return None;
    }
    let rss = err
        .lines()
        .find_map(|l| l.strip_prefix("MAXRSS "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0);
    let mut r = result(stage, events, json_bytes, secs, note);
    r.peak_rss_kb = rss;
    Some(r)
}

/// The command posting to a loopback receiver (in this process: it gunzips each body and
/// keeps every line), settings as in `conf/cloudtrail-s3-sumo.toml`: 1 MB bodies, gzip,
/// one account and region per request, committed as soon as answered.
fn cli_http(cli: &Path, events: u64, json_bytes: u64) -> Option<Result> {
    let rx = receiver::Receiver::start();
    let settings = repo().join("target/bench-cli-http.toml");
    let db = repo().join("target/bench-cli-http.db");
    let _ = std::fs::remove_file(&db);
    std::fs::write(
        &settings,
        format!(
            "dir = {:?}\nstart_time = \"2023-07-01T00:00:00Z\"\ndb = {:?}\n\
             [http]\nurl = {:?}\nmax_body_bytes = \"1M\"\ncommit_delay = 0\n\
             [http.headers]\n\"X-Sumo-Fields\" = \"account={{account}},region={{region}}\"\n",
            corpus_dir().to_str().unwrap(),
            db.to_str().unwrap(),
            rx.url("/receiver/v1/http/bench"),
        ),
    )
    .unwrap();
    let script = format!(
        "{} -q --once --config {}",
        cli.display(),
        settings.display()
    );
    let r = external(
        "cli-http",
        &script,
        events,
        json_bytes,
        "cloudtrail-s3 --once posting to a loopback receiver: gzip, 1 MB bodies, 4 in flight",
    )?;
    let got = rx.line_count() as u64;
    if got != events {
        eprintln!("cli-http: the receiver got {got} events of {events}");
        return None;
    }
    let requests = rx.requests().len();
    let mut r = r;
    r.note = format!("{}; {requests} requests", r.note);
    Some(r)
}

/// `conf/vector.yaml` in a real Vector (changed only in its data_dir and port): the command
/// posts to the `http_server` source, which answers once the `http` sink delivered to a
/// loopback receiver. Timed from Vector's start to the last event at the receiver; peak
/// RSS is Vector's own (the command's is the cli-http row's).
fn vector_acked(vector: &Path, cli: &Path, events: u64, json_bytes: u64) -> Option<Result> {
    let rx = receiver::Receiver::start();
    let work = repo().join("target/bench-vector");
    let _ = std::fs::remove_dir_all(&work);
    std::fs::create_dir_all(work.join("data")).unwrap();
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let sample = std::fs::read_to_string(repo().join("conf/vector.yaml")).unwrap();
    let yaml = sample
        .replace("127.0.0.1:8687", &format!("127.0.0.1:{port}"))
        .replace(
            "data_dir: /var/lib/vector",
            &format!("data_dir: {}", work.join("data").display()),
        );
    std::fs::write(work.join("vector.yaml"), yaml).unwrap();
    let settings = work.join("cloudtrail-s3.toml");
    std::fs::write(
        &settings,
        format!(
            "dir = {:?}\nstart_time = \"2023-07-01T00:00:00Z\"\ndb = {:?}\n",
            corpus_dir().to_str().unwrap(),
            work.join("state.db").to_str().unwrap(),
        ),
    )
    .unwrap();
    let path = format!(
        "{}:{}",
        cli.parent().unwrap().display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let t = Instant::now();
    let mut child = Command::new(vector)
        .arg("--config")
        .arg(work.join("vector.yaml"))
        .env("PATH", path)
        .env("SUMO_HTTP_URL", rx.url("/receiver/v1/http/bench"))
        .env("CLOUDTRAIL_S3_CONFIG", &settings)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(work.join("vector.log")).unwrap())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(600);
    let mut peak_kb = 0;
    while (rx.line_count() as u64) < events && Instant::now() < deadline {
        if let Ok(Some(status)) = child.try_wait() {
            eprintln!(
                "vector-acked: Vector exited ({status}): see {}",
                work.join("vector.log").display()
            );
            return None;
        }
        peak_kb = peak_kb.max(vm_hwm_kb(child.id()));
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = t.elapsed();
    peak_kb = peak_kb.max(vm_hwm_kb(child.id()));
    // SAFETY: kill(2) with a pid of our own child, which has not been reaped yet.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let got = rx.line_count() as u64;
    if got != events {
        eprintln!("vector-acked: the receiver got {got} events of {events} in 600 s");
        return None;
    }
    let mut r = result(
        "vector-acked",
        events,
        json_bytes,
        secs,
        "conf/vector.yaml: command -> http_server, answered once the http sink delivered to loopback; Vector's RSS",
    );
    r.peak_rss_kb = peak_kb;
    Some(r)
}

/// A process's peak resident set (`VmHWM`), 0 when it cannot be read.
/// Polls a running host every `every` until `done` says so (given the seconds since the
/// start), with its peak resident memory tracked: returns the seconds and the peak in kB.
/// Fails the bench if the host exits early or 900 s pass (`progress` says how far it got).
fn watch_host(
    child: &mut std::process::Child,
    every: Duration,
    mut done: impl FnMut(f64) -> bool,
    progress: impl Fn() -> String,
) -> (f64, u64) {
    let t = Instant::now();
    let mut peak_kb = 0;
    loop {
        peak_kb = peak_kb.max(vm_hwm_kb(child.id()));
        let secs = t.elapsed().as_secs_f64();
        if done(secs) {
            return (secs, peak_kb);
        }
        assert!(child.try_wait().unwrap().is_none(), "the host exited early");
        assert!(
            t.elapsed() < Duration::from_secs(900),
            "{} after 900 s",
            progress()
        );
        std::thread::sleep(every);
    }
}

/// A process's peak resident memory so far (`VmHWM`), in kB.
fn vm_hwm_kb(pid: u32) -> u64 {
    proc_status_kb(pid, "VmHWM")
}

/// One `kB` field of `/proc/PID/status` (`VmHWM`, `VmRSS`), 0 when unreadable.
fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        })
        .unwrap_or(0)
}

fn have(tool: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {tool}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success())
}

fn main() {
    let args: Vec<String> = std::env::args().collect();
    if let Some(i) = args.iter().position(|a| a == "--stage") {
        run_stage(&args[i + 1]);
        return;
    }
    let files = corpus();
    let json_bytes: u64 = files.iter().map(|f| gunzip(f).len() as u64).sum();
    let gz_bytes: u64 = files
        .iter()
        .map(|f| std::fs::metadata(f).unwrap().len())
        .sum();
    let events = 2_900 * COPIES as u64;
    println!(
        "corpus: {} objects, {} events, {:.1} MB JSON, {:.1} MB gzipped ({})",
        files.len(),
        events,
        json_bytes as f64 / 1e6,
        gz_bytes as f64 / 1e6,
        corpus_dir().display()
    );
    let filter: Vec<&String> = args
        .iter()
        .skip(1)
        .filter(|a| !a.starts_with('-'))
        .collect();
    let wanted = |s: &str| filter.is_empty() || filter.iter().any(|f| s.contains(f.as_str()));
    let me = std::env::current_exe().unwrap();
    let mut results = Vec::new();
    for stage in [
        "floor-gunzip",
        "floor-gunzip-miniz",
        "floor-json",
        "engine-msgpack",
        "engine-msgpack-sha256",
        "engine-ndjson",
        "plugin-dir",
        "plugin-dir-defaults",
        "plugin-s3",
        "plugin-1s-tick",
        "huge-object",
        "sqs-latency",
        "sqs-pace",
        "fb-backlog",
        "org-listing",
        "org-fb",
        "month-backfill",
    ] {
        if !wanted(stage) {
            continue;
        }
        eprintln!("running {stage}...");
        let out = Command::new(&me)
            .args(["--stage", stage])
            .env("HOST_LOG_LEVEL", "2")
            .stderr(Stdio::inherit())
            .output()
            .unwrap();
        let text = String::from_utf8_lossy(&out.stdout);
        match text.lines().find_map(|l| l.strip_prefix("RESULT ")) {
            Some(line) => {
                let mut r: Result = serde_json::from_str(line).unwrap();
                if r.json_bytes == 146_000_000 {
                    r.json_bytes = json_bytes;
                }
                results.push(r)
            }
            None => eprintln!("{stage}: no result ({})", out.status),
        }
    }
    let dir = corpus_dir().join(DAY_DIR);
    let cli = repo().join("target/release/cloudtrail-s3");
    if wanted("cli-dir") && cli.exists() {
        eprintln!("running cli-dir...");
        let settings = repo().join("target/bench-cli.toml");
        std::fs::write(
            &settings,
            format!(
                "dir = {:?}\nstart_time = \"2023-07-01T00:00:00Z\"\nbatch_bytes = \"16M\"\n",
                corpus_dir().to_str().unwrap()
            ),
        )
        .unwrap();
        let script = format!(
            "{} -q --once --config {} > /dev/null",
            cli.display(),
            settings.display()
        );
        results.extend(external(
            "cli-dir",
            &script,
            events,
            json_bytes,
            "cloudtrail-s3 --once > /dev/null, the default 8 workers",
        ));
    }
    if wanted("cli-http") && cli.exists() {
        eprintln!("running cli-http...");
        results.extend(cli_http(&cli, events, json_bytes));
    }
    if wanted("vector") && cli.exists() {
        match std::env::var_os("VECTOR") {
            Some(vector) => {
                eprintln!("running vector-acked...");
                results.extend(vector_acked(Path::new(&vector), &cli, events, json_bytes));
            }
            None => eprintln!("vector-acked: skipped (set VECTOR to a Vector binary)"),
        }
    }
    if wanted("jq") && have("jq") {
        eprintln!("running jq...");
        let script = format!("cat {}/*.gz | gzip -dc | jq -c '.Records[]'", dir.display());
        results.extend(external(
            "peer-jq",
            &script,
            events,
            json_bytes,
            "cat, gzip -dc, jq -c '.Records[]' in a pipe",
        ));
    }
    if wanted("python") && have("python3") {
        eprintln!("running python...");
        let py = "import glob,gzip,json,sys\n\
                  out=open('/dev/null','w')\n\
                  for f in sorted(glob.glob(sys.argv[1]+'/*.gz')):\n\
                  \x20   d=json.load(gzip.open(f))\n\
                  \x20   for r in d['Records']: out.write(json.dumps(r)+'\\n')\n";
        let script_path = repo().join("target/bench-peer.py");
        std::fs::write(&script_path, py).unwrap();
        let script = format!("python3 {} {}", script_path.display(), dir.display());
        results.extend(external(
            "peer-python",
            &script,
            events,
            json_bytes,
            "gzip + json.load + json.dumps per event",
        ));
    }
    print_table(&results);
}

fn print_table(results: &[Result]) {
    let rate = |stage: &str| {
        results
            .iter()
            .find(|r| r.stage == stage)
            .map(|r| r.events as f64 / r.secs)
    };
    let engine = rate("engine-msgpack");
    println!();
    println!("| stage | events/s | MB/s (JSON) | seconds | peak RSS MB | engine ÷ this | note |");
    println!("|---|---:|---:|---:|---:|---:|---|");
    for r in results {
        let ev = if r.events > 0 {
            format!("{:.0}", r.events as f64 / r.secs)
        } else {
            "—".into()
        };
        let mbs = if r.json_bytes > 0 {
            format!("{:.0}", r.json_bytes as f64 / 1e6 / r.secs)
        } else {
            "—".into()
        };
        let ratio = match (engine, r.events) {
            (Some(e), n) if n > 0 && r.stage != "engine-msgpack" => {
                format!("{:.2}", e / (n as f64 / r.secs))
            }
            _ => "—".into(),
        };
        println!(
            "| {} | {} | {} | {:.2} | {:.1} | {} | {} |",
            r.stage,
            ev,
            mbs,
            r.secs,
            r.peak_rss_kb as f64 / 1024.0,
            ratio,
            r.note
        );
    }
    let by_bytes = |stage: &str| {
        results
            .iter()
            .find(|r| r.stage == stage)
            .map(|r| r.json_bytes as f64 / r.secs)
    };
    if let (Some(e), Some(g), Some(j)) = (
        by_bytes("engine-msgpack"),
        by_bytes("floor-gunzip"),
        by_bytes("floor-json"),
    ) {
        println!();
        println!(
            "engine MB/s ÷ gunzip MB/s = {:.2}; engine MB/s ÷ JSON-parse MB/s = {:.2}; engine ÷ (gunzip then parse) = {:.2}",
            e / g,
            e / j,
            e * (1.0 / g + 1.0 / j)
        );
    }
}
