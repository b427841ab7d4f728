//! cloudtrail-s3: ships AWS CloudTrail events out of S3, one record per event, stamped with
//! the event's own `eventTime`.
//!
//! This crate is the engine and knows nothing about any log shipper: front ends (the Fluent
//! Bit plugin in `plugin/`, the `cloudtrail-s3` command for Vector) provide an
//! [`encode::Encoder`] for their wire format and a [`log::LogSink`], drain the
//! [`engine::handoff`] queue, and report back what the host has accepted.
#![forbid(unsafe_code)]

pub mod aws;
pub mod config;
pub mod digest;
pub mod discover;
pub mod encode;
pub mod engine;
pub mod layout;
pub mod ledger;
pub mod log;
pub mod object;
pub mod observe;
pub mod ops;
pub mod output;
pub mod pathexpr;
pub mod read;
pub mod select;
pub mod timestamp;

pub use config::{Config, Settings};
pub use encode::Encoder;
pub use engine::{Engine, Stats};
