//! Fluent Bit input plugin `cloudtrail`, loaded through the external ("Go proxy") plugin
//! ABI: see `../shared/docs/fluent-bit-proxy-abi.md` and the README.
//!
//! Each export is a few lines inside one panic boundary; pointer handling lives in `ffi`,
//! struct layouts in `abi`, behaviour in `instance`. Minimum host: Fluent Bit 4.1.0 (the
//! context-passing callbacks); the plain callbacks are exported too and find the instance
//! through the thread it runs on, so older hosts do not call a missing symbol.

mod abi;
mod big_alloc;
mod ffi;
mod host_version;
mod instance;
mod naming;
mod trim;

use std::ffi::{c_int, c_void};

use abi::{FLB_ERROR, FLB_OK};
use ffi::ffi_boundary;
use instance::Instance;

/// Large blocks go straight to the kernel and back (see `big_alloc`): the plugin's memory
/// follows its queue, not glibc's arenas.
#[global_allocator]
static ALLOC: big_alloc::BigAlloc = big_alloc::BigAlloc;

/// Registration: type input, named after this copy's file name (`cloudtrail` for
/// `libcloudtrail_s3_plugin.so`; see `naming`).
///
/// # Safety
/// Called by the host with its zeroed `struct flb_plugin_proxy_def`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn FLBPluginRegister(def: *mut c_void) -> c_int {
    // SAFETY: forwarded host pointer, checked inside.
    ffi_boundary!(FLB_ERROR, {
        let host = host_version::running();
        match unsafe { ffi::register(def, host) } {
            Some(_) => 0,
            None => FLB_ERROR,
        }
    })
}

/// Nothing to free: name, description and every other registration string are static.
#[unsafe(no_mangle)]
pub extern "C" fn FLBPluginUnregister(_def: *mut c_void) {}

/// One `[INPUT]` instance starts, on its own thread. Returns 1, or -1 after logging why.
///
/// # Safety
/// Called by the host with its `struct flbgo_input_plugin`.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn FLBPluginInit(plugin: *mut c_void) -> c_int {
    ffi_boundary!(FLB_ERROR, {
        // SAFETY: forwarded host pointer, checked inside.
        let Some((host, slot)) = (unsafe { ffi::Host::from_init(plugin) }) else {
            eprintln!(
                "[input:{}] FLBPluginInit: the host passed no API table or instance",
                ffi::input_name().to_string_lossy()
            );
            return FLB_ERROR;
        };
        match Instance::init(Box::new(host)) {
            Ok(instance) => {
                // SAFETY: `slot` came from `from_init` for this call.
                unsafe { ffi::install(instance, slot) };
                FLB_OK
            }
            Err(_) => FLB_ERROR,
        }
    })
}

/// Hands the host up to `batch_bytes` of records; never waits.
///
/// # Safety
/// `ctx` is the instance pointer Init stored; `buf`/`len` are the host's out-parameters.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn FLBPluginInputCallbackCtx(
    ctx: *mut c_void,
    buf: *mut *mut c_void,
    len: *mut usize,
) -> c_int {
    ffi_boundary!(FLB_ERROR, {
        // SAFETY: host out-parameters, checked inside; cleared before anything can fail.
        if !unsafe { ffi::set_output(buf, len, None) } {
            return FLB_ERROR;
        }
        // SAFETY: `ctx` is the host's copy of the pointer stored in Init.
        let Some(instance) = (unsafe { ffi::instance(ctx) }) else {
            return FLB_ERROR;
        };
        let data = instance.collect();
        // SAFETY: as above; the buffer stays alive in the instance until cleanup.
        unsafe { ffi::set_output(buf, len, data) };
        FLB_OK
    })
}

/// The host has copied `buf`: the batch is delivered.
///
/// # Safety
/// `ctx` is the instance pointer Init stored.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn FLBPluginInputCleanupCallbackCtx(
    ctx: *mut c_void,
    buf: *mut c_void,
) -> c_int {
    ffi_boundary!(FLB_ERROR, {
        // SAFETY: `ctx` is the host's copy of the pointer stored in Init.
        match unsafe { ffi::instance(ctx) } {
            Some(instance) => {
                instance.cleanup(buf);
                FLB_OK
            }
            None => FLB_ERROR,
        }
    })
}

/// Collect for hosts before 4.1.0, which pass no context: the thread names the instance.
///
/// # Safety
/// `buf`/`len` are the host's out-parameters.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn FLBPluginInputCallback(buf: *mut *mut c_void, len: *mut usize) -> c_int {
    let ctx = ffi::current().map_or(std::ptr::null_mut(), |i| (i as *mut Instance).cast());
    // SAFETY: same contract as the Ctx variant; `ctx` is this thread's instance or NULL.
    unsafe { FLBPluginInputCallbackCtx(ctx, buf, len) }
}

/// Cleanup for hosts before 4.1.0.
///
/// # Safety
/// `buf` is what collect returned.
#[unsafe(no_mangle)]
pub unsafe extern "C" fn FLBPluginInputCleanupCallback(buf: *mut c_void) -> c_int {
    let ctx = ffi::current().map_or(std::ptr::null_mut(), |i| (i as *mut Instance).cast());
    // SAFETY: as above.
    unsafe { FLBPluginInputCleanupCallbackCtx(ctx, buf) }
}

/// Backpressure: stop downloading until resumed. Only reliable with one instance per
/// loaded copy of the plugin (ABI doc section 6).
#[unsafe(no_mangle)]
pub extern "C" fn FLBPluginInputPause() {
    ffi_boundary!((), {
        if let Some(instance) = ffi::current() {
            instance.pause();
        }
    })
}

#[unsafe(no_mangle)]
pub extern "C" fn FLBPluginInputResume() {
    ffi_boundary!((), {
        if let Some(instance) = ffi::current() {
            instance.resume();
        }
    })
}

/// Nothing to do before Exit: the engine stops in Exit, where its threads are joined.
#[unsafe(no_mangle)]
pub extern "C" fn FLBPluginInputPreExit(_shutdown_by_hot_reload: c_int) {}

/// The instance of this thread stops: engine threads joined, state saved, memory freed.
#[unsafe(no_mangle)]
pub extern "C" fn FLBPluginExit() -> c_int {
    ffi_boundary!(FLB_ERROR, {
        if let Some(mut instance) = ffi::take_current() {
            instance.exit();
        }
        FLB_OK
    })
}
