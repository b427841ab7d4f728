//! The sample configurations in `conf/` stay valid: they parse, their plugin settings start
//! an instance in the test host, and the YAML and classic files say the same thing.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use crate::host::Plugin;
use crate::server;

fn conf(name: &str) -> String {
    let p = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("conf")
        .join(name);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

/// `${VAR}` replaced from `vars`; every variable used must be known.
fn substitute(text: &str, vars: &BTreeMap<&str, String>) -> String {
    let mut out = String::new();
    let mut rest = text;
    while let Some(at) = rest.find("${") {
        out.push_str(&rest[..at]);
        let end = rest[at..].find('}').expect("closing brace") + at;
        let name = &rest[at + 2..end];
        out.push_str(
            vars.get(name)
                .unwrap_or_else(|| panic!("sample uses undocumented ${{{name}}}")),
        );
        rest = &rest[end + 1..];
    }
    out.push_str(rest);
    out
}

/// The cloudtrail input's properties from the YAML sample.
fn yaml_input() -> (BTreeMap<String, String>, serde_yaml_ng::Value) {
    yaml_input_of("fluent-bit.yaml")
}

fn yaml_input_of(name: &str) -> (BTreeMap<String, String>, serde_yaml_ng::Value) {
    let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&conf(name)).expect("YAML parses");
    let inputs = doc["pipeline"]["inputs"]
        .as_sequence()
        .expect("pipeline.inputs");
    let input = inputs
        .iter()
        .find(|i| i["name"].as_str() == Some("cloudtrail"))
        .expect("a cloudtrail input");
    let map = input
        .as_mapping()
        .unwrap()
        .iter()
        .map(|(k, v)| {
            let v = match v {
                serde_yaml_ng::Value::String(s) => s.clone(),
                serde_yaml_ng::Value::Number(n) => n.to_string(),
                serde_yaml_ng::Value::Bool(b) => b.to_string(),
                other => panic!("unexpected value {other:?}"),
            };
            (k.as_str().unwrap().to_string(), v)
        })
        .collect();
    (map, doc)
}

/// The `[INPUT]` section of the classic sample.
fn classic_input() -> BTreeMap<String, String> {
    let text = conf("fluent-bit.conf");
    let mut section = String::new();
    let mut out = BTreeMap::new();
    for line in text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'))
    {
        if line.starts_with('[') {
            section = line.to_string();
        } else if section == "[INPUT]" {
            let (k, v) = line.split_once(char::is_whitespace).expect("key value");
            out.insert(k.to_string(), v.trim().to_string());
        }
    }
    out
}

#[test]
fn yaml_and_classic_samples_agree() {
    let (yaml, doc) = yaml_input();
    assert_eq!(yaml, classic_input());
    let output = &doc["pipeline"]["outputs"][0];
    assert_eq!(output["name"].as_str(), Some("http"));
    assert_eq!(output["format"].as_str(), Some("json_lines"));
    assert_eq!(output["compress"].as_str(), Some("gzip"));
    assert!(
        output["header"]
            .as_str()
            .unwrap()
            .starts_with("X-Sumo-Category ")
    );
    let plugin_path = doc["plugins"][0].as_str().unwrap();
    assert!(
        plugin_path.starts_with('/'),
        "plugin paths must be absolute"
    );
    assert!(plugin_path.ends_with("/libcloudtrail_s3_plugin.so"));
    assert!(conf("plugins.conf").contains(&format!("Path {plugin_path}")));
}

#[test]
fn yaml_sample_settings_start_the_plugin() {
    let bucket = server::bucket("sample");
    crate::data::upload_all(&bucket, "");
    let state = tempfile::tempdir().unwrap();
    let vars = BTreeMap::from([
        ("CLOUDTRAIL_BUCKET", bucket.clone()),
        ("AWS_REGION", "us-east-1".to_string()),
        ("STATE_DIR", state.path().to_str().unwrap().to_string()),
    ]);
    let (input, _) = yaml_input();
    let mut props: Vec<(String, String)> = input
        .iter()
        .map(|(k, v)| (k.clone(), substitute(v, &vars)))
        .collect();
    // Only what reaching the local test server needs is added; the sample's own values
    // (start_time -24h among them) are used as they are.
    for (k, v) in [
        ("endpoint", server::endpoint().to_string()),
        ("force_path_style", "on".into()),
        ("access_key_id", server::ACCESS_KEY.into()),
        ("secret_access_key", server::SECRET_KEY.into()),
    ] {
        props.push((k.into(), v));
    }
    let list: Vec<(&str, &str)> = props
        .iter()
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    let inst = Plugin::load()
        .start(&list)
        .expect("the sample's settings are valid");
    // The bundled objects are dated 2023, before the sample's start_time: nothing ships.
    let records = inst.collect_until(Duration::from_secs(3), |_| false);
    assert!(records.is_empty());
    drop(inst);
    assert!(
        state.path().join("cloudtrail-s3.db").exists(),
        "the state file is where `db` says"
    );
}

#[test]
fn sqs_sample_settings_are_valid() {
    let vars = BTreeMap::from([
        (
            "CLOUDTRAIL_QUEUE",
            "https://sqs.us-east-1.amazonaws.com/123456789012/trail".to_string(),
        ),
        ("AWS_REGION", "us-east-1".to_string()),
        ("STATE_DIR", "/var/lib/fluent-bit".to_string()),
    ]);
    let (input, doc) = yaml_input_of("fluent-bit-sqs.yaml");
    assert_eq!(
        doc["pipeline"]["outputs"][0]["format"].as_str(),
        Some("json_lines")
    );
    let props: BTreeMap<String, String> = input
        .iter()
        .map(|(k, v)| (k.clone(), substitute(v, &vars)))
        .collect();
    let settings =
        cloudtrail_s3::Settings::from_properties(|k| props.get(k).cloned()).expect("known keys");
    let config = settings.validate().expect("valid settings");
    let cloudtrail_s3::config::Source::S3(s3) = config.source else {
        panic!("an S3 source")
    };
    assert!(
        s3.sqs.is_some() && s3.bucket.is_none(),
        "SQS alone: hybrid is for one shipper, the sample is for many"
    );
    for key in input
        .keys()
        .filter(|k| !["name", "tag", "storage.type"].contains(&k.as_str()))
    {
        assert!(
            cloudtrail_s3::config::KEYS.iter().any(|k| k.name == key),
            "{key} is not a setting"
        );
    }
}

/// `conf/prometheus-alerts.yaml` and `conf/prometheus-scrape.yaml` parse, the scrape has the
/// two jobs the alerts watch, and every `cloudtrail_s3_*` name in an alert expression is one
/// the engine renders: the counters, histogram and per account/region gauges rendered by
/// `observe` (after one object is recorded, so the labelled series exist), and the gauges
/// `/metrics` adds from the engine (`gauge(&mut out, "NAME", ...)` in `Core::answer`).
#[test]
fn prometheus_rules_use_only_metrics_the_engine_renders() {
    use serde_yaml_ng::Value;

    // The default `metrics.per_region`: per account and region series for silent ones only,
    // which is what the silence and lag alerts read (a region lagging past the lag alert's
    // two hours is silent at the default `silence_alarm` of one).
    let observe = cloudtrail_s3::observe::Observe::new(60, Default::default());
    let mut rendered = String::new();
    observe.metrics.render(&mut rendered);
    observe.freshness.record(
        "AWSLogs/123456789012/CloudTrail/eu-west-1/2026/11/24/123456789012_CloudTrail_eu-west-1_20261124T1455Z_abc.json.gz",
        1_795_000_000,
        1_795_000_100,
    );
    let quiet = cloudtrail_s3::log::Logger::new(std::sync::Arc::new(
        cloudtrail_s3::log::StderrSink(cloudtrail_s3::log::Level::Error),
    ));
    observe.freshness.check(1_795_000_200, &quiet);
    observe.freshness.render(1_795_000_200, &mut rendered);
    let mut names: std::collections::BTreeSet<String> = rendered
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
        .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
        .collect();
    assert!(names.contains("cloudtrail_s3_silent") && names.contains("cloudtrail_s3_lag_seconds"));
    // The engine's own gauges, by name, from the function that answers /metrics.
    let engine = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src/engine/answer.rs"),
    )
    .unwrap();
    let answer = &engine[engine.find("fn answer(").expect("Core::answer")..];
    let answer = &answer[..answer.find("\n    }\n").expect("its end")];
    for call in answer.split("gauge(").skip(1) {
        let name = call.split('"').nth(1).expect("a gauge name");
        names.insert(format!("cloudtrail_s3_{name}"));
    }
    assert!(names.contains("cloudtrail_s3_healthy"), "{names:?}");

    let alerts: Value = serde_yaml_ng::from_str(&conf("prometheus-alerts.yaml")).expect("YAML");
    let rules: Vec<&Value> = alerts["groups"]
        .as_sequence()
        .expect("groups")
        .iter()
        .flat_map(|g| g["rules"].as_sequence().expect("rules"))
        .collect();
    let mut used = std::collections::BTreeSet::new();
    let mut exprs = BTreeMap::new();
    for rule in &rules {
        let alert = rule["alert"].as_str().expect("every rule is an alert");
        let expr = rule["expr"].as_str().expect("expr");
        assert!(
            rule["labels"]["severity"].as_str().is_some()
                && rule["annotations"]["summary"].as_str().is_some(),
            "{alert}: severity and summary"
        );
        let mut rest = expr;
        while let Some(at) = rest.find("cloudtrail_s3_") {
            let token: String = rest[at..]
                .chars()
                .take_while(|c| c.is_ascii_lowercase() || *c == '_' || c.is_ascii_digit())
                .collect();
            rest = &rest[at + token.len()..];
            assert!(
                names.contains(&token),
                "{alert} uses {token}, which the engine does not render; it renders {names:?}"
            );
            used.insert(token);
        }
        exprs.insert(alert.to_string(), (expr.to_string(), rule["for"].as_str()));
    }
    let has = |needle: &str, r#for: Option<&str>| {
        exprs
            .values()
            .any(|(e, f)| e.contains(needle) && (r#for.is_none() || *f == r#for))
    };
    assert!(has("cloudtrail_s3_silent == 1", Some("10m")), "{exprs:?}");
    assert!(has("cloudtrail_s3_lag_seconds >", None), "{exprs:?}");
    assert!(has("cloudtrail_s3_healthy == 0", Some("15m")), "{exprs:?}");
    assert!(
        has("increase(cloudtrail_s3_objects_failed_total[1h]) > 0", None),
        "{exprs:?}"
    );

    let scrape: Value = serde_yaml_ng::from_str(&conf("prometheus-scrape.yaml")).expect("YAML");
    assert_eq!(
        scrape["rule_files"][0].as_str(),
        Some("prometheus-alerts.yaml"),
        "the scrape configuration loads the rules beside it"
    );
    let jobs: BTreeMap<&str, &Value> = scrape["scrape_configs"]
        .as_sequence()
        .expect("scrape_configs")
        .iter()
        .map(|j| (j["job_name"].as_str().expect("job_name"), j))
        .collect();
    assert_eq!(
        jobs.keys().copied().collect::<Vec<_>>(),
        ["cloudtrail-s3", "fluent-bit"]
    );
    let target = |job: &str| {
        jobs[job]["static_configs"][0]["targets"][0]
            .as_str()
            .expect("a target")
            .to_string()
    };
    // The engine's target is an address `metrics.listen` accepts.
    let ours = target("cloudtrail-s3");
    assert!(ours.parse::<std::net::SocketAddr>().is_ok(), "{ours}");
    assert_eq!(
        jobs["cloudtrail-s3"]["metrics_path"].as_str(),
        Some("/metrics")
    );
    assert_eq!(
        jobs["fluent-bit"]["metrics_path"].as_str(),
        Some("/api/v2/metrics/prometheus")
    );
    assert!(target("fluent-bit").ends_with(":2020"));
    // The target-down alert watches both jobs by the names the scrape gives them.
    let (down, _) = exprs
        .values()
        .find(|(e, _)| e.starts_with("up{"))
        .expect("a target-down alert");
    for job in jobs.keys() {
        assert!(down.contains(job), "{down} watches {job}");
    }
    assert!(used.len() >= 4, "{used:?}");
}
