//! Everything that touches raw pointers: the panic boundary, the host's function table, the
//! per-instance pointer and the out-parameters of collect. The exported functions in
//! `lib.rs` only combine these helpers.
//!
//! Ownership, fixed here:
//! * `Instance`: boxed in `FLBPluginInit`, its pointer stored in `remote_context` and in a
//!   thread-local of the instance thread; freed in `FLBPluginExit` (never by the host).
//! * The collect buffer: owned by the `Instance` (a `Vec<u8>` of the batch in flight); the
//!   host copies it before calling the cleanup callback, which releases it.
//! * Strings from `input_get_property`: host-owned, copied at once.

use std::cell::Cell;
use std::ffi::{CStr, CString, c_int, c_void};
use std::ptr;
use std::sync::OnceLock;

use cloudtrail_s3::log::Level;

use cloudtrail_s3::config::KeyKind;

use crate::abi::{
    CONFIG_MAP_BOOL, CONFIG_MAP_INT, CONFIG_MAP_SIZE, CONFIG_MAP_STR, CONFIG_MAP_TIME,
    ConfigMapEntry, FlbApi, InputPlugin, PROXY_GOLANG, PROXY_INPUT_PLUGIN, ProxyDef,
    ProxyDefWithConfigMap,
};
use crate::host_version;
use crate::instance::{HostServices, Instance};

/// Runs `$body`, turning a panic into `$fallback` so it never unwinds into Fluent Bit.
macro_rules! ffi_boundary {
    ($fallback:expr, $body:block) => {
        match ::std::panic::catch_unwind(::std::panic::AssertUnwindSafe(|| $body)) {
            Ok(value) => value,
            Err(payload) => {
                $crate::ffi::report_panic(payload.as_ref());
                $fallback
            }
        }
    };
}
pub(crate) use ffi_boundary;

/// Prints a caught panic. Only stderr is safe here: the instance may be half-built.
pub fn report_panic(payload: &(dyn std::any::Any + Send)) {
    let msg = payload
        .downcast_ref::<&str>()
        .map(|s| s.to_string())
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .unwrap_or_else(|| "unknown panic".into());
    eprintln!(
        "[input:{}] internal error caught at the plugin boundary: {msg}",
        input_name().to_string_lossy()
    );
}

static DESCRIPTION: &CStr = c"AWS CloudTrail events from S3 (one record per event)";

/// This loaded copy's input name (see `naming`), found once from the file the dynamic
/// linker loaded it from. Static, so the pointer handed to the host in `register` stays
/// valid until the image is unmapped.
pub fn input_name() -> &'static CStr {
    static NAME: OnceLock<CString> = OnceLock::new();
    NAME.get_or_init(|| {
        let name = own_path().map_or_else(
            || crate::naming::DEFAULT_NAME.to_string(),
            |p| crate::naming::input_name(&p),
        );
        CString::new(name).unwrap_or_else(|_| c"cloudtrail".into())
    })
}

/// The path of the shared object this code was loaded from (`dladdr` on one of its own
/// functions).
fn own_path() -> Option<String> {
    // SAFETY: an all-zero Dl_info is a valid value (NULL pointers, zero addresses).
    let mut info: libc::Dl_info = unsafe { std::mem::zeroed() };
    let here = own_path as fn() -> Option<String> as *const c_void;
    // SAFETY: `here` is an address inside this image; dladdr only fills `info`.
    if unsafe { libc::dladdr(here, &mut info) } == 0 || info.dli_fname.is_null() {
        return None;
    }
    // SAFETY: dladdr returned a NUL-terminated path owned by the dynamic linker, copied here.
    Some(
        unsafe { CStr::from_ptr(info.dli_fname) }
            .to_string_lossy()
            .into_owned(),
    )
}

/// The settings as a `config_map` array, built once and never freed: the host keeps the
/// pointer (and the `desc` pointers) for the life of the process.
struct ConfigMap {
    entries: Vec<ConfigMapEntry>,
    _strings: Vec<CString>,
}

// SAFETY: the entries only point into `_strings`, which live as long as the map and are
// never written after it is built.
unsafe impl Send for ConfigMap {}
// SAFETY: as above; the map is read-only once built.
unsafe impl Sync for ConfigMap {}

fn config_map() -> &'static ConfigMap {
    static MAP: OnceLock<ConfigMap> = OnceLock::new();
    MAP.get_or_init(|| {
        let mut strings = Vec::new();
        let mut keep = |s: &str| {
            let c = CString::new(s).unwrap_or_default();
            let p = c.as_ptr();
            strings.push(c);
            p
        };
        let mut entries: Vec<ConfigMapEntry> = cloudtrail_s3::config::KEYS
            .iter()
            .map(|k| ConfigMapEntry {
                type_: match k.kind {
                    KeyKind::Str => CONFIG_MAP_STR,
                    KeyKind::Int => CONFIG_MAP_INT,
                    KeyKind::Bool => CONFIG_MAP_BOOL,
                    KeyKind::Size => CONFIG_MAP_SIZE,
                    KeyKind::Time => CONFIG_MAP_TIME,
                },
                name: keep(k.name),
                def_value: k.default.map_or(ptr::null(), &mut keep),
                flags: 0,
                set_property: 0,
                offset: 0,
                desc: keep(k.doc),
                host_private: [0; 56],
            })
            .collect();
        entries.push(ConfigMapEntry {
            type_: 0,
            name: ptr::null(),
            def_value: ptr::null(),
            flags: 0,
            set_property: 0,
            offset: 0,
            desc: ptr::null(),
            host_private: [0; 56],
        });
        ConfigMap {
            entries,
            _strings: strings,
        }
    })
}

/// Fills the registration definition: offsets 0-31, which every host has, and on a host
/// known to be 5.1.1 or later the `config_map`, so Fluent Bit itself refuses unknown keys
/// and lists ours in its help. Returns whether the map was registered.
///
/// # Safety
/// `def` is NULL or points to the host's writable `struct flb_plugin_proxy_def`.
pub unsafe fn register(def: *mut c_void, host: Option<host_version::Version>) -> Option<bool> {
    let def = def.cast::<ProxyDef>();
    if def.is_null() {
        return None;
    }
    // SAFETY: non-NULL, and the host allocates at least 32 bytes for the definition.
    unsafe {
        (*def).type_ = PROXY_INPUT_PLUGIN;
        (*def).proxy = PROXY_GOLANG;
        (*def).flags = 0;
        (*def).name = input_name().as_ptr();
        (*def).description = DESCRIPTION.as_ptr();
    }
    let with_map = host.is_some_and(|v| v >= host_version::CONFIG_MAP_SINCE);
    if with_map {
        let def = def.cast::<ProxyDefWithConfigMap>();
        // SAFETY: a 5.1.1+ host allocates the 48-byte definition (zeroed); `event_type`
        // stays 0 (ignored for inputs), and the map lives for the rest of the process.
        unsafe { (*def).config_map = config_map().entries.as_ptr() };
    }
    Some(with_map)
}

/// The host services one instance may use: property lookup and logging. Only valid on the
/// instance thread, for the instance's lifetime.
pub struct Host {
    api: *const FlbApi,
    i_ins: *mut c_void,
}

impl Host {
    /// Reads `api` and `i_ins` out of the Init argument.
    ///
    /// # Safety
    /// `plugin` is NULL or the host's `struct flbgo_input_plugin` for this Init call.
    pub unsafe fn from_init(plugin: *mut c_void) -> Option<(Host, *mut *mut c_void)> {
        let plugin = plugin.cast::<InputPlugin>();
        if plugin.is_null() {
            return None;
        }
        // SAFETY: non-NULL; offsets 0-31 are ABI since 2.0.0.
        let (api, i_ins, context) = unsafe { ((*plugin).api, (*plugin).i_ins, (*plugin).context) };
        if api.is_null() || i_ins.is_null() || context.is_null() {
            return None;
        }
        // SAFETY: `context` is the host's zeroed per-instance context (4.1.0+).
        let slot = unsafe { ptr::addr_of_mut!((*context).remote_context) };
        Some((Host { api, i_ins }, slot))
    }

    fn api(&self) -> &FlbApi {
        // SAFETY: checked non-NULL in `from_init`; the table outlives every instance.
        unsafe { &*self.api }
    }
}

impl HostServices for Host {
    /// A property's value; `None` when unset or empty (the host does not tell them apart).
    fn property(&self, key: &str) -> Option<String> {
        let get = self.api().input_get_property?;
        let key = CString::new(key).ok()?;
        // SAFETY: the host function takes a NUL-terminated key and this instance.
        let value = unsafe { get(key.as_ptr(), self.i_ins) };
        if value.is_null() {
            return None;
        }
        // SAFETY: the host returns a NUL-terminated string valid while the instance lives;
        // it is copied right away.
        Some(
            unsafe { CStr::from_ptr(value) }
                .to_string_lossy()
                .into_owned(),
        )
    }

    /// The most verbose level the instance's `log_level` lets through.
    fn max_level(&self) -> Level {
        let Some(check) = self.api().input_log_check else {
            return Level::Info;
        };
        [Level::Trace, Level::Debug, Level::Info, Level::Warn]
            .into_iter()
            // SAFETY: plain call with this instance's pointer.
            .find(|l| unsafe { check(self.i_ins, *l as c_int) } != 0)
            .unwrap_or(Level::Error)
    }

    /// Prints one line through the host's logger (`log_print(level, NULL, 0, "%s", msg)`).
    fn log(&self, level: Level, message: &str) {
        let Some(print) = self.api().log_print else {
            eprintln!(
                "[{}] [input:{}] {message}",
                level.as_str(),
                input_name().to_string_lossy()
            );
            return;
        };
        let line =
            format!("[input:{}] {message}", input_name().to_string_lossy()).replace('\0', "\\0");
        let Ok(line) = CString::new(line) else { return };
        // SAFETY: printf-style call with a "%s" format and one NUL-terminated argument.
        unsafe {
            print(
                level as c_int,
                ptr::null(),
                0,
                c"%s".as_ptr(),
                line.as_ptr(),
            )
        };
    }
}

thread_local! {
    /// The instance initialized on this thread: pause, resume and exit take no context,
    /// and Fluent Bit calls every callback of an instance on that instance's thread.
    static CURRENT: Cell<*mut Instance> = const { Cell::new(ptr::null_mut()) };
}

/// Hands the instance to the host and to this thread.
///
/// # Safety
/// `slot` is the `remote_context` field returned by [`Host::from_init`].
pub unsafe fn install(instance: Box<Instance>, slot: *mut *mut c_void) {
    let raw = Box::into_raw(instance);
    // SAFETY: `slot` points into the host's live context for this Init call.
    unsafe { *slot = raw.cast() };
    CURRENT.with(|c| c.set(raw));
}

/// The instance behind a `remote_context` value.
///
/// # Safety
/// `ctx` is NULL or a value `install` stored that `take_current` has not freed yet, and no
/// other reference to the instance is alive (callbacks of one instance never overlap).
pub unsafe fn instance<'a>(ctx: *mut c_void) -> Option<&'a mut Instance> {
    // SAFETY: per the contract above.
    unsafe { ctx.cast::<Instance>().as_mut() }
}

/// The instance of the calling thread, for the callbacks without a context argument.
pub fn current<'a>() -> Option<&'a mut Instance> {
    let raw = CURRENT.with(Cell::get);
    // SAFETY: CURRENT holds a live `install`ed pointer or NULL; callbacks of an instance
    // run one at a time on its thread, so this is the only reference.
    unsafe { raw.as_mut() }
}

/// Removes this thread's instance, for `FLBPluginExit`.
pub fn take_current() -> Option<Box<Instance>> {
    let raw = CURRENT.with(|c| c.replace(ptr::null_mut()));
    // SAFETY: the pointer came from `Box::into_raw` in `install` and is cleared above, so
    // it is freed exactly once.
    (!raw.is_null()).then(|| unsafe { Box::from_raw(raw) })
}

/// Writes collect's out-parameters; false when they are NULL.
///
/// # Safety
/// `buf` and `len` are NULL or writable, as the host passes them.
pub unsafe fn set_output(buf: *mut *mut c_void, len: *mut usize, data: Option<&[u8]>) -> bool {
    if buf.is_null() || len.is_null() {
        return false;
    }
    let (p, n) = match data {
        Some(d) if !d.is_empty() => (d.as_ptr().cast_mut().cast(), d.len()),
        _ => (ptr::null_mut(), 0),
    };
    // SAFETY: both checked non-NULL above.
    unsafe {
        *buf = p;
        *len = n;
    }
    true
}
