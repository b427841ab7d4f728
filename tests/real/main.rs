//! The plugin inside the real Fluent Bit and the command inside the real Vector.
//!
//! The stand-in host of `tests/it/host.rs` drives the plugin the way the ABI document says
//! Fluent Bit does; these tests run the real programs instead, found through environment
//! variables so the same tests can be pointed at whichever build a user runs:
//!
//! * `FLUENT_BIT`: a `fluent-bit` executable (e.g. `../shared/fluent-bit/bin/fluent-bit-5.1.1`);
//!   trials named `fluent_bit::...`;
//! * `VECTOR`: a `vector` executable (e.g. `../shared/vector/bin/vector-0.56.0`); trials named
//!   `vector::...`.
//!
//! A trial whose host is not given is reported as ignored, and one line says why: these
//! tests never pass without having run. The `harness::` trials check the harness itself
//! and always run. `scripts/test` runs them once per binary it finds.
//! They need the plugin built (`cargo build -p cloudtrail-s3-plugin`) and moto in `.venv`,
//! as the `it` tests do.

// Shared with the `it` tests, which use more of them than these do.
#[allow(dead_code)]
#[path = "../it/data.rs"]
mod data;
#[allow(dead_code)]
#[path = "../it/digest_data.rs"]
mod digest_data;
#[allow(dead_code)]
#[path = "../it/json.rs"]
mod json;
#[allow(dead_code)]
#[path = "../it/server.rs"]
mod server;

mod check;
mod child;
mod fluent_bit;
mod harness;
mod http_get;
mod proxy;
mod queue;
mod receiver;
mod rng;
mod vector;
mod wait;
mod work;

mod fb_backpressure;
mod fb_copies;
mod fb_digests;
mod fb_ledger;
mod fb_metrics;
mod fb_restarts;
mod fb_samples;
mod fb_settings;
mod fb_shared;
mod fb_sources;
mod vector_tests;

use libtest_mimic::{Arguments, Failed, Trial};

/// A trial's body, given its host.
pub type Body<H> = fn(&H) -> Result<(), Failed>;

fn main() {
    let args = Arguments::from_args();
    let fluent_bit = fluent_bit::FluentBit::from_env();
    let vector = vector::Vector::from_env();

    let mut trials: Vec<Trial> = harness::trials()
        .into_iter()
        .map(|(name, body)| Trial::test(name, body))
        .collect();
    let mut skipped = Vec::new();
    add(
        &mut trials,
        &mut skipped,
        &args,
        "fluent_bit",
        fluent_bit,
        "FLUENT_BIT is not set (e.g. FLUENT_BIT=../shared/fluent-bit/bin/fluent-bit-5.1.1)",
        fluent_bit_trials(),
    );
    add(
        &mut trials,
        &mut skipped,
        &args,
        "vector",
        vector,
        "VECTOR is not set (e.g. VECTOR=../shared/vector/bin/vector-0.56.0)",
        vector_trials(),
    );
    if !skipped.is_empty() && !args.list {
        eprintln!("real-host tests: {}", skipped.join("; "));
    }
    libtest_mimic::run(&args, trials).exit();
}

fn fluent_bit_trials() -> Vec<(&'static str, Body<fluent_bit::FluentBit>)> {
    let mut all = Vec::new();
    all.extend(fb_samples::trials());
    all.extend(fb_sources::trials());
    all.extend(fb_restarts::trials());
    all.extend(fb_backpressure::trials());
    all.extend(fb_settings::trials());
    all.extend(fb_copies::trials());
    all.extend(fb_ledger::trials());
    all.extend(fb_metrics::trials());
    all.extend(fb_shared::trials());
    all.extend(fb_digests::trials());
    all
}

fn vector_trials() -> Vec<(&'static str, Body<vector::Vector>)> {
    vector_tests::trials()
}

/// Adds one host's trials: runnable when the host was found, ignored (with a reason
/// printed once) when its variable is unset. A variable that is set but unusable fails
/// every trial of that host with the reason.
fn add<H: Send + Sync + 'static>(
    trials: &mut Vec<Trial>,
    skipped: &mut Vec<String>,
    args: &Arguments,
    prefix: &str,
    host: Option<Result<H, String>>,
    unset: &str,
    bodies: Vec<(&'static str, Body<H>)>,
) {
    let host = host.map(|h| h.map(std::sync::Arc::new));
    let names: Vec<String> = bodies
        .iter()
        .map(|(name, _)| format!("{prefix}::{name}"))
        .collect();
    if host.is_none() && names.iter().any(|n| selected(args, n)) {
        let what = if prefix == "fluent_bit" {
            "Fluent Bit"
        } else {
            "Vector"
        };
        skipped.push(format!("{what} tests not run: {unset}"));
    }
    for (name, (_, body)) in names.into_iter().zip(bodies) {
        let trial = match &host {
            // Ignored, and failing if run anyway (`--ignored`): never a silent pass.
            None => {
                let unset = unset.to_string();
                Trial::test(name, move || Err(unset.into())).with_ignored_flag(true)
            }
            Some(Ok(h)) => {
                let h = h.clone();
                Trial::test(name.clone(), move || {
                    let start = std::time::Instant::now();
                    let result = body(&h);
                    eprintln!("{name}: {:.1} s", start.elapsed().as_secs_f64());
                    result
                })
            }
            Some(Err(e)) => {
                let e = e.clone();
                Trial::test(name, move || Err(e.into()))
            }
        };
        trials.push(trial);
    }
}

/// Whether libtest-mimic's name filter keeps `name` (only used to decide whether the
/// "not run" line concerns this invocation).
fn selected(args: &Arguments, name: &str) -> bool {
    let matches = |f: &str| {
        if args.exact {
            name == f
        } else {
            name.contains(f)
        }
    };
    args.filter.as_deref().is_none_or(matches) && !args.skip.iter().any(|s| matches(s))
}
