//! Noticing that the configuration changed on disk, for live reload.
//!
//! Polled, not inotify: one way that works alike for editors that write a
//! new file and rename it, Kubernetes' symlink swap of a mounted ConfigMap
//! or Secret, and network filesystems that send no events. A poll reads
//! the metadata of the configuration's files and of the certificate files
//! it names; a change is reported once the files have stayed the same for
//! the settle time (`--config-settle`), so a burst of edits makes one
//! reload and a file being copied is not read half written (unless the
//! copy stalls longer than that: replace files by renaming a complete
//! one over them, as editors and `kubectl` do, and see
//! `compile::route_loss` for the reload that would empty a listener).
use std::{
    collections::BTreeMap,
    os::unix::fs::MetadataExt,
    path::{Path, PathBuf},
    time::{Duration, Instant},
};

/// What a file looked like: (length, modification time in ns, inode), or
/// `None` when it is missing.
type FileState = Option<(u64, i128, u64)>;

/// The state of every watched file.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Fingerprint(BTreeMap<PathBuf, FileState>);

/// Directories deeper than this under a configuration path are not read.
const MAX_DEPTH: usize = 16;
/// Files past this many are not fingerprinted.
const MAX_FILES: usize = 10_000;

/// The fingerprint of every file under `roots` (files or directories,
/// recursively) and of `files`.
pub fn fingerprint(roots: &[PathBuf], files: &[PathBuf]) -> Fingerprint {
    let mut out = BTreeMap::new();
    for root in roots {
        walk(root, 0, &mut out);
    }
    for file in files {
        out.insert(file.clone(), state(file));
    }
    Fingerprint(out)
}

fn state(path: &Path) -> FileState {
    // Follows symlinks: a swapped link target is a change.
    let meta = std::fs::metadata(path).ok()?;
    let mtime = i128::from(meta.mtime()) * 1_000_000_000 + i128::from(meta.mtime_nsec());
    Some((meta.len(), mtime, meta.ino()))
}

fn walk(path: &Path, depth: usize, out: &mut BTreeMap<PathBuf, FileState>) {
    if out.len() >= MAX_FILES {
        return;
    }
    match std::fs::read_dir(path) {
        Ok(entries) if depth < MAX_DEPTH => {
            let mut children: Vec<PathBuf> = entries.filter_map(|e| Some(e.ok()?.path())).collect();
            children.sort();
            for child in children {
                walk(&child, depth + 1, out);
            }
        }
        Ok(_) => {}
        Err(_) => {
            out.insert(path.to_path_buf(), state(path));
        }
    }
}

/// Polls the configuration for changes.
pub struct Watcher {
    roots: Vec<PathBuf>,
    files: Vec<PathBuf>,
    current: Fingerprint,
    /// A change seen, and since when the files have looked like this.
    pending: Option<(Fingerprint, Instant)>,
    settle: Duration,
}

impl Watcher {
    /// Watches `roots` (the configuration paths) and `files` (the
    /// certificate files the configuration names), as they are now; a
    /// change counts once the files have not changed for `settle`.
    pub fn new(roots: Vec<PathBuf>, files: Vec<PathBuf>, settle: Duration) -> Self {
        let current = fingerprint(&roots, &files);
        Self {
            roots,
            files,
            current,
            pending: None,
            settle,
        }
    }

    /// After a reload: the certificate files the new configuration names,
    /// and the state that configuration was read from.
    pub fn rebase(&mut self, files: Vec<PathBuf>) {
        self.files = files;
        self.current = fingerprint(&self.roots, &self.files);
        self.pending = None;
    }

    /// Looks once; true when the files differ from the last state, an
    /// earlier poll already saw them the same way, and they have stayed
    /// so for the settle time.
    pub fn poll(&mut self) -> bool {
        self.poll_at(Instant::now())
    }

    fn poll_at(&mut self, at: Instant) -> bool {
        let now = fingerprint(&self.roots, &self.files);
        if now == self.current {
            self.pending = None;
            return false;
        }
        match &self.pending {
            Some((seen, since)) if *seen == now => {
                if at.saturating_duration_since(*since) < self.settle {
                    return false;
                }
                self.current = now;
                self.pending = None;
                true
            }
            _ => {
                self.pending = Some((now, at));
                false
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn scratch(name: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("gateway-watch-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        dir
    }

    #[test]
    fn a_change_is_reported_once_it_has_settled_and_only_once() {
        let dir = scratch("settle");
        let config = dir.join("sub/gw.yaml");
        std::fs::write(&config, "a").unwrap();
        let cert = dir.join("tls.crt");
        std::fs::write(&cert, "c").unwrap();
        let mut watcher = Watcher::new(vec![dir.join("sub")], vec![cert.clone()], Duration::ZERO);
        assert!(!watcher.poll(), "nothing changed");
        std::fs::write(&config, "ab").unwrap();
        assert!(!watcher.poll(), "first sight of a change waits");
        assert!(watcher.poll(), "the same change seen twice is reported");
        assert!(!watcher.poll(), "and only once");
        // A change still in progress keeps waiting.
        std::fs::write(&config, "abc").unwrap();
        assert!(!watcher.poll());
        std::fs::write(&config, "abcd").unwrap();
        assert!(!watcher.poll());
        assert!(watcher.poll());
        // New files, removed files and named certificate files count.
        std::fs::write(dir.join("sub/new.yaml"), "n").unwrap();
        assert!(!watcher.poll());
        assert!(watcher.poll());
        std::fs::remove_file(&cert).unwrap();
        assert!(!watcher.poll());
        assert!(watcher.poll());
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_change_waits_until_the_files_have_settled() {
        let dir = scratch("settle-time");
        let config = dir.join("gw.yaml");
        std::fs::write(&config, "a").unwrap();
        let settle = Duration::from_secs(2);
        let mut watcher = Watcher::new(vec![config.clone()], Vec::new(), settle);
        let start = Instant::now();
        let at = |secs: u64| start + Duration::from_secs(secs);
        std::fs::write(&config, "ab").unwrap();
        assert!(!watcher.poll_at(at(0)), "first sight");
        assert!(!watcher.poll_at(at(1)), "unchanged for 1 s of 2");
        // Still being written: the clock starts again.
        std::fs::write(&config, "abc").unwrap();
        assert!(!watcher.poll_at(at(2)));
        assert!(!watcher.poll_at(at(3)));
        assert!(watcher.poll_at(at(4)), "unchanged for 2 s");
        assert!(!watcher.poll_at(at(5)), "reported once");
        let _ = std::fs::remove_dir_all(&dir);
    }

    #[test]
    fn rebasing_takes_the_files_as_they_are() {
        let dir = scratch("rebase");
        let config = dir.join("gw.yaml");
        std::fs::write(&config, "a").unwrap();
        let mut watcher = Watcher::new(vec![config.clone()], Vec::new(), Duration::ZERO);
        std::fs::write(&config, "ab").unwrap();
        watcher.rebase(Vec::new());
        assert!(!watcher.poll());
        assert!(!watcher.poll());
        let _ = std::fs::remove_dir_all(&dir);
    }
}
