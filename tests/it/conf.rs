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
