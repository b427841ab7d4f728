//! The real S3 server the tests talk to: moto, started once per test process on a free
//! loopback port, and S3 helpers through the real AWS SDK.
//!
//! moto is installed by the README's test command (`scripts/test`, into `.venv`);
//! `MOTO_SERVER` can point at another `moto_server` executable. When it cannot start, the
//! tests that need it fail with a message saying so; none is skipped.

use std::future::Future;
use std::net::{TcpListener, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU32, Ordering};
use std::time::{Duration, Instant};

use aws_sdk_s3::Client;
use aws_sdk_s3::config::{BehaviorVersion, Credentials, Region};
use aws_sdk_s3::primitives::{ByteStream, DateTime};

pub const ACCESS_KEY: &str = "AKIATESTKEY000000001";
pub const SECRET_KEY: &str = "testsecret/doNotLogMe+0000000000000000001";

static ENDPOINT: OnceLock<String> = OnceLock::new();

/// The server's endpoint URL, starting it on first use (child host processes get their
/// parent's server through `MOTO_ENDPOINT`).
pub fn endpoint() -> &'static str {
    ENDPOINT.get_or_init(|| {
        if let Ok(e) = std::env::var("MOTO_ENDPOINT") {
            return e;
        }
        start().unwrap_or_else(|e| {
            panic!(
                "cannot start the moto S3 server: {e}\n\
                 Run the tests with the README's test command (scripts/test), which installs moto into .venv,\n\
                 or set MOTO_SERVER to a moto_server executable."
            )
        })
    })
}

/// The command that starts moto: `MOTO_SERVER` as given, or else `tests/moto_server.py`
/// (moto with its SQS delete made thread-safe; see that file) on the `.venv` Python.
fn moto_command() -> Result<Command, String> {
    if let Some(exe) = std::env::var_os("MOTO_SERVER") {
        return Ok(Command::new(exe));
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let python = root.join(".venv/bin/python3");
    if !python.exists() {
        return Err(format!("{} does not exist", python.display()));
    }
    let mut cmd = Command::new(python);
    cmd.arg(root.join("tests/moto_server.py"));
    Ok(cmd)
}

fn start() -> Result<String, String> {
    let mut cmd = moto_command()?;
    let port = TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map_err(|e| e.to_string())?
        .port();
    let log_path = std::env::temp_dir().join(format!("cloudtrail-s3-moto-{port}.log"));
    let log = std::fs::File::create(&log_path).map_err(|e| e.to_string())?;
    // The child gets SIGKILL when the thread that forked it ends (PR_SET_PDEATHSIG), so it
    // is forked from a thread that lives as long as the test process.
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        cmd.args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdin(Stdio::null())
            .stdout(log.try_clone().expect("log file"))
            .stderr(log);
        // SAFETY: prctl is async-signal-safe; nothing else runs between fork and exec.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        let child = cmd.spawn();
        let ok = child.is_ok();
        let _ = tx.send(child.map(|_| ()).map_err(|e| e.to_string()));
        if ok {
            loop {
                std::thread::park();
            }
        }
    });
    rx.recv().map_err(|e| e.to_string())??;
    let deadline = Instant::now() + Duration::from_secs(60);
    while Instant::now() < deadline {
        if TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(format!("http://127.0.0.1:{port}"));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(format!(
        "moto did not listen on 127.0.0.1:{port} within 60 s; its log: {}",
        log_path.display()
    ))
}

/// Runs a future on a shared runtime (tests are plain `#[test]` functions).
pub fn block_on<F: Future>(f: F) -> F::Output {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    })
    .block_on(f)
}

pub fn client() -> Client {
    client_at(endpoint())
}

/// A client of the test server reached through `endpoint` (a proxy in front of it).
pub fn client_at(endpoint: &str) -> Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(BehaviorVersion::latest())
        .region(Region::new("us-east-1"))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .credentials_provider(Credentials::new(ACCESS_KEY, SECRET_KEY, None, None, "test"))
        .build();
    Client::from_conf(conf)
}

/// A new, empty bucket with a name unique to this test run.
pub fn bucket(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    block_on(client().create_bucket().bucket(&name).send()).expect("create bucket");
    name
}

pub fn put(bucket: &str, key: &str, body: Vec<u8>) {
    block_on(
        client()
            .put_object()
            .bucket(bucket)
            .key(key)
            .body(ByteStream::from(body))
            .send(),
    )
    .unwrap_or_else(|e| panic!("put s3://{bucket}/{key}: {e:?}"));
}

/// LastModified of an object, as Unix seconds.
pub fn last_modified(bucket: &str, key: &str) -> u32 {
    let head =
        block_on(client().head_object().bucket(bucket).key(key).send()).expect("head object");
    let t: &DateTime = head.last_modified().expect("LastModified");
    t.secs() as u32
}

/// The properties every S3 test instance needs to reach moto.
pub fn s3_props(bucket: &str) -> Vec<(&'static str, String)> {
    vec![
        ("bucket", bucket.to_string()),
        ("endpoint", endpoint().to_string()),
        ("region", "us-east-1".into()),
        ("force_path_style", "on".into()),
        ("access_key_id", ACCESS_KEY.into()),
        ("secret_access_key", SECRET_KEY.into()),
        ("start_time", "2023-07-01T00:00:00Z".into()),
        ("scan_interval", "1".into()),
    ]
}

/// A DynamoDB client of the test server.
pub fn dynamodb() -> aws_sdk_dynamodb::Client {
    let conf = aws_sdk_dynamodb::Config::builder()
        .behavior_version(aws_sdk_dynamodb::config::BehaviorVersion::latest())
        .region(aws_sdk_dynamodb::config::Region::new("us-east-1"))
        .endpoint_url(endpoint())
        .credentials_provider(aws_sdk_dynamodb::config::Credentials::new(
            ACCESS_KEY, SECRET_KEY, None, None, "test",
        ))
        .build();
    aws_sdk_dynamodb::Client::from_conf(conf)
}
