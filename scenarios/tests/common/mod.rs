//! What several test files share.

use std::path::Path;

/// A fresh scratch directory under the system temp dir, removed with everything in it when
/// the test drops it (also when the test fails), so test runs leave nothing behind.
pub struct Scratch(tempfile::TempDir);

impl Scratch {
    /// A directory named `tdxsim-{name}-` and a unique suffix; `name` may hold spaces.
    pub fn new(name: &str) -> Scratch {
        let prefix = format!("tdxsim-{name}-");
        Scratch(tempfile::Builder::new().prefix(&prefix).tempdir().expect("a scratch directory"))
    }
}

impl std::ops::Deref for Scratch {
    type Target = Path;

    fn deref(&self) -> &Path {
        self.0.path()
    }
}

impl AsRef<Path> for Scratch {
    fn as_ref(&self) -> &Path {
        self.0.path()
    }
}
