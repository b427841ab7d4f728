//! Logging without a global logger.
//!
//! One process can run several plugin instances, each with its own `log_level` and its own
//! host to print through, so the engine takes a [`Logger`] per instance instead of using a
//! process-wide facade. Front ends implement [`LogSink`]: the Fluent Bit plugin queues lines
//! for its instance thread, the CLI writes to stderr.

use std::fmt;
use std::sync::Arc;

/// Severity, numbered as Fluent Bit numbers them (1 = error ... 5 = trace).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Error = 1,
    Warn = 2,
    Info = 3,
    Debug = 4,
    Trace = 5,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
            Level::Trace => "trace",
        }
    }
}

/// Where log lines go. Implementations must be cheap to call from any thread.
pub trait LogSink: Send + Sync {
    /// The most verbose level that is printed; lines above it are never formatted.
    fn max_level(&self) -> Level;
    fn write(&self, level: Level, message: &str);
}

/// A cloneable handle the engine logs through.
#[derive(Clone)]
pub struct Logger(Arc<dyn LogSink>);

impl Logger {
    pub fn new(sink: Arc<dyn LogSink>) -> Self {
        Self(sink)
    }

    pub fn enabled(&self, level: Level) -> bool {
        level <= self.0.max_level()
    }

    pub fn log(&self, level: Level, args: fmt::Arguments<'_>) {
        if self.enabled(level) {
            match args.as_str() {
                Some(s) => self.0.write(level, s),
                None => self.0.write(level, &args.to_string()),
            }
        }
    }

    pub fn error(&self, args: fmt::Arguments<'_>) {
        self.log(Level::Error, args)
    }
    pub fn warn(&self, args: fmt::Arguments<'_>) {
        self.log(Level::Warn, args)
    }
    pub fn info(&self, args: fmt::Arguments<'_>) {
        self.log(Level::Info, args)
    }
    pub fn debug(&self, args: fmt::Arguments<'_>) {
        self.log(Level::Debug, args)
    }
}

impl fmt::Debug for Logger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Logger")
            .field("max_level", &self.0.max_level())
            .finish()
    }
}

/// Writes to standard error: the CLI's sink, and a default for tests.
pub struct StderrSink(pub Level);

impl LogSink for StderrSink {
    fn max_level(&self) -> Level {
        self.0
    }
    fn write(&self, level: Level, message: &str) {
        // Not eprintln!, which panics when stderr is gone (a supervisor that died holding
        // the pipe's other end): a lost log line must never stop the shipper.
        use std::io::Write;
        let _ = writeln!(std::io::stderr(), "[{:>5}] {message}", level.as_str());
    }
}

/// A sink that keeps its lines, for unit tests.
#[cfg(test)]
pub mod tests_support {
    use std::sync::Mutex;

    use super::{Level, LogSink};

    #[derive(Default)]
    pub struct Lines(Mutex<Vec<String>>);

    impl Lines {
        pub fn text(&self) -> String {
            self.0.lock().unwrap().join("\n")
        }
    }

    impl LogSink for Lines {
        fn max_level(&self) -> Level {
            Level::Debug
        }
        fn write(&self, _: Level, message: &str) {
            self.0.lock().unwrap().push(message.to_string());
        }
    }
}
