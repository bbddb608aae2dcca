//! Where the certificate and key files a configuration names are read
//! from: the file system, memory (tests, fuzzing), or in Kubernetes mode
//! the Secrets `credentialName` names. `config` checks them through this
//! seam and the proxy loads them through the same one.
use std::{collections::BTreeMap, io, path::Path, path::PathBuf};

/// Where certificate files come from.
pub trait FileSource: Send + Sync + std::fmt::Debug {
    /// The whole file at `path`.
    fn read(&self, path: &Path) -> io::Result<Vec<u8>>;
}

/// The real file system.
#[derive(Debug)]
pub struct Disk;

impl FileSource for Disk {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        std::fs::read(path)
    }
}

/// Files held in memory, for tests and fuzzing.
#[derive(Debug, Default)]
pub struct MemoryFiles(pub BTreeMap<PathBuf, Vec<u8>>);

impl FileSource for MemoryFiles {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        self.0
            .get(path)
            .cloned()
            .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "No such file or directory"))
    }
}
