//! The command's outputs, the front-end half of the `cloudtrail-s3` command (the plugin's
//! counterpart is Fluent Bit's collect in `plugin/`). Each drains the engine's queue and
//! commits what its reader has:
//!
//! * [`stdout`]: JSON lines on stdout, for a pipe or Vector's `exec` source. A batch counts
//!   as delivered once written and flushed: a reader that dies loses what it had read.
//! * [`http`]: JSON lines posted to a receiver; a batch counts once the receiver answered
//!   2xx (Vector's `http_server` with acknowledgements answers once its sink or disk buffer
//!   has the events).

pub mod http;
pub mod stdout;
