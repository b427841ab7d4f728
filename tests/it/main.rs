//! Integration tests: one binary, so the S3 server starts once and the AWS SDK links once.

mod abuse;
mod cli;
mod conf;
mod data;
mod engine;
mod faults;
mod host;
mod json;
mod kill;
mod ledger;
mod ops;
mod plugin;
#[path = "../real/queue.rs"]
mod queue;
mod regressions;
mod server;
mod simulation;
mod sqs;
