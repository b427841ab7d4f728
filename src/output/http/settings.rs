//! The `[http]` table of the command's settings file: where to post, how, and with what
//! headers. Parsed into [`HttpSettings`] as the user wrote it, then checked into an
//! [`HttpConfig`] whose errors name the key (`'http.url': …`) and never hold a secret.
//!
//! The URL is a secret: a Sumo Logic HTTP source URL carries its token in the path. Logs
//! show only [`HttpConfig::display_url`] (scheme, host and port).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use serde::Deserialize;

use crate::config::{ConfigError, Secret, de};

/// Four requests in flight keep a receiver 1 ms to 50 ms away busy while bodies are
/// compressed; a receiver that answers one request at a time sees at most this many.
const DEFAULT_MAX_IN_FLIGHT: u64 = 4;
/// Sumo Logic's guidance: at most 1 MB per request before compression.
const DEFAULT_MAX_BODY_BYTES: u64 = 1 << 20;
/// Vector's acknowledged `http_server` answers once its sink has the events: with a disk
/// buffer in milliseconds, without one after the sink's own retries.
const DEFAULT_TIMEOUT_SECS: u64 = 60;
/// A 2xx commits at once: Vector (acknowledging on delivery) and Sumo Logic answer only
/// once they hold the data.
const DEFAULT_COMMIT_DELAY_MS: u64 = 0;

/// `[http]` as written. When `url` is set, the command posts its lines there instead of
/// writing them to stdout.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HttpSettings {
    /// Where to POST the JSON lines (`http://` or `https://`). Never logged.
    pub url: Option<Secret>,
    /// Extra headers on every request. `{account}` and `{region}` in a value are replaced by
    /// the account and region of the request's events (each request then holds one account
    /// and region). Values are never logged.
    #[serde(default)]
    pub headers: BTreeMap<String, String>,
    /// `gzip` (default) or `none`.
    pub compress: Option<String>,
    /// A PEM file of extra CA certificates, trusted beside the system's roots.
    pub ca_file: Option<PathBuf>,
    /// Sent as `Authorization: Bearer …`. Never logged.
    pub bearer_token: Option<Secret>,
    /// Basic authentication (with `password`). The password is never logged.
    pub username: Option<String>,
    pub password: Option<Secret>,
    /// Requests waiting for an answer at once.
    #[serde(default, deserialize_with = "de::opt_count")]
    pub max_in_flight: Option<u64>,
    /// Largest request body before compression; larger batches are split at line ends.
    #[serde(default, deserialize_with = "de::opt_bytes")]
    pub max_body_bytes: Option<u64>,
    /// Seconds to wait for an answer before the request is tried again.
    #[serde(default, deserialize_with = "de::opt_secs")]
    pub timeout: Option<u64>,
    /// Seconds between a batch's 2xx and its commit (default 0: at once): for a receiver
    /// that answers before what it holds is durable, so a crash of the receiver right
    /// after answering repeats, not loses. (Vector 0.56's disk buffer is such a receiver,
    /// and no delay is known to be enough for it: the Vector sample uses a memory buffer.)
    #[serde(default, deserialize_with = "de::opt_secs")]
    pub commit_delay: Option<u64>,
    /// When set, each line starts with this key holding the event's time (RFC 3339), so a
    /// receiver that takes a message's first timestamp (Sumo Logic) files it by eventTime.
    pub time_key: Option<String>,
}

/// One part of a header value: text, or the account or region of the request's events.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Part {
    Text(String),
    Account,
    Region,
}

/// A header value with its `{account}` and `{region}` places.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Template(Vec<Part>);

impl Template {
    fn parse(value: &str) -> Self {
        let mut parts = Vec::new();
        let mut rest = value;
        while !rest.is_empty() {
            let next = [("{account}", Part::Account), ("{region}", Part::Region)]
                .into_iter()
                .filter_map(|(pat, part)| rest.find(pat).map(|at| (at, pat.len(), part)))
                .min_by_key(|(at, _, _)| *at);
            match next {
                Some((at, len, part)) => {
                    if at > 0 {
                        parts.push(Part::Text(rest[..at].to_string()));
                    }
                    parts.push(part);
                    rest = &rest[at + len..];
                }
                None => {
                    parts.push(Part::Text(rest.to_string()));
                    rest = "";
                }
            }
        }
        Self(parts)
    }

    /// Whether the value depends on the request's account and region.
    pub fn is_grouped(&self) -> bool {
        self.0.iter().any(|p| !matches!(p, Part::Text(_)))
    }

    pub fn render(&self, account: &str, region: &str) -> String {
        self.0
            .iter()
            .map(|p| match p {
                Part::Text(t) => t.as_str(),
                Part::Account => account,
                Part::Region => region,
            })
            .collect()
    }
}

/// A checked `[http]` table. Its `Debug` shows the URL as [`HttpConfig::display_url`].
#[derive(Clone)]
pub struct HttpConfig {
    pub url: Secret,
    pub uri: http::Uri,
    pub headers: Vec<(http::HeaderName, Template)>,
    pub gzip: bool,
    pub ca_file: Option<PathBuf>,
    /// The `Authorization` header's value, when credentials are set.
    pub authorization: Option<Secret>,
    pub max_in_flight: usize,
    pub max_body_bytes: usize,
    pub timeout: Duration,
    pub commit_delay: Duration,
    pub time_key: Option<String>,
}

fn bad(key: &'static str, reason: impl Into<String>) -> ConfigError {
    ConfigError {
        key,
        reason: reason.into(),
    }
}

impl HttpSettings {
    /// Checks the table; `None` when no `url` is set (the command writes to stdout).
    pub fn validate(self) -> Result<Option<HttpConfig>, ConfigError> {
        let Some(url) = self.url else {
            let set = !self.headers.is_empty()
                || self.compress.is_some()
                || self.ca_file.is_some()
                || self.bearer_token.is_some()
                || self.username.is_some()
                || self.password.is_some()
                || self.max_in_flight.is_some()
                || self.max_body_bytes.is_some()
                || self.timeout.is_some()
                || self.commit_delay.is_some()
                || self.time_key.is_some();
            if set {
                return Err(bad(
                    "http.url",
                    "not set, but other http keys are: set it (or --http-url) to post there",
                ));
            }
            return Ok(None);
        };
        // The URL's text is never echoed: it holds the receiver's token.
        let uri: http::Uri = url
            .expose()
            .parse()
            .map_err(|_| bad("http.url", "is not a URL (the value is not shown)"))?;
        match uri.scheme_str() {
            Some("http" | "https") => {}
            _ => {
                return Err(bad(
                    "http.url",
                    "must start with http:// or https:// (the value is not shown)",
                ));
            }
        }
        if uri.host().is_none_or(str::is_empty) {
            return Err(bad("http.url", "has no host (the value is not shown)"));
        }
        let mut headers = Vec::new();
        for (name, value) in self.headers {
            let header = http::HeaderName::from_bytes(name.as_bytes())
                .map_err(|_| bad("http.headers", format!("'{name}' is not a header name")))?;
            if http::HeaderValue::from_str(&value).is_err() {
                return Err(bad(
                    "http.headers",
                    format!("the value of '{name}' is not a header value (the value is not shown)"),
                ));
            }
            let reserved = [
                http::header::CONTENT_LENGTH,
                http::header::CONTENT_ENCODING,
                http::header::TRANSFER_ENCODING,
                http::header::HOST,
            ];
            if reserved.contains(&header) {
                return Err(bad(
                    "http.headers",
                    format!("'{name}' is set by the output itself"),
                ));
            }
            headers.push((header, Template::parse(&value)));
        }
        let gzip = match self
            .compress
            .as_deref()
            .map(str::to_ascii_lowercase)
            .as_deref()
        {
            None | Some("gzip") => true,
            Some("none") => false,
            Some(other) => return Err(bad("http.compress", format!("'{other}': gzip or none"))),
        };
        if let Some(ca) = &self.ca_file
            && !ca.is_file()
        {
            return Err(bad(
                "http.ca_file",
                format!("'{}' is not a file (does it exist?)", ca.display()),
            ));
        }
        let authorization = match (self.bearer_token, self.username, self.password) {
            (None, None, None) => None,
            (Some(token), None, None) => Some(Secret::new(format!("Bearer {}", token.expose()))),
            (None, Some(user), password) => {
                use base64_engine::encode;
                let pair = format!("{user}:{}", password.as_ref().map_or("", |p| p.expose()));
                Some(Secret::new(format!("Basic {}", encode(pair.as_bytes()))))
            }
            (None, None, Some(_)) => {
                return Err(bad("http.password", "needs 'http.username'"));
            }
            (Some(_), _, _) => {
                return Err(bad(
                    "http.bearer_token",
                    "set either a bearer token or a username and password, not both",
                ));
            }
        };
        let max_in_flight = self.max_in_flight.unwrap_or(DEFAULT_MAX_IN_FLIGHT);
        if !(1..=64).contains(&max_in_flight) {
            return Err(bad("http.max_in_flight", "must be between 1 and 64"));
        }
        let max_body_bytes = self.max_body_bytes.unwrap_or(DEFAULT_MAX_BODY_BYTES);
        if !((1 << 10)..=(256 << 20)).contains(&max_body_bytes) {
            return Err(bad("http.max_body_bytes", "must be between 1K and 256M"));
        }
        let timeout = self.timeout.unwrap_or(DEFAULT_TIMEOUT_SECS);
        if !(1..=3600).contains(&timeout) {
            return Err(bad("http.timeout", "must be between 1 second and 1 hour"));
        }
        let commit_delay = match self.commit_delay {
            None => Duration::from_millis(DEFAULT_COMMIT_DELAY_MS),
            Some(secs) if secs <= 60 => Duration::from_secs(secs),
            Some(_) => return Err(bad("http.commit_delay", "must be between 0 and 60 seconds")),
        };
        if self.time_key.as_deref() == Some("") {
            return Err(bad("http.time_key", "must not be empty"));
        }
        Ok(Some(HttpConfig {
            url,
            uri,
            headers,
            gzip,
            ca_file: self.ca_file,
            authorization,
            max_in_flight: max_in_flight as usize,
            max_body_bytes: max_body_bytes as usize,
            timeout: Duration::from_secs(timeout),
            commit_delay,
            time_key: self.time_key,
        }))
    }
}

impl std::fmt::Debug for HttpConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("HttpConfig")
            .field("url", &self.display_url())
            .field(
                "headers",
                &self.headers.iter().map(|(n, _)| n).collect::<Vec<_>>(),
            )
            .field("gzip", &self.gzip)
            .field("ca_file", &self.ca_file)
            .field("authorization", &self.authorization)
            .field("max_in_flight", &self.max_in_flight)
            .field("max_body_bytes", &self.max_body_bytes)
            .field("timeout", &self.timeout)
            .field("commit_delay", &self.commit_delay)
            .field("time_key", &self.time_key)
            .finish()
    }
}

impl HttpConfig {
    /// The URL as logs show it: scheme, host and port, never the path (a token).
    pub fn display_url(&self) -> String {
        format!(
            "{}://{}{}/…",
            self.uri.scheme_str().unwrap_or("http"),
            self.uri.host().unwrap_or_default(),
            self.uri.port().map_or(String::new(), |p| format!(":{p}"))
        )
    }

    /// Whether requests must each hold one account and region (a header names them).
    pub fn grouped(&self) -> bool {
        self.headers.iter().any(|(_, t)| t.is_grouped())
    }
}

/// Base64 for the basic-auth header (RFC 4648, with padding): a dozen lines, not a crate.
mod base64_engine {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

    pub fn encode(bytes: &[u8]) -> String {
        let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
        for chunk in bytes.chunks(3) {
            let b = [
                chunk[0],
                chunk.get(1).copied().unwrap_or(0),
                chunk.get(2).copied().unwrap_or(0),
            ];
            let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
            for i in 0..4 {
                if i <= chunk.len() {
                    out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
                } else {
                    out.push('=');
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(toml_text: &str) -> Result<Option<HttpConfig>, String> {
        let s: HttpSettings = toml::from_str(toml_text).map_err(|e| e.to_string())?;
        s.validate().map_err(|e| e.to_string())
    }

    #[test]
    fn defaults_and_templates() {
        let c = parse(
            "url = \"https://collectors.example.com/receiver/v1/http/SECRETTOKEN\"\n\
             [headers]\n\"X-Sumo-Fields\" = \"account={account},region={region}\"\n\
             \"X-Sumo-Category\" = \"aws/cloudtrail\"\n",
        )
        .unwrap()
        .unwrap();
        assert!(c.gzip);
        assert_eq!(c.max_in_flight, 4);
        assert_eq!(c.max_body_bytes, 1 << 20);
        assert_eq!(c.timeout, Duration::from_secs(60));
        assert!(c.grouped());
        assert_eq!(c.display_url(), "https://collectors.example.com/…");
        let fields = &c
            .headers
            .iter()
            .find(|(n, _)| n == "x-sumo-fields")
            .unwrap()
            .1;
        assert_eq!(
            fields.render("111122223333", "eu-west-1"),
            "account=111122223333,region=eu-west-1"
        );
        assert!(!format!("{c:?}").contains("SECRETTOKEN"));
        assert_eq!(Template::parse("{region}").render("a", "r"), "r");
        assert_eq!(Template::parse("x{account}").render("a", "r"), "xa");
    }

    #[test]
    fn no_url_is_stdout_but_other_keys_without_it_are_refused() {
        assert!(parse("").unwrap().is_none());
        assert!(
            parse("compress = \"none\"")
                .unwrap_err()
                .contains("'http.url'")
        );
    }

    #[test]
    fn errors_name_the_key_and_never_show_the_url_or_a_credential() {
        for (text, key) in [
            ("url = \"ftp://h/SECRETTOKEN\"", "'http.url'"),
            ("url = \"http:// SECRETTOKEN\"", "'http.url'"),
            ("url = \"http://h/\"\ncompress = \"br\"", "'http.compress'"),
            (
                "url = \"http://h/\"\nmax_in_flight = 0",
                "'http.max_in_flight'",
            ),
            (
                "url = \"http://h/\"\nmax_body_bytes = \"10\"",
                "'http.max_body_bytes'",
            ),
            (
                "url = \"http://h/\"\npassword = \"SECRETTOKEN\"",
                "'http.password'",
            ),
            (
                "url = \"http://h/\"\nbearer_token = \"SECRETTOKEN\"\nusername = \"u\"",
                "'http.bearer_token'",
            ),
            (
                "url = \"http://h/\"\n[headers]\n\"Content-Encoding\" = \"br\"",
                "'http.headers'",
            ),
            (
                "url = \"http://h/\"\n[headers]\n\"X-Token\" = \"SECRETTOKEN\\n\"",
                "'http.headers'",
            ),
        ] {
            let e = parse(text).unwrap_err();
            assert!(e.contains(key), "{text}: {e}");
            assert!(!e.contains("SECRETTOKEN"), "{text}: {e}");
        }
        let e = parse("url = 5").unwrap_err();
        assert!(e.contains("not shown"), "{e}");
    }

    #[test]
    fn credentials_make_the_authorization_header() {
        let c = parse("url = \"http://h/\"\nusername = \"Aladdin\"\npassword = \"open sesame\"")
            .unwrap()
            .unwrap();
        assert_eq!(
            c.authorization.unwrap().expose(),
            "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ=="
        );
        let c = parse("url = \"http://h/\"\nbearer_token = \"t0k\"")
            .unwrap()
            .unwrap();
        assert_eq!(c.authorization.unwrap().expose(), "Bearer t0k");
        assert_eq!(base64_engine::encode(b"ab"), "YWI=");
        assert_eq!(base64_engine::encode(b""), "");
    }
}
