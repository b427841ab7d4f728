//! The HTTP client: hyper with rustls, the same stack the AWS SDK already links (no second
//! TLS library in the binary), trusting the system's roots and an optional CA file.
//!
//! [`Client::post`] makes one attempt and says what the answer means; the retry loop in
//! [`super::deliver`](mod@super::deliver) decides what to do about it.

use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_rustls::HttpsConnector;
use hyper_util::client::legacy::Client as Hyper;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use rustls::pki_types::CertificateDer;
use rustls::pki_types::pem::PemObject;

use super::retry::Verdict;
use super::settings::HttpConfig;

/// Why the client could not be built.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("'http.ca_file' {path}: {reason}")]
    CaFile { path: String, reason: String },
    #[error("no CA certificates found (the system's roots, or 'http.ca_file') for an https URL")]
    NoRoots,
    #[error("TLS set-up: {0}")]
    Tls(String),
}

/// Posts request bodies to the configured URL.
#[derive(Clone)]
pub struct Client {
    hyper: Hyper<HttpsConnector<HttpConnector>, Full<Bytes>>,
    config: Arc<HttpConfig>,
}

/// One request: its body (compressed when configured) and the values of the headers that
/// name an account or region.
pub struct Request {
    pub body: Bytes,
    pub account: String,
    pub region: String,
}

impl Client {
    /// Builds the client; needs a Tokio runtime to be entered.
    pub fn new(config: Arc<HttpConfig>) -> Result<Self, ClientError> {
        let mut roots = rustls::RootCertStore::empty();
        let https = config.uri.scheme_str() == Some("https");
        if https {
            // Unreadable system certificates are skipped, as curl does; only none at all
            // (and no CA file) stops start-up.
            let native = rustls_native_certs::load_native_certs();
            roots.add_parsable_certificates(native.certs);
        }
        if let Some(path) = &config.ca_file {
            let fail = |reason: String| ClientError::CaFile {
                path: path.display().to_string(),
                reason,
            };
            let certs = CertificateDer::pem_file_iter(path)
                .map_err(|e| fail(e.to_string()))?
                .collect::<Result<Vec<_>, _>>()
                .map_err(|e| fail(e.to_string()))?;
            if certs.is_empty() {
                return Err(fail("holds no PEM certificate".into()));
            }
            for cert in certs {
                roots.add(cert).map_err(|e| fail(e.to_string()))?;
            }
        }
        if https && roots.is_empty() {
            return Err(ClientError::NoRoots);
        }
        let provider = Arc::new(rustls::crypto::aws_lc_rs::default_provider());
        let tls = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| ClientError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .build();
        let hyper = Hyper::builder(TokioExecutor::new())
            .pool_idle_timeout(std::time::Duration::from_secs(30))
            .build(connector);
        Ok(Self { hyper, config })
    }

    /// One attempt: the answer's meaning. Waits at most `http.timeout` for the answer.
    pub async fn post(&self, request: &Request) -> Verdict {
        let c = &self.config;
        let mut builder = http::Request::post(c.uri.clone())
            .header(http::header::CONTENT_TYPE, "application/x-ndjson")
            .header(
                http::header::USER_AGENT,
                concat!("cloudtrail-s3/", env!("CARGO_PKG_VERSION")),
            );
        if c.gzip {
            builder = builder.header(http::header::CONTENT_ENCODING, "gzip");
        }
        if let Some(auth) = &c.authorization {
            builder = builder.header(http::header::AUTHORIZATION, auth.expose());
        }
        for (name, template) in &c.headers {
            builder = builder.header(name, template.render(&request.account, &request.region));
        }
        let req = match builder.body(Full::new(request.body.clone())) {
            Ok(r) => r,
            // Header values were checked at start; an account or region with a byte a
            // header cannot carry would land here (never in CloudTrail's layout).
            Err(e) => {
                return Verdict::Refused {
                    reason: format!("request not built: {e}"),
                };
            }
        };
        let answer = tokio::time::timeout(c.timeout, async {
            let response = self.hyper.request(req).await?;
            let status = response.status().as_u16();
            let retry_after = response
                .headers()
                .get(http::header::RETRY_AFTER)
                .and_then(|v| v.to_str().ok())
                .map(str::to_string);
            // The body is read to the end (so the connection can be reused), and its
            // first line kept for the log; a body over 64 KB is not read.
            let body = http_body_util::Limited::new(response.into_body(), 64 << 10)
                .collect()
                .await
                .map(|b| b.to_bytes())
                .unwrap_or_default();
            Ok::<_, hyper_util::client::legacy::Error>((status, retry_after, body))
        })
        .await;
        match answer {
            Err(_) => Verdict::NoAnswer {
                reason: format!("no answer within {} s", c.timeout.as_secs()),
            },
            Ok(Err(e)) => Verdict::NoAnswer {
                reason: describe(&e),
            },
            Ok(Ok((status, retry_after, body))) => {
                let text = String::from_utf8_lossy(&body);
                let first = text.lines().next().unwrap_or("").trim();
                let first: String = first.chars().take(200).collect();
                Verdict::of_status(status, retry_after.as_deref(), &first)
            }
        }
    }
}

/// A transport error with its causes (hyper's own text is only "client error (Connect)").
fn describe(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}
