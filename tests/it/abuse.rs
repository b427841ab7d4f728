//! The C boundary under calls no well-behaved host makes: NULL and garbage arguments,
//! callbacks without an instance, after exit, storms of pause/resume, two instances at once.
//! None may crash the host or leak past the call.

use std::ffi::c_void;
use std::ptr;
use std::time::Duration;

use crate::data::{self, EVENTS};
use crate::host::Plugin;

fn dir_props() -> Vec<(&'static str, String)> {
    vec![
        ("dir", data::root().to_str().unwrap().to_string()),
        ("start_time", "2023-07-01T00:00:00Z".into()),
    ]
}

fn as_list<'a>(v: &'a [(&'static str, String)]) -> Vec<(&'static str, &'a str)> {
    v.iter().map(|(k, s)| (*k, s.as_str())).collect()
}

#[test]
fn null_and_garbage_arguments_are_refused() {
    let plugin = Plugin::load();
    let props = dir_props();
    let inst = plugin.start(&as_list(&props)).expect("init");
    let results = inst.run(|raw, ctx| unsafe {
        let mut buf: *mut c_void = ptr::null_mut();
        let mut len = 0usize;
        let mut garbage_buf = 0xdead_beef_usize as *mut c_void;
        vec![
            (raw.register)(ptr::null_mut()),
            (raw.init)(ptr::null_mut()),
            (raw.collect)(ptr::null_mut(), &mut buf, &mut len),
            (raw.collect)(ctx, ptr::null_mut(), &mut len),
            (raw.collect)(ctx, &mut buf, ptr::null_mut()),
            (raw.cleanup)(ptr::null_mut(), ptr::null_mut()),
            // A cleanup for a buffer this instance never handed out is ignored.
            (raw.cleanup)(ctx, &mut garbage_buf as *mut _ as *mut c_void),
        ]
    });
    assert_eq!(results, [-1, -1, -1, -1, -1, -1, 1]);
    // A zeroed Init argument (no API table, no instance) is refused too.
    let zeroed = inst.run(|raw, _| unsafe {
        let mut plugin_struct = [0usize; 8];
        (raw.init)(plugin_struct.as_mut_ptr().cast())
    });
    assert_eq!(zeroed, -1);
    // The instance still works after all that.
    let records = inst.collect_until(Duration::from_secs(30), |r| r.len() >= EVENTS);
    assert_eq!(records.len(), EVENTS);
}

#[test]
fn callbacks_without_an_instance_do_nothing() {
    let plugin = Plugin::load();
    let props = dir_props();
    let mut inst = plugin.start(&as_list(&props)).expect("init");
    assert_eq!(inst.exit(), 1);
    // After exit, on the same thread: the context-free callbacks find no instance.
    let after = inst.run(|raw, _| unsafe {
        let mut buf: *mut c_void = ptr::null_mut();
        let mut len = 7usize;
        (raw.pause)();
        (raw.resume)();
        let collect = (raw.collect_no_ctx)(&mut buf, &mut len);
        let exit_again = (raw.exit)();
        (collect, buf.is_null(), len, exit_again)
    });
    assert_eq!(after, (-1, true, 0, 1));
    // On a thread that never had an instance: exit without init.
    let t = std::thread::spawn(move || {
        let raw = inst.run(|raw, _| (raw.exit as usize, raw.pause as usize));
        let exit: unsafe extern "C" fn() -> i32 = unsafe { std::mem::transmute(raw.0) };
        let pause: unsafe extern "C" fn() = unsafe { std::mem::transmute(raw.1) };
        unsafe {
            pause();
            exit()
        }
    });
    assert_eq!(t.join().unwrap(), 1);
}

#[test]
fn pause_resume_storm_loses_nothing() {
    let plugin = Plugin::load();
    let mut props = dir_props();
    props.push(("batch_bytes", "64K".into()));
    let inst = plugin.start(&as_list(&props)).expect("init");
    let mut records = Vec::new();
    for i in 0..2_000 {
        if i % 2 == 0 {
            inst.pause();
        } else {
            inst.resume();
        }
        if i % 10 == 0 {
            records.extend(crate::host::decode(&inst.collect().1));
        }
    }
    inst.resume();
    records.extend(inst.collect_until(Duration::from_secs(60), |r| {
        records.len() + r.len() >= EVENTS
    }));
    let extra = inst.collect_until(Duration::from_millis(500), |_| false);
    assert_eq!(records.len() + extra.len(), EVENTS);
}

#[test]
fn two_instances_in_one_host_keep_apart() {
    let plugin = Plugin::load();
    let a = tempfile::tempdir().unwrap();
    let b = tempfile::tempdir().unwrap();
    let objects = data::objects();
    for (dir, part) in [(&a, &objects[..20]), (&b, &objects[20..])] {
        for o in part {
            let p = dir.path().join(&o.key);
            std::fs::create_dir_all(p.parent().unwrap()).unwrap();
            std::fs::write(p, &o.gz).unwrap();
        }
    }
    let count = |part: &[data::Object]| part.iter().map(|o| o.events().len()).sum::<usize>();
    let (want_a, want_b) = (count(&objects[..20]), count(&objects[20..]));
    let start = |dir: &tempfile::TempDir| {
        let props = vec![
            ("dir", dir.path().to_str().unwrap().to_string()),
            ("start_time", "2000-01-01T00:00:00Z".into()),
            (
                "db",
                dir.path().join("state.json").to_str().unwrap().to_string(),
            ),
        ];
        plugin.start(&as_list(&props)).expect("init")
    };
    let (ia, ib) = (start(&a), start(&b));
    let ra = ia.collect_until(Duration::from_secs(30), |r| r.len() >= want_a);
    let rb = ib.collect_until(Duration::from_secs(30), |r| r.len() >= want_b);
    assert_eq!((ra.len(), rb.len()), (want_a, want_b));
    drop(ia);
    drop(ib);
    assert!(a.path().join("state.json").exists() && b.path().join("state.json").exists());
}
