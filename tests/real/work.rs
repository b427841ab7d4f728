//! A test's working folder (configuration, storage, state, logs): removed when the test
//! passes, kept and named when it fails, so the host's full log can be read.

use std::path::Path;

pub struct Work(Option<tempfile::TempDir>);

impl Work {
    pub fn new(name: &str) -> Work {
        let dir = tempfile::Builder::new()
            .prefix(&format!("real-{}-", name.replace("::", "-")))
            .tempdir()
            .unwrap();
        Work(Some(dir))
    }

    pub fn path(&self) -> &Path {
        self.0.as_ref().unwrap().path()
    }
}

impl Drop for Work {
    fn drop(&mut self) {
        if std::thread::panicking() {
            let kept = self.0.take().unwrap().keep();
            eprintln!("kept the failed test's folder: {}", kept.display());
        }
    }
}
