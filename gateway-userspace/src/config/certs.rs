//! Certificate files named in TLS settings: they must exist, parse as PEM,
//! and a private key must match its certificate. Files are read through
//! [`FileSource`] so tests can supply them from memory.
use std::{
    io,
    path::{Path, PathBuf},
    sync::Arc,
};

use rustls::{
    crypto::ring::sign::any_supported_type,
    pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer, pem::PemObject},
    sign::CertifiedKey,
};

pub use crate::files::{Disk, FileSource, MemoryFiles};

/// Where credentials live when no directory is given and the configuration
/// file has no `credentials/` directory beside it.
pub const SYSTEM_CREDENTIALS_DIR: &str = "/etc/gateway/credentials";

/// What loading may read besides the YAML.
pub struct Environment<'a> {
    pub files: &'a dyn FileSource,
    /// `credentialName: X` reads `<dir>/X/tls.crt`, `tls.key` and `ca.crt`.
    /// `Some(dir)` (`--credentials-dir`) looks only there; `None` looks in
    /// `credentials/` beside the file naming X, then in
    /// [`SYSTEM_CREDENTIALS_DIR`], so a checkout's examples work as they are.
    pub credentials_dir: Option<&'a Path>,
    /// A credential that cannot be read, or does not parse, makes only the
    /// server naming it unavailable (a warning, the server dropped by
    /// compile) instead of an error that refuses the resource: Kubernetes
    /// mode, where a Secret may arrive after its Gateway.
    pub unreadable_credential_drops_server: bool,
}

impl Environment<'_> {
    /// The directories searched, in order, for a credential named in `config_file`.
    pub fn credential_dirs(&self, config_file: &Path) -> Vec<PathBuf> {
        match self.credentials_dir {
            Some(dir) => vec![dir.to_path_buf()],
            None => vec![
                config_file
                    .parent()
                    .unwrap_or(Path::new(""))
                    .join("credentials"),
                PathBuf::from(SYSTEM_CREDENTIALS_DIR),
            ],
        }
    }

    /// The directory holding credential `name`: the first searched that has
    /// its `tls.crt` or `ca.crt`. With a single directory that is it (the
    /// file checks then name what is missing); with several and none has
    /// it, the error names each.
    pub fn credential_dir(&self, config_file: &Path, name: &str) -> Result<PathBuf, String> {
        let dirs = self.credential_dirs(config_file);
        let found = dirs.iter().find(|dir| {
            let (cert, _, ca) = credential_files(dir, name);
            self.files.read(&cert).is_ok() || self.files.read(&ca).is_ok()
        });
        match (found, dirs.as_slice()) {
            (Some(dir), _) | (None, [dir]) => Ok(dir.clone()),
            (None, _) => {
                let looked: Vec<String> = dirs
                    .iter()
                    .map(|dir| dir.join(name).display().to_string())
                    .collect();
                Err(format!(
                    "credential {name} not found: no {} (--credentials-dir names another directory)",
                    looked.join(" nor ")
                ))
            }
        }
    }
}

fn read(files: &dyn FileSource, path: &Path) -> Result<Vec<u8>, String> {
    files
        .read(path)
        .map_err(|err| format!("cannot read {}: {}", path.display(), plain_io_message(&err)))
}

/// `No such file or directory`, without Rust's ` (os error 2)` suffix.
fn plain_io_message(err: &io::Error) -> String {
    let text = err.to_string();
    match text.find(" (os error") {
        Some(cut) => text[..cut].to_string(),
        None => text,
    }
}

fn certificates(
    files: &dyn FileSource,
    path: &Path,
) -> Result<Vec<CertificateDer<'static>>, String> {
    let pem = read(files, path)?;
    let certs: Vec<CertificateDer<'static>> = CertificateDer::pem_slice_iter(&pem)
        .collect::<Result<_, _>>()
        .map_err(|err| format!("{} is not valid PEM: {err:?}", path.display()))?;
    if certs.is_empty() {
        return Err(format!("{} has no PEM certificate", path.display()));
    }
    Ok(certs)
}

/// A certificate chain and its private key: both parse and they match.
pub(super) fn check_pair(
    files: &dyn FileSource,
    cert_path: &Path,
    key_path: &Path,
) -> Result<(), String> {
    let chain = certificates(files, cert_path)?;
    let key_pem = read(files, key_path)?;
    let key = PrivateKeyDer::from_pem_slice(&key_pem)
        .map_err(|_| format!("{} has no PEM private key", key_path.display()))?;
    let signing_key = any_supported_type(&key)
        .map_err(|err| format!("{}: unsupported private key ({err})", key_path.display()))?;
    CertifiedKey::new(chain, Arc::clone(&signing_key))
        .keys_match()
        .map_err(|err| match err {
            rustls::Error::InconsistentKeys(_) => format!(
                "private key {} does not match certificate {}",
                key_path.display(),
                cert_path.display()
            ),
            other => format!("{}: {other}", cert_path.display()),
        })
}

/// A CA bundle: at least one PEM certificate.
pub(super) fn check_ca(files: &dyn FileSource, path: &Path) -> Result<(), String> {
    certificates(files, path).map(|_| ())
}

/// A CRL file: at least one PEM `X509 CRL` block.
pub(super) fn check_crl(files: &dyn FileSource, path: &Path) -> Result<(), String> {
    let pem = read(files, path)?;
    let crls: Vec<CertificateRevocationListDer<'static>> =
        CertificateRevocationListDer::pem_slice_iter(&pem)
            .collect::<Result<_, _>>()
            .map_err(|err| format!("{} is not valid PEM: {err:?}", path.display()))?;
    if crls.is_empty() {
        return Err(format!(
            "{} has no PEM certificate revocation list",
            path.display()
        ));
    }
    Ok(())
}

/// A credential's certificate revocation list, `<dir>/<name>/ca.crl`
/// (Istio reads the Secret key `ca.crl`).
pub(super) fn credential_crl(dir: &Path, name: &str) -> PathBuf {
    dir.join(name).join("ca.crl")
}

/// The files of credential `name` under `dir`: (tls.crt, tls.key, ca.crt).
pub(super) fn credential_files(dir: &Path, name: &str) -> (PathBuf, PathBuf, PathBuf) {
    let base = dir.join(name);
    (
        base.join("tls.crt"),
        base.join("tls.key"),
        base.join("ca.crt"),
    )
}

#[cfg(test)]
pub(super) mod test_pki {
    //! Fixed test certificates (generated once with openssl, committed).
    use super::*;

    pub(crate) const CERT: &str = include_str!("testdata/a.example.com.crt");
    pub(crate) const KEY: &str = include_str!("testdata/a.example.com.key");
    pub(crate) const OTHER_KEY: &str = include_str!("testdata/other.key");
    pub(crate) const CRL: &str = include_str!("testdata/ca.crl");

    /// An in-memory file system with `entries`.
    pub(crate) fn files(entries: &[(&str, &str)]) -> MemoryFiles {
        MemoryFiles(
            entries
                .iter()
                .map(|(p, c)| (PathBuf::from(p), c.as_bytes().to_vec()))
                .collect(),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::{test_pki::*, *};

    #[test]
    fn matching_certificate_and_key_pass() {
        let fs = files(&[("/c.pem", CERT), ("/k.pem", KEY)]);
        assert_eq!(
            check_pair(&fs, Path::new("/c.pem"), Path::new("/k.pem")),
            Ok(())
        );
    }

    #[test]
    fn key_of_another_certificate_is_rejected() {
        let fs = files(&[("/c.pem", CERT), ("/k.pem", OTHER_KEY)]);
        assert_eq!(
            check_pair(&fs, Path::new("/c.pem"), Path::new("/k.pem")),
            Err("private key /k.pem does not match certificate /c.pem".into())
        );
    }

    #[test]
    fn missing_file_is_named() {
        let fs = files(&[]);
        assert_eq!(
            check_ca(&fs, Path::new("/ca.pem")),
            Err("cannot read /ca.pem: No such file or directory".into())
        );
    }

    #[test]
    fn a_key_is_not_a_certificate() {
        let fs = files(&[("/c.pem", KEY), ("/k.pem", KEY)]);
        assert_eq!(
            check_pair(&fs, Path::new("/c.pem"), Path::new("/k.pem")),
            Err("/c.pem has no PEM certificate".into())
        );
    }

    #[test]
    fn a_certificate_is_not_a_key() {
        let fs = files(&[("/c.pem", CERT), ("/k.pem", CERT)]);
        assert_eq!(
            check_pair(&fs, Path::new("/c.pem"), Path::new("/k.pem")),
            Err("/k.pem has no PEM private key".into())
        );
    }

    #[test]
    fn crl_must_hold_a_crl() {
        let fs = files(&[("/crl.pem", CRL), ("/c.pem", CERT)]);
        assert_eq!(check_crl(&fs, Path::new("/crl.pem")), Ok(()));
        assert!(check_crl(&fs, Path::new("/c.pem")).is_err());
    }
}
