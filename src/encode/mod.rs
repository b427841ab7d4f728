//! Events to the front end's wire format: msgpack records for Fluent Bit, JSON lines for
//! the command. Encoders never touch state.

pub mod big_numbers;
pub mod msgpack;
pub mod ndjson;

use crate::object::ObjectRef;
use crate::read::split::Event;

/// Turns one event into the front end's wire format (msgpack for Fluent Bit, a JSON line
/// for the CLI), appending to `out`. Runs on worker threads, once per event.
pub trait Encoder: Send + Sync + 'static {
    /// On error `out` may hold a partial record; the engine cuts it off and logs the event.
    fn encode(
        &self,
        event: &Event<'_>,
        object: &ObjectRef,
        out: &mut Vec<u8>,
    ) -> Result<(), String>;
}
