//! S3 listing calls and the clock, behind traits: the engine uses S3 and the system clock;
//! the simulation (`tests/it/simulation/`) drives discovery with an in-memory bucket and a
//! hand-moved clock through thousands of seeded schedules.

use std::future::Future;
use std::sync::Arc;

use aws_sdk_s3::Client;

use crate::aws::error::{Operation, describe};
use crate::discover::DiscoverError;
use crate::observe::Observe;
use crate::observe::metrics::{Metrics, Op, Outcome};
use crate::timestamp::EventTime;

/// One listed object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Listed {
    pub key: String,
    pub size: u64,
    pub last_modified: EventTime,
}

/// The two listing calls discovery makes.
pub trait Lister: Send + Sync {
    /// The bucket listed.
    fn bucket(&self) -> &Arc<str>;

    /// Sub-"folders" of `prefix` (a delimiter listing), in key order.
    fn list_dirs(
        &self,
        prefix: &str,
    ) -> impl Future<Output = Result<Vec<String>, DiscoverError>> + Send;

    /// Every object under `prefix` whose key sorts after `start_after`, in key order.
    fn list_objects(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> impl Future<Output = Result<Vec<Listed>, DiscoverError>> + Send;
}

/// Where discovery reads the time.
pub trait Clock: Send + Sync {
    fn now(&self) -> EventTime;
}

/// The system clock.
#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> EventTime {
        EventTime::now()
    }
}

/// Listings through the AWS SDK.
pub struct S3Lister {
    pub client: Client,
    pub bucket: Arc<str>,
    /// Counts requests and keys, and notes failures for `/health`.
    pub observe: Arc<Observe>,
}

impl S3Lister {
    fn error<E>(
        &self,
        prefix: &str,
        e: &aws_sdk_s3::error::SdkError<E, aws_sdk_s3::config::http::HttpResponse>,
    ) -> DiscoverError
    where
        E: aws_sdk_s3::error::ProvideErrorMetadata + std::error::Error + 'static,
    {
        let (class, reason) = describe(
            Operation::ListObjects {
                bucket: &self.bucket,
            },
            e,
        );
        let location = format!("s3://{}/{prefix}", self.bucket);
        self.observe
            .metrics
            .request(Op::ListObjects, Outcome::Failed(class));
        self.observe.health.listing(
            EventTime::now().secs(),
            Err(&format!("{location}: {reason}")),
        );
        DiscoverError { location, reason }
    }

    /// Pages through one listing, handing each page to `take`.
    async fn pages(
        &self,
        prefix: &str,
        delimiter: Option<&str>,
        start_after: Option<&str>,
        mut take: impl FnMut(&aws_sdk_s3::operation::list_objects_v2::ListObjectsV2Output),
    ) -> Result<(), DiscoverError> {
        let mut token = None;
        loop {
            let resp = self
                .client
                .list_objects_v2()
                .bucket(self.bucket.as_ref())
                .prefix(prefix)
                .set_delimiter(delimiter.map(String::from))
                .set_start_after(start_after.map(String::from))
                .set_continuation_token(token)
                .send()
                .await
                .map_err(|e| self.error(prefix, &e))?;
            self.observe.metrics.request(Op::ListObjects, Outcome::Ok);
            self.observe.health.listing(EventTime::now().secs(), Ok(()));
            take(&resp);
            token = resp.next_continuation_token().map(String::from);
            if token.is_none() {
                return Ok(());
            }
        }
    }
}

impl Lister for S3Lister {
    fn bucket(&self) -> &Arc<str> {
        &self.bucket
    }

    async fn list_dirs(&self, prefix: &str) -> Result<Vec<String>, DiscoverError> {
        let mut out = Vec::new();
        self.pages(prefix, Some("/"), None, |resp| {
            out.extend(
                resp.common_prefixes()
                    .iter()
                    .filter_map(|p| p.prefix().map(String::from)),
            )
        })
        .await?;
        Ok(out)
    }

    async fn list_objects(
        &self,
        prefix: &str,
        start_after: Option<&str>,
    ) -> Result<Vec<Listed>, DiscoverError> {
        let mut out = Vec::new();
        self.pages(prefix, None, start_after, |resp| {
            Metrics::add(
                &self.observe.metrics.keys_listed,
                resp.contents().len() as u64,
            );
            for o in resp.contents() {
                let Some(key) = o.key() else { continue };
                let last_modified = o
                    .last_modified()
                    .and_then(|t| EventTime::new(t.secs(), t.subsec_nanos()))
                    .unwrap_or_else(EventTime::now);
                out.push(Listed {
                    key: key.to_string(),
                    size: o.size().and_then(|s| u64::try_from(s).ok()).unwrap_or(0),
                    last_modified,
                });
            }
        })
        .await?;
        Ok(out)
    }
}
