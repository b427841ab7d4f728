//! A stand-in for Fluent Bit: loads the built plugin with `dlopen` and drives it the way
//! `fluent-bit-proxy-abi.md` says Fluent Bit 5.1.1 does.
//!
//! * Registration on the calling thread into a zeroed 48-byte definition.
//! * Each instance on its own thread (Init, collects, pause/resume, pre-exit and exit all
//!   on that thread), with `remote_context` at offset 8 of a zeroed context.
//! * Collect: `*buf = NULL, *len = 0` before the call; the bytes are copied and cleanup is
//!   called only when `len > 0` and the return value is not -1.
//! * Properties: case-insensitive lookup, NULL for unset or empty values and for the keys
//!   Fluent Bit keeps for itself.
//!
//! One liberty: `log_print` is variadic in C; here it is defined with the five arguments
//! the plugin passes (`level, NULL, 0, "%s", msg`), which is the same call on x86-64.

use std::ffi::{CStr, CString, c_char, c_int, c_void};
use std::path::PathBuf;
use std::ptr;
use std::sync::mpsc::{Sender, channel};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use libloading::os::unix::{Library, RTLD_LAZY, Symbol};

/// `struct flb_plugin_proxy_def` as 5.1.1 allocates it.
#[repr(C)]
struct ProxyDef {
    type_: c_int,
    proxy: c_int,
    flags: c_int,
    name: *const c_char,
    description: *const c_char,
    event_type: c_int,
    config_map: *mut c_void,
}

#[repr(C)]
struct InputPlugin {
    name: *mut c_char,
    api: *const FlbApi,
    i_ins: *mut c_void,
    context: *mut Context,
    host_private: [*mut c_void; 4],
}

#[repr(C)]
struct Context {
    coll_fd: c_int,
    remote_context: *mut c_void,
    proxy: *mut c_void,
}

#[repr(C)]
struct FlbApi {
    output_get_property: *const c_void,
    input_get_property: unsafe extern "C" fn(*const c_char, *mut c_void) -> *const c_char,
    output_get_cmt_instance: *const c_void,
    input_get_cmt_instance: *const c_void,
    log_print: unsafe extern "C" fn(c_int, *const c_char, c_int, *const c_char, *const c_char),
    input_log_check: unsafe extern "C" fn(*mut c_void, c_int) -> c_int,
    output_log_check: *const c_void,
    custom_get_property: *const c_void,
    custom_log_check: *const c_void,
}

/// The host's view of one instance: what `i_ins` points to.
struct HostInstance {
    props: Vec<(String, CString)>,
    log_level: c_int,
}

/// Keys Fluent Bit consumes itself; the plugin never sees them.
const HOST_KEYS: &[&str] = &[
    "name",
    "tag",
    "log_level",
    "alias",
    "mem_buf_limit",
    "storage.type",
    "threaded",
];

unsafe extern "C" fn input_get_property(key: *const c_char, i_ins: *mut c_void) -> *const c_char {
    let ins = unsafe { &*(i_ins as *const HostInstance) };
    let key = unsafe { CStr::from_ptr(key) }.to_string_lossy();
    if HOST_KEYS.iter().any(|k| k.eq_ignore_ascii_case(&key)) {
        return ptr::null();
    }
    ins.props
        .iter()
        .find(|(k, v)| k.eq_ignore_ascii_case(&key) && !v.as_bytes().is_empty())
        .map_or(ptr::null(), |(_, v)| v.as_ptr())
}

unsafe extern "C" fn input_log_check(i_ins: *mut c_void, level: c_int) -> c_int {
    let ins = unsafe { &*(i_ins as *const HostInstance) };
    c_int::from(level <= ins.log_level)
}

/// Every line any instance printed, in order: `(level, text)`.
pub static LOGS: Mutex<Vec<(c_int, String)>> = Mutex::new(Vec::new());

unsafe extern "C" fn log_print(
    level: c_int,
    _file: *const c_char,
    _line: c_int,
    fmt: *const c_char,
    arg: *const c_char,
) {
    let fmt = unsafe { CStr::from_ptr(fmt) }.to_string_lossy();
    assert_eq!(
        fmt, "%s",
        "the plugin must pass its text as an argument, never as the format"
    );
    let text = unsafe { CStr::from_ptr(arg) }
        .to_string_lossy()
        .into_owned();
    eprintln!("[host log {level}] {text}");
    LOGS.lock().unwrap().push((level, text));
}

static API: FlbApi = FlbApi {
    output_get_property: ptr::null(),
    input_get_property,
    output_get_cmt_instance: ptr::null(),
    input_get_cmt_instance: ptr::null(),
    log_print,
    input_log_check,
    output_log_check: ptr::null(),
    custom_get_property: ptr::null(),
    custom_log_check: ptr::null(),
};

// SAFETY (test code): the API table only holds function pointers and NULLs.
unsafe impl Sync for FlbApi {}

/// Lines logged so far that contain `needle`.
pub fn logs_containing(needle: &str) -> Vec<(c_int, String)> {
    LOGS.lock()
        .unwrap()
        .iter()
        .filter(|(_, t)| t.contains(needle))
        .cloned()
        .collect()
}

pub type InitFn = unsafe extern "C" fn(*mut c_void) -> c_int;
pub type CollectFn = unsafe extern "C" fn(*mut c_void, *mut *mut c_void, *mut usize) -> c_int;
pub type CleanupFn = unsafe extern "C" fn(*mut c_void, *mut c_void) -> c_int;
pub type VoidFn = unsafe extern "C" fn();
type PreExitFn = unsafe extern "C" fn(c_int);
pub type ExitFn = unsafe extern "C" fn() -> c_int;

#[derive(Clone, Copy)]
struct Entry {
    register: unsafe extern "C" fn(*mut c_void) -> c_int,
    collect_no_ctx: unsafe extern "C" fn(*mut *mut c_void, *mut usize) -> c_int,
    init: InitFn,
    collect: CollectFn,
    cleanup: CleanupFn,
    pause: VoidFn,
    resume: VoidFn,
    pre_exit: PreExitFn,
    exit: ExitFn,
}

impl Entry {
    fn raw(&self) -> Raw {
        Raw {
            collect: self.collect,
            cleanup: self.cleanup,
            collect_no_ctx: self.collect_no_ctx,
            pause: self.pause,
            resume: self.resume,
            exit: self.exit,
            init: self.init,
            register: self.register,
        }
    }
}

/// The loaded `.so`, registered once.
pub struct Plugin {
    _lib: Arc<Library>,
    pub name: String,
    pub description: String,
    entry: Entry,
}

/// Path of the built plugin: `CLOUDTRAIL_PLUGIN_SO`, or the debug build the test command
/// makes.
pub fn so_path() -> PathBuf {
    if let Some(p) = std::env::var_os("CLOUDTRAIL_PLUGIN_SO") {
        return PathBuf::from(p);
    }
    let target = std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("target"));
    let path = target.join("debug/libcloudtrail_s3_plugin.so");
    assert!(
        path.exists(),
        "{} is missing: build it first with `cargo build -p cloudtrail-s3-plugin` (the README's test command does)",
        path.display()
    );
    path
}

impl Plugin {
    pub fn load() -> Plugin {
        let lib = unsafe { Library::open(Some(so_path()), RTLD_LAZY) }.expect("dlopen the plugin");
        let mut def: Box<ProxyDef> = Box::new(unsafe { std::mem::zeroed() });
        let register: Symbol<unsafe extern "C" fn(*mut ProxyDef) -> c_int> =
            unsafe { lib.get(b"FLBPluginRegister") }.expect("FLBPluginRegister");
        let rc = unsafe { register(&mut *def) };
        assert_ne!(rc, -1, "FLBPluginRegister failed");
        assert_eq!(
            (def.type_, def.proxy, def.flags),
            (1, 11, 0),
            "input plugin, Go proxy, no flags"
        );
        assert_eq!(def.event_type, 0, "event_type must be left alone");
        assert!(def.config_map.is_null(), "config_map must be left alone");
        let name = unsafe { CStr::from_ptr(def.name) }
            .to_string_lossy()
            .into_owned();
        let description = unsafe { CStr::from_ptr(def.description) }
            .to_string_lossy()
            .into_owned();
        macro_rules! sym {
            ($name:literal) => {
                *unsafe { lib.get($name) }.expect(std::str::from_utf8($name).unwrap())
            };
        }
        let entry = Entry {
            register: sym!(b"FLBPluginRegister"),
            collect_no_ctx: sym!(b"FLBPluginInputCallback"),
            init: sym!(b"FLBPluginInit"),
            collect: sym!(b"FLBPluginInputCallbackCtx"),
            cleanup: sym!(b"FLBPluginInputCleanupCallbackCtx"),
            pause: sym!(b"FLBPluginInputPause"),
            resume: sym!(b"FLBPluginInputResume"),
            pre_exit: sym!(b"FLBPluginInputPreExit"),
            exit: sym!(b"FLBPluginExit"),
        };
        Plugin {
            _lib: Arc::new(lib),
            name,
            description,
            entry,
        }
    }

    /// Starts an instance with these properties (log level debug). `Err(rc)` when Init
    /// refused.
    pub fn start(&self, props: &[(&str, &str)]) -> Result<Instance, c_int> {
        let props: Vec<(String, CString)> = props
            .iter()
            .map(|(k, v)| (k.to_string(), CString::new(*v).unwrap()))
            .collect();
        let entry = self.entry;
        let name = self.name.clone();
        let (init_tx, init_rx) = channel();
        let (tx, rx) = channel::<Cmd>();
        let thread = std::thread::Builder::new()
            .name("flb-in-cloudtrail".into())
            .spawn(move || instance_thread(entry, name, props, init_tx, rx))
            .unwrap();
        let rc = init_rx.recv().expect("instance thread died during Init");
        if rc <= 0 {
            thread.join().unwrap();
            return Err(rc);
        }
        Ok(Instance {
            tx,
            thread: Some(thread),
            exited: false,
        })
    }
}

enum Cmd {
    /// Collect; the optional storage step runs on the copied bytes before cleanup, as
    /// Fluent Bit's filesystem storage has the chunk before the plugin is told.
    Collect(Sender<(c_int, Vec<u8>)>, Option<StoreFn>),
    Pause,
    Resume,
    Exit(Sender<c_int>),
    /// Runs a raw call sequence on the instance thread (for abuse tests), with the
    /// instance's `remote_context`.
    Run(RawCall),
}

type RawCall = Box<dyn FnOnce(&Raw, *mut c_void) + Send>;
type StoreFn = Box<dyn FnOnce(&[u8]) + Send>;

/// Direct access to every export, for tests that call them the way no host should.
pub struct Raw {
    pub collect: CollectFn,
    pub cleanup: CleanupFn,
    pub collect_no_ctx: unsafe extern "C" fn(*mut *mut c_void, *mut usize) -> c_int,
    pub pause: VoidFn,
    pub resume: VoidFn,
    pub exit: ExitFn,
    pub init: InitFn,
    pub register: unsafe extern "C" fn(*mut c_void) -> c_int,
}

fn instance_thread(
    e: Entry,
    name: String,
    props: Vec<(String, CString)>,
    init_tx: Sender<c_int>,
    rx: std::sync::mpsc::Receiver<Cmd>,
) {
    let ins = Box::new(HostInstance {
        props,
        log_level: 4,
    });
    let mut context = Box::new(Context {
        coll_fd: 0,
        remote_context: ptr::null_mut(),
        proxy: ptr::null_mut(),
    });
    let cname = CString::new(name).unwrap();
    let mut plugin = Box::new(InputPlugin {
        name: cname.as_ptr().cast_mut(),
        api: &API,
        i_ins: (&*ins as *const HostInstance).cast_mut().cast(),
        context: &mut *context,
        host_private: [ptr::null_mut(); 4],
    });
    let rc = unsafe { (e.init)((&mut *plugin as *mut InputPlugin).cast()) };
    init_tx.send(rc).unwrap();
    if rc <= 0 {
        return;
    }
    let remote = context.remote_context;
    assert!(
        !remote.is_null(),
        "Init succeeded without setting remote_context"
    );
    while let Ok(cmd) = rx.recv() {
        match cmd {
            Cmd::Collect(reply, store) => {
                let mut buf: *mut c_void = ptr::null_mut();
                let mut len: usize = 0;
                let rc = unsafe { (e.collect)(remote, &mut buf, &mut len) };
                let mut data = Vec::new();
                if len > 0 && rc != -1 {
                    assert!(!buf.is_null(), "len > 0 with a NULL buffer");
                    data.extend_from_slice(unsafe {
                        std::slice::from_raw_parts(buf.cast::<u8>(), len)
                    });
                    if let Some(store) = store {
                        store(&data);
                    }
                    unsafe { (e.cleanup)(remote, buf) };
                }
                let _ = reply.send((rc, data));
            }
            Cmd::Pause => unsafe { (e.pause)() },
            Cmd::Resume => unsafe { (e.resume)() },
            Cmd::Exit(reply) => {
                unsafe { (e.pre_exit)(0) };
                let rc = unsafe { (e.exit)() };
                let _ = reply.send(rc);
            }
            Cmd::Run(f) => f(&e.raw(), remote),
        }
    }
}

/// A running instance; exits when dropped.
pub struct Instance {
    tx: Sender<Cmd>,
    thread: Option<JoinHandle<()>>,
    exited: bool,
}

impl Instance {
    /// One collect call: `(return code, bytes the host copied)`.
    pub fn collect(&self) -> (c_int, Vec<u8>) {
        let (tx, rx) = channel();
        self.tx.send(Cmd::Collect(tx, None)).unwrap();
        rx.recv().expect("instance thread died in collect")
    }

    /// One collect whose bytes go through `store` before the cleanup callback.
    pub fn collect_stored(&self, store: impl FnOnce(&[u8]) + Send + 'static) -> (c_int, Vec<u8>) {
        let (tx, rx) = channel();
        self.tx
            .send(Cmd::Collect(tx, Some(Box::new(store))))
            .unwrap();
        rx.recv().expect("instance thread died in collect")
    }

    pub fn pause(&self) {
        self.tx.send(Cmd::Pause).unwrap();
    }

    pub fn resume(&self) {
        self.tx.send(Cmd::Resume).unwrap();
    }

    /// Stops the instance (`FLBPluginInputPreExit` + `FLBPluginExit`); the handle stays
    /// usable for `run`.
    pub fn exit(&mut self) -> c_int {
        self.exit_inner()
    }

    fn exit_inner(&mut self) -> c_int {
        if self.exited {
            return 0;
        }
        self.exited = true;
        let (tx, rx) = channel();
        self.tx.send(Cmd::Exit(tx)).unwrap();
        rx.recv().expect("instance thread died in exit")
    }

    /// Runs `f` on the instance thread with the raw exports and `remote_context`, and
    /// waits for it. Works after `exit` too (the thread lives until the handle is dropped).
    pub fn run<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Raw, *mut c_void) -> T + Send + 'static,
    ) -> T {
        let (tx, rx) = channel();
        self.tx
            .send(Cmd::Run(Box::new(move |raw, ctx| {
                let _ = tx.send(f(raw, ctx));
            })))
            .unwrap();
        rx.recv().expect("instance thread died")
    }

    /// Collects every `tick` until `done(records so far)` or the deadline; returns all
    /// records. The real host ticks once a second; a shorter tick only makes tests faster.
    pub fn collect_until(
        &self,
        deadline: Duration,
        done: impl Fn(&[Record]) -> bool,
    ) -> Vec<Record> {
        let end = Instant::now() + deadline;
        let mut records = Vec::new();
        while Instant::now() < end {
            let (rc, data) = self.collect();
            assert_eq!(rc, 1, "collect returned {rc}");
            records.extend(decode(&data));
            if done(&records) {
                break;
            }
            if data.is_empty() {
                std::thread::sleep(Duration::from_millis(20));
            }
        }
        records
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        if !std::thread::panicking() {
            self.exit_inner();
        }
        // Closing the channel ends the instance thread.
        let (dead, _) = channel();
        self.tx = dead;
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// One decoded log event.
#[derive(Debug, Clone, PartialEq)]
pub struct Record {
    pub secs: u32,
    pub nanos: u32,
    pub body: crate::json::J,
}

/// Decodes a collect buffer, checking every event is `[[EventTime, {}], {body}]`.
pub fn decode(mut data: &[u8]) -> Vec<Record> {
    let mut out = Vec::new();
    while !data.is_empty() {
        let v = rmpv::decode::read_value(&mut data)
            .expect("buffer is a sequence of complete msgpack values");
        let rmpv::Value::Array(outer) = v else {
            panic!("event is not an array: {v:?}")
        };
        assert_eq!(outer.len(), 2, "event is [header, body]");
        let rmpv::Value::Array(header) = &outer[0] else {
            panic!("header is not an array")
        };
        assert_eq!(header.len(), 2);
        let rmpv::Value::Ext(0, t) = &header[0] else {
            panic!("time is not EventTime: {:?}", header[0])
        };
        assert_eq!(t.len(), 8);
        assert_eq!(
            header[1],
            rmpv::Value::Map(vec![]),
            "metadata is an empty map"
        );
        assert!(matches!(outer[1], rmpv::Value::Map(_)), "body is a map");
        let secs = u32::from_be_bytes(t[0..4].try_into().unwrap());
        let nanos = u32::from_be_bytes(t[4..8].try_into().unwrap());
        assert!(nanos < 1_000_000_000);
        out.push(Record {
            secs,
            nanos,
            body: crate::json::J::from_msgpack(&outer[1]),
        });
    }
    out
}

/// What a host with filesystem storage does before cleanup: writes one `key eventID` line
/// per record (the key from the `src` metadata field) into a new file in `dir`, made
/// durable and visible atomically (temporary file, fsync, rename), so a kill at any point
/// leaves either the whole batch or none of it.
pub fn store_event_lines(bytes: &[u8], dir: &std::path::Path) {
    use std::io::Write;
    static N: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut lines = String::new();
    for r in decode(bytes) {
        let key = r
            .body
            .get("src")
            .and_then(|s| s.str("key"))
            .expect("metadata_key src");
        lines.push_str(&format!(
            "{key} {}\n",
            r.body.str("eventID").expect("eventID")
        ));
    }
    std::fs::create_dir_all(dir).unwrap();
    let name = format!(
        "{}-{}-{}",
        std::process::id(),
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_nanos(),
        N.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
    );
    let tmp = dir.join(format!(".{name}.tmp"));
    let mut f = std::fs::File::create(&tmp).unwrap();
    f.write_all(lines.as_bytes()).unwrap();
    f.sync_all().unwrap();
    std::fs::rename(&tmp, dir.join(format!("{name}.txt"))).unwrap();
}

/// Every line stored by [`store_event_lines`] in `dir`.
pub fn stored_lines(dir: &std::path::Path) -> Vec<String> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        let p = e.unwrap().path();
        if p.extension().is_some_and(|x| x == "txt") {
            out.extend(
                std::fs::read_to_string(&p)
                    .unwrap()
                    .lines()
                    .map(String::from),
            );
        }
    }
    out
}
