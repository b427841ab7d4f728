//! Bad settings stop Fluent Bit's start-up with a message naming the key: a bad value
//! through the plugin's own validation (every version), a misspelled key through the
//! `config_map` that Fluent Bit 5.1.1 reads (ABI doc 2.6); 4.1 has no such check and
//! starts, which the test states rather than hides.

use libtest_mimic::Failed;

use crate::Body;
use crate::fluent_bit::{Conf, FluentBit, RUN_LIMIT, dir_input, section};
use crate::wait::wait_until;
use crate::work::Work;

pub fn trials() -> Vec<(&'static str, Body<FluentBit>)> {
    vec![
        ("settings::bad_value_stops_start_up", bad_value),
        ("settings::misspelled_key", misspelled_key),
    ]
}

/// A folder input with `extra` settings, to the null output.
fn conf_with(work: &Work, extra: &[(&str, &str)]) -> std::path::PathBuf {
    let mut input = dir_input("cloudtrail", "ct");
    input.extend(section(extra));
    Conf::new()
        .input(input)
        .output(section(&[("name", "null"), ("match", "*")]))
        .write_yaml(work.path())
}

fn bad_value(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("settings-bad-value");
    let conf = conf_with(&work, &[("workers", "zero")]);
    let mut host = fb.start(work.path(), "bad-value", &conf, &[]);
    let status = host.wait_exit(RUN_LIMIT);
    let named = host.errors().into_iter().find(|l| l.contains("'workers'"));
    eprintln!("{} with workers=zero: {status}, {named:?}", fb.label());
    assert!(
        !status.success(),
        "start-up went on\n{}",
        host.stderr_tail(30)
    );
    assert!(
        named.is_some(),
        "no error line names 'workers'\n{}",
        host.stderr_tail(30)
    );
    Ok(())
}

fn misspelled_key(fb: &FluentBit) -> Result<(), Failed> {
    let work = Work::new("settings-misspelled");
    let conf = conf_with(&work, &[("buckett", "my-trail")]);
    let mut host = fb.start(work.path(), "misspelled", &conf, &[]);
    if fb.checks_unknown_keys() {
        wait_until("Fluent Bit to exit", RUN_LIMIT, || {
            assert!(
                !host.stderr.any("] started: "),
                "{} started with the misspelled key 'buckett'\n{}",
                fb.label(),
                host.stderr_tail(30)
            );
            host.try_status().is_some()
        });
        let status = host.wait_exit(RUN_LIMIT);
        let named = host
            .stderr
            .snapshot()
            .into_iter()
            .find(|l| l.contains("unknown configuration property 'buckett'"));
        eprintln!("{} with buckett=...: {status}, {named:?}", fb.label());
        assert!(
            !status.success(),
            "start-up went on\n{}",
            host.stderr_tail(30)
        );
        assert!(
            named.is_some(),
            "no line says unknown configuration property 'buckett'\n{}",
            host.stderr_tail(30)
        );
    } else {
        // Before 5.1.1 the host never validates a proxy plugin's keys and the plugin
        // cannot list them: the typo is ignored and the instance starts.
        host.wait_started(1);
        let status = host.stop();
        assert!(status.success(), "{status}\n{}", host.stderr_tail(30));
        host.assert_no_errors();
        eprintln!(
            "{} with buckett=...: starts (no config_map before 5.1.1: the misspelled key is ignored)",
            fb.label()
        );
    }
    Ok(())
}
