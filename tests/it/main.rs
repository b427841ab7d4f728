//! Integration tests: one binary, so the S3 server starts once and the AWS SDK links once.

mod abuse;
mod cli;
mod conf;
mod data;
mod digest_data;
mod digest_notices;
mod engine;
mod faults;
mod findings_ahead;
mod host;
mod http_output;
mod import_layers;
mod json;
mod kill;
mod ledger;
mod live_ops;
mod ops;
mod plugin;
#[path = "../real/queue.rs"]
mod queue;
#[allow(dead_code)]
#[path = "../real/receiver.rs"]
mod receiver;
mod regressions;
mod server;
mod shared;
mod simulation;
mod simulation_shared;
mod sqs;
mod verify;
