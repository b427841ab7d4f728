//! Integration tests: one binary, so the S3 server starts once and the AWS SDK links once.

mod data;
mod host;
mod json;
mod plugin;
mod server;
