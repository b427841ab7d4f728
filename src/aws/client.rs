//! Building the S3 client from the configuration.
//!
//! Credentials come from the SDK's default chain (environment, profile, SSO, container and
//! instance roles) unless static keys are configured; `role_arn` wraps whichever was found
//! in an STS assume-role provider. Timeouts are set so a stalled connection becomes a
//! retryable error instead of a hung worker.

use std::time::Duration;

use aws_config::BehaviorVersion;
use aws_config::retry::RetryConfig;
use aws_config::sts::AssumeRoleProvider;
use aws_config::timeout::TimeoutConfig;
use aws_sdk_s3::Client;
use aws_sdk_s3::config::{Credentials, Region, SharedCredentialsProvider};

use crate::config::S3Source;

/// Builds the shared SDK configuration (credentials, region, timeouts, retries) and the S3
/// client; nothing is sent until the first request. SQS clients are built from the same
/// configuration, so they use the same (possibly assumed) credentials.
pub async fn clients(cfg: &S3Source) -> (Client, aws_config::SdkConfig) {
    let mut loader = aws_config::defaults(BehaviorVersion::latest())
        .retry_config(RetryConfig::standard().with_max_attempts(4))
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(10).min(cfg.request_timeout))
                .read_timeout(cfg.request_timeout)
                .operation_attempt_timeout(cfg.request_timeout * 5)
                .build(),
        );
    if let Some(region) = &cfg.region {
        loader = loader.region(Region::new(region.clone()));
    }
    if let Some(profile) = &cfg.profile {
        loader = loader.profile_name(profile);
    }
    if let Some(keys) = &cfg.static_credentials {
        loader = loader.credentials_provider(Credentials::new(
            keys.access_key_id.clone(),
            keys.secret_access_key.expose().to_string(),
            keys.session_token.as_ref().map(|t| t.expose().to_string()),
            None,
            "cloudtrail-s3-config",
        ));
    }
    let mut sdk = loader.load().await;
    if let Some(role) = &cfg.assume_role {
        let mut sts_conf = sdk.to_builder();
        if let Some(sts) = &role.sts_endpoint {
            sts_conf = sts_conf.endpoint_url(sts);
        }
        let mut provider = AssumeRoleProvider::builder(role.role_arn.clone())
            .session_name("cloudtrail-s3")
            .configure(&sts_conf.build());
        if let Some(ext) = &role.external_id {
            provider = provider.external_id(ext.expose());
        }
        sdk = sdk
            .into_builder()
            .credentials_provider(SharedCredentialsProvider::new(provider.build().await))
            .build();
    }
    let mut builder =
        aws_sdk_s3::config::Builder::from(&sdk).force_path_style(cfg.force_path_style);
    if let Some(endpoint) = &cfg.endpoint {
        builder = builder.endpoint_url(endpoint);
    }
    (Client::from_conf(builder.build()), sdk)
}

/// A DynamoDB client for the shared ledger: the S3 settings' region and credentials, at
/// `endpoint` when one is given. Its own short timeouts: a ledger request is small, and one
/// that hangs holds up commits and lease renewals (other shippers would take the objects
/// over after the lease time).
pub fn dynamodb(sdk: &aws_config::SdkConfig, endpoint: Option<&str>) -> aws_sdk_dynamodb::Client {
    let mut builder = aws_sdk_dynamodb::config::Builder::from(sdk)
        .timeout_config(
            TimeoutConfig::builder()
                .connect_timeout(Duration::from_secs(3))
                .read_timeout(Duration::from_secs(5))
                .operation_attempt_timeout(Duration::from_secs(5))
                .operation_timeout(Duration::from_secs(10))
                .build(),
        )
        .retry_config(RetryConfig::standard().with_max_attempts(2));
    if let Some(e) = endpoint {
        builder = builder.endpoint_url(e);
    }
    aws_sdk_dynamodb::Client::from_conf(builder.build())
}
