//! Finding and reading configuration files without trusting the file system:
//! each file is read once by canonical path (symlink loops and Kubernetes'
//! `..data` links lead nowhere twice), only regular files are read (a FIFO
//! would block forever, `/dev/zero` never ends), and no file is read past a
//! size limit.
use std::{
    collections::HashSet,
    fs::{self, File, Metadata, OpenOptions},
    io::Read as _,
    os::unix::fs::{FileTypeExt as _, OpenOptionsExt as _},
    path::{Path, PathBuf},
};

use super::ConfigError;

/// A path that was found but not read.
#[derive(Debug)]
pub(super) struct Problem {
    pub path: PathBuf,
    /// Named on the command line (an error) rather than met in a directory
    /// (a warning).
    pub named: bool,
    pub message: String,
}

/// Every `*.yaml` / `*.yml` file under `paths`, in sorted order per
/// directory, each once. A path given that does not exist is an error; what
/// is found but cannot be read goes to `problems`.
pub(super) fn yaml_files(
    paths: &[PathBuf],
    problems: &mut Vec<Problem>,
) -> Result<Vec<PathBuf>, ConfigError> {
    let mut seen = HashSet::new();
    let mut files = Vec::new();
    for path in paths {
        let meta = fs::metadata(path).map_err(|source| ConfigError::Read {
            path: path.clone(),
            source,
        })?;
        // An explicit stack, not recursion: directory depth is the file
        // system's to choose.
        let mut pending = vec![(path.clone(), meta, true)];
        while let Some((path, meta, named)) = pending.pop() {
            let Some(canonical) = canonical(&path, named, problems) else {
                continue;
            };
            if !seen.insert(canonical) {
                continue;
            }
            if meta.is_file() {
                files.push(path);
            } else if meta.is_dir() {
                let mut children = match entries(&path) {
                    Ok(children) => children,
                    Err(message) => {
                        problems.push(Problem {
                            path,
                            named,
                            message,
                        });
                        continue;
                    }
                };
                children.sort();
                for child in children.into_iter().rev() {
                    if let Some(meta) = wanted(&child, problems) {
                        pending.push((child, meta, false));
                    }
                }
            } else {
                problems.push(Problem {
                    path,
                    named,
                    message: format!("not a regular file ({}); skipped", kind(&meta)),
                });
            }
        }
    }
    Ok(files)
}

fn canonical(path: &Path, named: bool, problems: &mut Vec<Problem>) -> Option<PathBuf> {
    match fs::canonicalize(path) {
        Ok(canonical) => Some(canonical),
        Err(err) => {
            problems.push(Problem {
                path: path.to_path_buf(),
                named,
                message: format!("cannot resolve the path: {err}"),
            });
            None
        }
    }
}

fn entries(dir: &Path) -> Result<Vec<PathBuf>, String> {
    fs::read_dir(dir)
        .and_then(|entries| entries.map(|entry| entry.map(|e| e.path())).collect())
        .map_err(|err| format!("cannot list the directory: {err}"))
}

/// A directory entry worth visiting (a directory, or a `*.yaml` / `*.yml`
/// of any file type, so special files are reported), with its metadata
/// through symlinks. Dangling links named like YAML are reported.
fn wanted(path: &Path, problems: &mut Vec<Problem>) -> Option<Metadata> {
    let is_yaml = path
        .extension()
        .is_some_and(|ext| ext == "yaml" || ext == "yml");
    match fs::metadata(path) {
        Ok(meta) if meta.is_dir() || is_yaml => Some(meta),
        Ok(_) => None,
        Err(err) if is_yaml => {
            problems.push(Problem {
                path: path.to_path_buf(),
                named: false,
                message: format!("cannot read: {err}"),
            });
            None
        }
        Err(_) => None,
    }
}

fn kind(meta: &Metadata) -> &'static str {
    let kind = meta.file_type();
    if kind.is_fifo() {
        "a FIFO"
    } else if kind.is_socket() {
        "a socket"
    } else if kind.is_char_device() {
        "a character device"
    } else if kind.is_block_device() {
        "a block device"
    } else {
        "not a file or directory"
    }
}

/// Reads a regular file of at most `max_bytes` as UTF-8 text.
///
/// Opened non-blocking and checked after opening, so a FIFO or device put in
/// the file's place after the walk looked at it is refused, never waited on
/// or read forever; the read itself stops one byte past the limit, so a file
/// that grows (or lies about its size, as /proc does) cannot run past it.
pub(super) fn read_text(path: &Path, max_bytes: u64) -> Result<String, String> {
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK | libc::O_NOCTTY)
        .open(path)
        .map_err(|err| format!("cannot read: {err}"))?;
    let meta = file
        .metadata()
        .map_err(|err| format!("cannot read: {err}"))?;
    if !meta.is_file() {
        return Err(format!("not a regular file ({}); skipped", kind(&meta)));
    }
    let too_large = |size: u64| {
        format!("file is {size} bytes, over the limit of {max_bytes} bytes (--max-config-bytes)")
    };
    if meta.len() > max_bytes {
        return Err(too_large(meta.len()));
    }
    let mut bytes = Vec::new();
    read_up_to(file, max_bytes, &mut bytes).map_err(|err| format!("cannot read: {err}"))?;
    if bytes.len() as u64 > max_bytes {
        return Err(too_large(bytes.len() as u64));
    }
    String::from_utf8(bytes).map_err(|err| {
        format!(
            "not UTF-8 text (invalid byte at offset {})",
            err.utf8_error().valid_up_to()
        )
    })
}

fn read_up_to(file: File, max_bytes: u64, bytes: &mut Vec<u8>) -> std::io::Result<usize> {
    file.take(max_bytes.saturating_add(1)).read_to_end(bytes)
}
