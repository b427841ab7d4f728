//! `#[repr(C)]` copies of the Fluent Bit structs the plugin touches, checked at compile time
//! against the offsets in `fluent-bit-proxy-abi.md` (Linux x86-64, LP64).
//!
//! Only the ABI-stable prefixes are declared: the plugin never reads or writes past them,
//! so hosts that grew these structs later (5.0 `event_type`, 5.1.1 `config_map`) and older
//! 4.1+ hosts are both safe.

use std::ffi::{c_char, c_int, c_void};
use std::mem::{offset_of, size_of};

/// `FLB_PROXY_INPUT_PLUGIN`.
pub const PROXY_INPUT_PLUGIN: c_int = 1;
/// `FLB_PROXY_GOLANG`, the only proxy kind.
pub const PROXY_GOLANG: c_int = 11;
/// `FLB_OK` / `FLB_ERROR` as the proxy reads them.
pub const FLB_OK: c_int = 1;
pub const FLB_ERROR: c_int = -1;

/// `struct flb_plugin_proxy_def`, offsets 0-31 only: the part every host since 1.0 has.
#[repr(C)]
pub struct ProxyDef {
    pub type_: c_int,
    pub proxy: c_int,
    pub flags: c_int,
    pub name: *const c_char,
    pub description: *const c_char,
}

/// `struct flbgo_input_plugin`: the argument of `FLBPluginInit`. Fields past `context` are
/// host-private.
#[repr(C)]
pub struct InputPlugin {
    pub name: *mut c_char,
    pub api: *const FlbApi,
    pub i_ins: *mut c_void,
    pub context: *mut InputProxyContext,
}

/// `struct flb_plugin_input_proxy_context` (4.1.0+): `remote_context` is the plugin's slot.
#[repr(C)]
pub struct InputProxyContext {
    pub coll_fd: c_int,
    pub remote_context: *mut c_void,
    pub proxy: *mut c_void,
}

pub type GetPropertyFn =
    unsafe extern "C" fn(key: *const c_char, ins: *mut c_void) -> *const c_char;
pub type LogPrintFn =
    unsafe extern "C" fn(level: c_int, file: *const c_char, line: c_int, fmt: *const c_char, ...);
pub type LogCheckFn = unsafe extern "C" fn(ins: *mut c_void, level: c_int) -> c_int;

/// `struct flb_api`: an append-only table; entries 16 and 24 may be uninitialized and are
/// never called, so they are plain pointers here.
#[repr(C)]
pub struct FlbApi {
    pub output_get_property: Option<GetPropertyFn>,
    pub input_get_property: Option<GetPropertyFn>,
    pub output_get_cmt_instance: *mut c_void,
    pub input_get_cmt_instance: *mut c_void,
    pub log_print: Option<LogPrintFn>,
    pub input_log_check: Option<LogCheckFn>,
    pub output_log_check: Option<LogCheckFn>,
}

const _: () = {
    assert!(size_of::<c_int>() == 4 && size_of::<*const c_void>() == 8);
    assert!(offset_of!(ProxyDef, type_) == 0);
    assert!(offset_of!(ProxyDef, proxy) == 4);
    assert!(offset_of!(ProxyDef, flags) == 8);
    assert!(offset_of!(ProxyDef, name) == 16);
    assert!(offset_of!(ProxyDef, description) == 24);
    assert!(size_of::<ProxyDef>() == 32);
    assert!(offset_of!(InputPlugin, name) == 0);
    assert!(offset_of!(InputPlugin, api) == 8);
    assert!(offset_of!(InputPlugin, i_ins) == 16);
    assert!(offset_of!(InputPlugin, context) == 24);
    assert!(offset_of!(InputProxyContext, coll_fd) == 0);
    assert!(offset_of!(InputProxyContext, remote_context) == 8);
    assert!(offset_of!(InputProxyContext, proxy) == 16);
    assert!(offset_of!(FlbApi, output_get_property) == 0);
    assert!(offset_of!(FlbApi, input_get_property) == 8);
    assert!(offset_of!(FlbApi, log_print) == 32);
    assert!(offset_of!(FlbApi, input_log_check) == 40);
    assert!(offset_of!(FlbApi, output_log_check) == 48);
};
