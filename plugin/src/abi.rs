//! `#[repr(C)]` copies of the Fluent Bit structs the plugin touches, checked at compile time
//! against the offsets in `fluent-bit-proxy-abi.md` (Linux x86-64, LP64).
//!
//! Only the ABI-stable prefixes are declared, plus the 5.1.1 registration struct and its
//! `config_map` entries, which are written only on a host known to have them.

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

/// `struct flb_plugin_proxy_def` as Fluent Bit 5.1.1 allocates it (48 bytes): the part
/// every host has, then `event_type` (5.0.0) and `config_map` (5.1.1). Only written on a
/// host known to be 5.1.1 or later (see `host_version`).
#[repr(C)]
pub struct ProxyDefWithConfigMap {
    pub base: ProxyDef,
    pub event_type: c_int,
    pub config_map: *const ConfigMapEntry,
}

/// `FLB_CONFIG_MAP_*` value types.
pub const CONFIG_MAP_STR: c_int = 0;
pub const CONFIG_MAP_INT: c_int = 2;
pub const CONFIG_MAP_BOOL: c_int = 3;
pub const CONFIG_MAP_SIZE: c_int = 5;
pub const CONFIG_MAP_TIME: c_int = 6;

/// `struct flb_config_map` (5.1.1, 104 bytes). The plugin fills the first 48 bytes; the
/// rest (value union, raw template, list heads) is the host's and must be zero. The host
/// copies `name` and `def_value` and keeps the `desc` pointer; an array ends with an entry
/// whose `name` is NULL.
#[repr(C)]
pub struct ConfigMapEntry {
    pub type_: c_int,
    pub name: *const c_char,
    pub def_value: *const c_char,
    pub flags: c_int,
    pub set_property: c_int,
    pub offset: usize,
    pub desc: *const c_char,
    pub host_private: [u8; 56],
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
    assert!(offset_of!(ProxyDefWithConfigMap, event_type) == 32);
    assert!(offset_of!(ProxyDefWithConfigMap, config_map) == 40);
    assert!(size_of::<ProxyDefWithConfigMap>() == 48);
    assert!(offset_of!(ConfigMapEntry, type_) == 0);
    assert!(offset_of!(ConfigMapEntry, name) == 8);
    assert!(offset_of!(ConfigMapEntry, def_value) == 16);
    assert!(offset_of!(ConfigMapEntry, flags) == 24);
    assert!(offset_of!(ConfigMapEntry, set_property) == 28);
    assert!(offset_of!(ConfigMapEntry, offset) == 32);
    assert!(offset_of!(ConfigMapEntry, desc) == 40);
    assert!(size_of::<ConfigMapEntry>() == 104);
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
