//! Bytes to events: fetching an object (S3 or a file), decompressing it, and splitting its
//! `Records` one event at a time. Reading knows nothing of how an object was found or of
//! what is already shipped.

pub mod decode;
pub mod fetch;
pub mod split;
