//! Field deserializers that take a typed value (TOML) or its string form (Fluent Bit).
//! Front ends with settings of their own (the command's `[http]`) use them too.

use super::*;

#[derive(Deserialize)]
#[serde(untagged)]
enum NumOrStr {
    Num(u64),
    Str(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum ListOrStr {
    List(Vec<String>),
    Str(String),
}

#[derive(Deserialize)]
#[serde(untagged)]
enum BoolOrStr {
    Bool(bool),
    Str(String),
}

fn with<'de, D, T>(d: D, what: &str, parse: fn(&str) -> Option<u64>) -> Result<Option<T>, D::Error>
where
    D: Deserializer<'de>,
    T: TryFrom<u64>,
{
    let v = match Option::<NumOrStr>::deserialize(d)? {
        None => return Ok(None),
        Some(NumOrStr::Num(n)) => n,
        Some(NumOrStr::Str(s)) => parse(s.trim())
            .ok_or_else(|| serde::de::Error::custom(format!("'{s}' is not {what}")))?,
    };
    T::try_from(v)
        .map(Some)
        .map_err(|_| serde::de::Error::custom(format!("{v} is out of range")))
}

pub fn opt_bytes<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    with(
        d,
        "a size (a number of bytes, or with K, M or G)",
        parse_bytes,
    )
}

pub fn opt_secs<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    with(
        d,
        "a duration (seconds, or with s, m, h or d)",
        parse_duration_secs,
    )
}

pub fn opt_count<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u64>, D::Error> {
    with(d, "a whole number", |s| s.parse().ok())
}

/// A list of names: a TOML or YAML list, or one string separated by commas (Fluent Bit).
pub fn opt_list<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<String>>, D::Error> {
    Ok(match Option::<ListOrStr>::deserialize(d)? {
        None => None,
        Some(ListOrStr::List(items)) => Some(items.iter().map(|s| s.trim().to_string()).collect()),
        Some(ListOrStr::Str(s)) => Some(
            s.split(',')
                .map(|p| p.trim().to_string())
                .filter(|p| !p.is_empty())
                .collect(),
        ),
    })
}

pub fn opt_bool<'de, D: Deserializer<'de>>(d: D) -> Result<Option<bool>, D::Error> {
    match Option::<BoolOrStr>::deserialize(d)? {
        None => Ok(None),
        Some(BoolOrStr::Bool(b)) => Ok(Some(b)),
        Some(BoolOrStr::Str(s)) => match s.trim().to_ascii_lowercase().as_str() {
            "true" | "on" | "yes" | "1" => Ok(Some(true)),
            "false" | "off" | "no" | "0" => Ok(Some(false)),
            _ => Err(serde::de::Error::custom(format!(
                "'{s}' is not a boolean (true/false, on/off, yes/no)"
            ))),
        },
    }
}

pub fn parse_bytes(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, unit) = split_unit(s);
    let mult: u64 = match unit.to_ascii_lowercase().as_str() {
        "" | "b" => 1,
        "k" | "kb" | "kib" => 1 << 10,
        "m" | "mb" | "mib" => 1 << 20,
        "g" | "gb" | "gib" => 1 << 30,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

pub fn parse_duration_secs(s: &str) -> Option<u64> {
    let (num, unit) = split_unit(s.trim());
    let mult: u64 = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86_400,
        _ => return None,
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn split_unit(s: &str) -> (&str, &str) {
    let at = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    (&s[..at], s[at..].trim())
}
