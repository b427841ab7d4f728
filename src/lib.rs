//! cloudtrail-s3: ships AWS CloudTrail events out of S3, one record per event, stamped with
//! the event's own `eventTime`.
//!
//! This crate is the engine and knows nothing about any log shipper: front ends (the Fluent
//! Bit plugin in `plugin/`, the `cloudtrail-s3` command for Vector) provide an
//! [`engine::Encoder`] for their wire format and a [`log::LogSink`], drain the
//! [`handoff`] queue, and report back what the host has accepted.
#![forbid(unsafe_code)]

pub mod checkpoint;
pub mod client;
pub mod config;
pub mod decode;
pub mod discover;
pub mod engine;
pub mod fetch;
pub mod handoff;
pub mod log;
pub mod msgpack;
pub mod ndjson;
pub mod notify;
pub mod object;
pub mod pathexpr;
pub mod split;
pub mod sqs;
pub mod timestamp;

pub use config::{Config, Settings};
pub use engine::{Encoder, Engine, Stats};
