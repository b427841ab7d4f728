//! JSON lines on stdout: committed once written and flushed.
//!
//! The pipe is the only acknowledgement there is: what the reader had read when it died is
//! lost to it, while the ledger says shipped. For a reader that can acknowledge (Vector's
//! `http_server` source), use the [`super::http`] output instead.

use std::io::{ErrorKind, Write};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::engine::Engine;

/// How the output ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum End {
    /// Stopped by the flag, or (with `once`) everything was written.
    Stopped,
    /// The reader closed stdout.
    ReaderGone,
}

/// Writes batches of at most `batch_bytes` to `out` until `stop` is set (or, with `once`,
/// the first scan's objects are written), committing each once flushed. `tick` runs every
/// turn with the bytes written so far (the progress line).
pub fn run(
    engine: &Engine,
    out: &mut dyn Write,
    batch_bytes: usize,
    stop: &AtomicBool,
    once: bool,
    tick: &mut dyn FnMut(&Engine, usize),
) -> std::io::Result<End> {
    loop {
        if stop.load(Ordering::Relaxed) {
            return Ok(End::Stopped);
        }
        let mut written = 0;
        if let Some(batch) = engine.take(batch_bytes, Duration::from_millis(200)) {
            if !batch.bytes.is_empty() {
                match out.write_all(&batch.bytes).and_then(|()| out.flush()) {
                    Ok(()) => {}
                    Err(e) if e.kind() == ErrorKind::BrokenPipe => return Ok(End::ReaderGone),
                    Err(e) => return Err(e),
                }
            }
            engine.commit(&batch.marks);
            written = batch.bytes.len();
        } else if once && engine.is_idle() {
            return Ok(End::Stopped);
        }
        tick(engine, written);
    }
}
