//! Settings files (TOML or YAML): read into the same [`Settings`](super::Settings) as Fluent
//! Bit's properties, with errors that name the file, line and column but never echo the text
//! (it may hold a secret).

use std::path::{Path, PathBuf};

use serde::Deserialize;

use super::Settings;

/// Why a settings file was refused: the file, where in it, and what is wrong. Never any of
/// the file's text, since the line at fault may hold a secret (TOML and YAML parsers quote
/// it in their own messages).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", path.display(), at.map_or(String::new(), |(l, c)| format!(", line {l}, column {c}")))]
pub struct FileError {
    pub path: PathBuf,
    /// Line and column, counting from 1, when the parser knows them.
    pub at: Option<(usize, usize)>,
    pub message: String,
}

/// Reads a settings file: YAML by extension (`.yaml`, `.yml`), TOML otherwise. A nested
/// `sqs` table (`[sqs]` / `sqs:`) is the same as the dotted keys (`"sqs.queue_url"`).
pub fn load_file(path: &Path) -> Result<Settings, FileError> {
    load_file_with::<serde::de::IgnoredAny>(path, None).map(|(settings, _)| settings)
}

/// As [`load_file`], with one table that belongs to a front end rather than the engine
/// (the command's `[http]` output): taken out before the engine's keys are read, and
/// parsed into the front end's own type. Errors in it are prefixed with its name.
pub fn load_file_with<T: serde::de::DeserializeOwned>(
    path: &Path,
    table: Option<&str>,
) -> Result<(Settings, Option<T>), FileError> {
    let fail = |at, message| FileError {
        path: path.to_path_buf(),
        at,
        message,
    };
    let text =
        std::fs::read_to_string(path).map_err(|e| fail(None, format!("cannot read: {e}")))?;
    let yaml = path
        .extension()
        .is_some_and(|e| e.eq_ignore_ascii_case("yaml") || e.eq_ignore_ascii_case("yml"));
    let parsed = if yaml {
        settings_from_yaml(&text, table)
    } else {
        settings_from_toml(&text, table)
    };
    parsed.map_err(|(at, message)| fail(at, message))
}

type FileProblem = (Option<(usize, usize)>, String);

/// Key groups a settings file may write as a table (`[sqs]` then `queue_url = …`).
const TABLES: [&str; 4] = ["sqs", "metrics", "ledger", "digest"];

fn settings_from_toml<T: serde::de::DeserializeOwned>(
    text: &str,
    extra: Option<&str>,
) -> Result<(Settings, Option<T>), FileProblem> {
    let problem = |mut e: toml::de::Error| {
        let at = e.span().map(|span| line_column(text, span.start));
        // Without its input, the error's text is the message (and the key path), not the
        // line it came from.
        e.set_input(None);
        let message = e.to_string().trim().replace('\n', " ");
        (at, message)
    };
    let mut t: toml::Table = toml::from_str(text).map_err(problem)?;
    let extra = match extra.and_then(|name| t.remove(name).map(|v| (name, v))) {
        None => None,
        Some((name, value)) => Some(
            T::deserialize(value)
                .map_err(problem)
                .map_err(|(at, m)| (at, format!("in [{name}]: {m}")))?,
        ),
    };
    for table in TABLES {
        if let Some(toml::Value::Table(inner)) = t.remove(table) {
            for (k, val) in inner {
                t.insert(format!("{table}.{k}"), val);
            }
        }
    }
    let settings = Settings::deserialize(toml::Value::Table(t)).map_err(problem)?;
    Ok((settings, extra))
}

fn settings_from_yaml<T: serde::de::DeserializeOwned>(
    text: &str,
    extra: Option<&str>,
) -> Result<(Settings, Option<T>), FileProblem> {
    let problem = |e: serde_yaml_ng::Error| {
        let at = e.location().map(|l| (l.line(), l.column()));
        (at, without_positions(&e.to_string()))
    };
    let mut v: serde_yaml_ng::Value = serde_yaml_ng::from_str(text).map_err(problem)?;
    let taken = match (extra, v.as_mapping_mut()) {
        (Some(name), Some(map)) => map.remove(name).map(|value| (name, value)),
        _ => None,
    };
    let extra = match taken {
        None => None,
        Some((name, value)) => Some(
            serde_yaml_ng::from_value::<T>(value)
                .map_err(problem)
                .map_err(|(at, m)| (at, format!("in {name}: {m}")))?,
        ),
    };
    for table in TABLES {
        if let Some(map) = v.as_mapping_mut()
            && let Some(serde_yaml_ng::Value::Mapping(inner)) = map.remove(table)
        {
            for (k, val) in inner {
                let key = format!("{table}.{}", k.as_str().unwrap_or_default());
                map.insert(serde_yaml_ng::Value::String(key), val);
            }
        }
    }
    let settings = serde_yaml_ng::from_value(v).map_err(problem)?;
    Ok((settings, extra))
}

fn line_column(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (
        before.matches('\n').count() + 1,
        before[line_start..].chars().count() + 1,
    )
}

/// A YAML error's text without its first ` at line N column M` (the error's own position,
/// reported separately); a context's position (`while scanning ... at line 2 column 20`)
/// stays.
fn without_positions(text: &str) -> String {
    let mut from = 0;
    while let Some(at) = text[from..].find(" at ").map(|i| from + i) {
        let skip = position_len(&text[at + 4..]);
        if skip > 0 {
            return format!("{}{}", &text[..at], &text[at + 4 + skip..]);
        }
        from = at + 4;
    }
    text.to_string()
}

/// Length of a leading `line N column M` or `position N`, else 0.
fn position_len(s: &str) -> usize {
    let number = |s: &str| s.bytes().take_while(u8::is_ascii_digit).count();
    if let Some(r) = s.strip_prefix("line ") {
        let n = number(r);
        if n > 0
            && let Some(r2) = r[n..].strip_prefix(" column ")
        {
            let m = number(r2);
            if m > 0 {
                return s.len() - r2.len() + m;
            }
        }
    } else if let Some(r) = s.strip_prefix("position ") {
        let n = number(r);
        if n > 0 {
            return "position ".len() + n;
        }
    }
    0
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(name: &str, text: &str) -> (PathBuf, Result<Settings, FileError>, tempfile::TempDir) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join(name);
        std::fs::write(&path, text).unwrap();
        let got = load_file(&path);
        (path, got, dir)
    }

    #[test]
    fn settings_file_errors_name_file_line_and_column_but_never_echo_the_text() {
        const SECRET: &str = "wJalrXUtnFEMI/K7MDENG";
        let cases = [
            (
                "s.toml",
                format!(
                    "bucket = \"trail\"\naccess_key_id = \"AKIAEXAMPLE\"\nsecret_access_key = \"{SECRET}\n"
                ),
                3,
            ),
            (
                "s.toml",
                format!("bucket = \"trail\"\nsecret_access_key = \"{SECRET}\" oops\n"),
                2,
            ),
            (
                // Reported where the text ends, with where the string began.
                "s.yaml",
                format!("bucket: trail\nsecret_access_key: \"{SECRET}\n"),
                3,
            ),
            (
                "s.yml",
                format!("bucket: trail\nsecret_access_key: {SECRET}: x\n"),
                2,
            ),
        ];
        for (name, text, line) in cases {
            let (path, got, _dir) = load(name, &text);
            let err = got.unwrap_err();
            let shown = err.to_string();
            assert!(!shown.contains("wJalr"), "{shown}");
            assert!(!shown.contains("AKIA"), "{shown}");
            assert!(shown.starts_with(&path.display().to_string()), "{shown}");
            assert_eq!(err.at.map(|a| a.0), Some(line), "{shown}");
            assert!(
                shown.contains(&format!(", line {line}, column ")),
                "{shown}"
            );
            assert!(!err.message.is_empty(), "{shown}");
        }
    }

    #[test]
    fn a_secret_of_the_wrong_type_is_not_echoed() {
        for (name, text) in [
            ("s.toml", "bucket = \"b\"\nsecret_access_key = 987654321\n"),
            ("s.yaml", "bucket: b\nsecret_access_key: 987654321\n"),
            ("s.yaml", "bucket: b\nsession_token: true\n"),
        ] {
            let (_, got, _dir) = load(name, text);
            let shown = got.unwrap_err().to_string();
            assert!(!shown.contains("987654321"), "{shown}");
            assert!(shown.contains("not shown"), "{shown}");
        }
        let (_, got, _dir) = load(
            "s.toml",
            "bucket = \"b\"\n[sqs]\nqueue_url = \"https://sqs.us-east-1.amazonaws.com/1/q\"\n",
        );
        assert!(got.unwrap().sqs_queue_url.is_some());
        // Dotted keys in TOML are tables: the shared ledger's and the digests' too.
        let (_, got, _dir) = load(
            "s.toml",
            "bucket = \"b\"\nledger.dynamodb_table = \"t\"\ndigest.validate = true\n",
        );
        let got = got.unwrap();
        assert_eq!(got.ledger_dynamodb_table.as_deref(), Some("t"));
        assert_eq!(got.digest_validate, Some(true));
        let (_, got, _dir) = load("s.toml", "bucket = \"b\"\nscan_intervall = 5\n");
        assert!(got.unwrap_err().message.contains("scan_intervall"));
    }

    #[test]
    fn yaml_positions_are_taken_out_of_the_message() {
        assert_eq!(
            without_positions(
                "did not find key at line 2 column 5, while parsing at line 1 column 1"
            ),
            "did not find key, while parsing at line 1 column 1"
        );
        assert_eq!(without_positions("stop at once"), "stop at once");
        assert_eq!(line_column("ab\ncdé\nx", 7), (2, 4));
        assert_eq!(line_column("ab", 0), (1, 1));
    }
}
