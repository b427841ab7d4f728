//! SQS on the test server: a fresh queue, real S3 -> SQS notifications for a bucket,
//! messages sent by hand, and the queue's message counts. Shared by both test crates
//! (`tests/it` includes this file); each uses a part of it.
#![allow(dead_code)]

use std::sync::atomic::{AtomicU32, Ordering};

use aws_sdk_sqs::types::QueueAttributeName;

use crate::server::{self, block_on};

pub fn client() -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .endpoint_url(server::endpoint())
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            server::ACCESS_KEY,
            server::SECRET_KEY,
            None,
            None,
            "test",
        ))
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

/// A new queue; returns its URL (on the test server: `http://127.0.0.1:PORT/ACCOUNT/NAME`).
pub fn create(tag: &str) -> String {
    static N: AtomicU32 = AtomicU32::new(0);
    let name = format!(
        "{tag}-{}-{}",
        std::process::id(),
        N.fetch_add(1, Ordering::Relaxed)
    );
    block_on(client().create_queue().queue_name(name).send())
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string()
}

/// The body S3 sends for an object created: `key` in `bucket`, `size` bytes.
pub fn s3_notice(bucket: &str, key: &str, size: usize) -> String {
    format!(
        r#"{{"Records":[{{"eventSource":"aws:s3","eventName":"ObjectCreated:Put","s3":{{"bucket":{{"name":"{bucket}"}},"object":{{"key":"{key}","size":{size}}}}}}}]}}"#
    )
}

/// Sends a message body to the queue.
pub fn send(queue_url: &str, body: &str) {
    block_on(
        client()
            .send_message()
            .queue_url(queue_url)
            .message_body(body)
            .send(),
    )
    .unwrap();
}

/// Messages in the queue: `(visible, held by a consumer)`.
pub fn counts(queue_url: &str) -> (usize, usize) {
    let out = block_on(
        client()
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessages)
            .attribute_names(QueueAttributeName::ApproximateNumberOfMessagesNotVisible)
            .send(),
    )
    .unwrap();
    let attrs = out.attributes().unwrap();
    let get = |n: &QueueAttributeName| attrs.get(n).map_or(0, |v| v.parse::<usize>().unwrap());
    (
        get(&QueueAttributeName::ApproximateNumberOfMessages),
        get(&QueueAttributeName::ApproximateNumberOfMessagesNotVisible),
    )
}

/// Messages in the queue, visible or held by a consumer.
pub fn messages_in(queue_url: &str) -> usize {
    let (visible, held) = counts(queue_url);
    visible + held
}

/// S3 sends ObjectCreated notifications of `bucket` to the queue.
pub fn notify_bucket(bucket: &str, queue_url: &str) {
    use aws_sdk_s3::types::{Event, NotificationConfiguration, QueueConfiguration};
    let arn = block_on(
        client()
            .get_queue_attributes()
            .queue_url(queue_url)
            .attribute_names(QueueAttributeName::QueueArn)
            .send(),
    )
    .unwrap()
    .attributes()
    .unwrap()[&QueueAttributeName::QueueArn]
        .clone();
    let conf = NotificationConfiguration::builder()
        .queue_configurations(
            QueueConfiguration::builder()
                .queue_arn(arn)
                .events(Event::S3ObjectCreated)
                .build()
                .unwrap(),
        )
        .build();
    block_on(
        server::client()
            .put_bucket_notification_configuration()
            .bucket(bucket)
            .notification_configuration(conf)
            .send(),
    )
    .unwrap();
}
