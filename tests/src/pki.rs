//! Certificates for the TLS end-to-end tests, made with the `openssl` CLI
//! in a scratch directory: one CA, and leaf certificates it signs.
use std::{path::PathBuf, process::Command};

use crate::hostile::Scratch;

/// A test CA and the certificates it issued, all ECDSA P-256.
pub struct Pki {
    pub dir: Scratch,
}

impl Pki {
    /// A fresh CA (`ca.crt`, `ca.key`).
    pub fn new() -> Self {
        let pki = Self {
            dir: Scratch::new(),
        };
        pki.openssl(&[
            "req",
            "-x509",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            "ca.key",
            "-out",
            "ca.crt",
            "-days",
            "2",
            "-subj",
            "/CN=test CA",
        ]);
        pki
    }

    /// The path of a file in the PKI directory.
    pub fn path(&self, name: &str) -> String {
        self.dir.path.join(name).display().to_string()
    }

    /// Issues `<name>.crt`/`<name>.key` for `subject_alt_names`
    /// (`DNS:a.example`, `URI:spiffe://...`) signed by the CA.
    pub fn issue(&self, name: &str, subject_alt_names: &str) -> (String, String) {
        let (crt, key, csr) = (
            format!("{name}.crt"),
            format!("{name}.key"),
            format!("{name}.csr"),
        );
        self.openssl(&[
            "req",
            "-newkey",
            "ec",
            "-pkeyopt",
            "ec_paramgen_curve:P-256",
            "-nodes",
            "-keyout",
            &key,
            "-out",
            &csr,
            "-subj",
            &format!("/CN={name}"),
        ]);
        let ext = format!("{name}.ext");
        std::fs::write(
            self.dir.path.join(&ext),
            format!("subjectAltName={subject_alt_names}\nbasicConstraints=CA:FALSE\n"),
        )
        .expect("write extensions");
        self.openssl(&[
            "x509",
            "-req",
            "-in",
            &csr,
            "-CA",
            "ca.crt",
            "-CAkey",
            "ca.key",
            "-CAcreateserial",
            "-out",
            &crt,
            "-days",
            "2",
            "-extfile",
            &ext,
        ]);
        (self.path(&crt), self.path(&key))
    }

    /// A credential directory `<credentials>/<name>/{tls.crt,tls.key,ca.crt}`
    /// for `credentialName: <name>`; returns the credentials directory.
    pub fn credential(&self, name: &str, subject_alt_names: &str, with_ca: bool) -> PathBuf {
        let (crt, key) = self.issue(name, subject_alt_names);
        let dir = self.dir.path.join("credentials").join(name);
        std::fs::create_dir_all(&dir).expect("credential dir");
        std::fs::copy(crt, dir.join("tls.crt")).expect("copy crt");
        std::fs::copy(key, dir.join("tls.key")).expect("copy key");
        if with_ca {
            std::fs::copy(self.dir.path.join("ca.crt"), dir.join("ca.crt")).expect("copy ca");
        }
        self.dir.path.join("credentials")
    }

    /// Revokes `<name>.crt` (issued by [`Pki::issue`]) and writes the
    /// CA's revocation list, `ca.crl`, listing every certificate revoked
    /// so far; returns its path.
    pub fn revoke(&self, name: &str) -> String {
        let config = self.dir.path.join("ca.cnf");
        if !config.exists() {
            std::fs::write(
                &config,
                "[ca]\ndefault_ca = test\n[test]\ndatabase = index.txt\ncrlnumber = crlnumber\ndefault_md = sha256\ndefault_crl_days = 2\ncertificate = ca.crt\nprivate_key = ca.key\n",
            )
            .expect("write ca.cnf");
            std::fs::write(self.dir.path.join("index.txt"), "").expect("write index.txt");
            std::fs::write(self.dir.path.join("crlnumber"), "01\n").expect("write crlnumber");
        }
        let crt = format!("{name}.crt");
        self.openssl(&["ca", "-config", "ca.cnf", "-revoke", &crt]);
        self.openssl(&["ca", "-config", "ca.cnf", "-gencrl", "-out", "ca.crl"]);
        self.path("ca.crl")
    }

    fn openssl(&self, args: &[&str]) {
        let out = Command::new("openssl")
            .args(args)
            .current_dir(&self.dir.path)
            .output()
            .expect("run openssl");
        assert!(
            out.status.success(),
            "openssl {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

impl Default for Pki {
    fn default() -> Self {
        Self::new()
    }
}
