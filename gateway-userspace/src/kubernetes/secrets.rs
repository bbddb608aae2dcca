//! Certificates from Secrets (`credentialName`), as Istio's gateway reads
//! them (`pilot/pkg/credentials/kube/secrets.go`):
//! - only Secrets in the gateway's own namespace, watched with Istio's
//!   field selector (no Helm release and no service-account token
//!   Secrets: the two large kinds a namespace holds);
//! - the certificate and key are `cert` and `key` when both are non-empty,
//!   else `tls.crt` and `tls.key` (a `kubernetes.io/tls` Secret);
//! - the client CA of `X` is the Secret `X-cacert`'s when that Secret
//!   exists, else `X`'s own; in either, `cacert`, else `ca.crt`.
//!
//! The Secrets are served to the loader and the proxy as files under
//! `secret://<namespace>/<name>/` ([`SecretFiles`]), so the same checks
//! and loading apply as to `--credentials-dir`, and are never written to
//! disk. A Secret that a credential names changing starts a reload: new
//! connections get the new certificate, held ones keep theirs.
use std::{
    collections::{BTreeMap, BTreeSet},
    io,
    path::{Path, PathBuf},
    sync::{Arc, Mutex, PoisonError},
};

use futures_util::StreamExt as _;
use k8s_openapi::{ByteString, api::core::v1::Secret};
use kube::{
    Client,
    api::Api,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, ObjectRef, Store},
        watcher,
    },
};
use tokio::sync::watch;

use super::{FirstList, Retry, trim};
use crate::{
    files::{Disk, FileSource},
    model::Model,
};

/// Istio's selector of the Secrets worth watching.
const FIELD_SELECTOR: &str = "type!=helm.sh/release.v1,type!=kubernetes.io/service-account-token";

/// The suffix of the Secret holding a credential's client CA on its own.
const CA_SUFFIX: &str = "-cacert";

/// The Secrets of one namespace, as files; paths outside
/// `secret://<namespace>/` are read from disk (the system roots).
#[derive(Clone)]
pub struct SecretFiles {
    namespace: String,
    store: Store<Secret>,
}

impl std::fmt::Debug for SecretFiles {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretFiles")
            .field("namespace", &self.namespace)
            .finish_non_exhaustive()
    }
}

impl SecretFiles {
    /// The directory credentials are found in: `secret://<namespace>`.
    pub fn root(&self) -> PathBuf {
        PathBuf::from(format!("secret://{}", self.namespace))
    }

    fn secret(&self, name: &str) -> Option<Arc<Secret>> {
        self.store
            .get(&ObjectRef::new(name).within(&self.namespace))
    }

    fn not_found(&self, name: &str) -> io::Error {
        io::Error::new(
            io::ErrorKind::NotFound,
            format!("Secret {}/{name} not found", self.namespace),
        )
    }
}

impl FileSource for SecretFiles {
    fn read(&self, path: &Path) -> io::Result<Vec<u8>> {
        let Ok(inside) = path.strip_prefix(self.root()) else {
            return Disk.read(path);
        };
        let parts: Vec<&str> = inside.iter().filter_map(|p| p.to_str()).collect();
        let [name, file] = parts.as_slice() else {
            return Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not a credential file",
            ));
        };
        match *file {
            "tls.crt" | "tls.key" => {
                let secret = self.secret(name).ok_or_else(|| self.not_found(name))?;
                let (cert, key) = cert_and_key(data(&secret))?;
                Ok(if *file == "tls.crt" { cert } else { key }.to_vec())
            }
            "ca.crt" => {
                let own = self.secret(name);
                let separate = self.secret(&format!("{name}{CA_SUFFIX}"));
                let secret = separate.or(own).ok_or_else(|| self.not_found(name))?;
                Ok(root(data(&secret))?.to_vec())
            }
            // Istio's key for the revocation list, beside the CA.
            "ca.crl" => {
                let own = self.secret(name);
                let separate = self.secret(&format!("{name}{CA_SUFFIX}"));
                let secret = separate.or(own).ok_or_else(|| self.not_found(name))?;
                value(data(&secret), "ca.crl")
                    .map(<[u8]>::to_vec)
                    .ok_or_else(|| io::Error::new(io::ErrorKind::NotFound, "no ca.crl"))
            }
            _ => Err(io::Error::new(
                io::ErrorKind::NotFound,
                "not a credential file",
            )),
        }
    }
}

fn data(secret: &Secret) -> &BTreeMap<String, ByteString> {
    static EMPTY: BTreeMap<String, ByteString> = BTreeMap::new();
    secret.data.as_ref().unwrap_or(&EMPTY)
}

fn value<'d>(data: &'d BTreeMap<String, ByteString>, key: &str) -> Option<&'d [u8]> {
    data.get(key)
        .map(|v| v.0.as_slice())
        .filter(|v| !v.is_empty())
}

fn invalid(message: String) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, message)
}

/// The certificate chain and key: `cert`/`key`, else `tls.crt`/`tls.key`.
fn cert_and_key(data: &BTreeMap<String, ByteString>) -> io::Result<(&[u8], &[u8])> {
    for (cert, key) in [("cert", "key"), ("tls.crt", "tls.key")] {
        if let (Some(c), Some(k)) = (value(data, cert), value(data, key)) {
            return Ok((c, k));
        }
        if data.contains_key(cert) && data.contains_key(key) {
            return Err(invalid(format!(
                "found keys {cert:?} and {key:?}, but they are empty"
            )));
        }
    }
    Err(invalid(format!(
        "the Secret has neither cert and key nor tls.crt and tls.key (it has {})",
        keys(data)
    )))
}

/// The client CA: `cacert`, else `ca.crt`.
fn root(data: &BTreeMap<String, ByteString>) -> io::Result<&[u8]> {
    value(data, "cacert")
        .or_else(|| value(data, "ca.crt"))
        .ok_or_else(|| {
            invalid(format!(
                "the Secret has no CA certificate in cacert or ca.crt (it has {})",
                keys(data)
            ))
        })
}

fn keys(data: &BTreeMap<String, ByteString>) -> String {
    if data.is_empty() {
        return "no data".into();
    }
    data.keys().cloned().collect::<Vec<_>>().join(", ")
}

/// The Secrets of the gateway's namespace, watched; a change to one a
/// credential names starts a reload.
#[derive(Clone)]
pub struct SecretWatch {
    files: SecretFiles,
    first_list: FirstList,
    /// The Secret names the configuration's credentials read.
    named: Arc<Mutex<BTreeSet<String>>>,
}

impl std::fmt::Debug for SecretWatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SecretWatch")
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

impl SecretWatch {
    /// Starts the watch of `namespace`'s Secrets on the current runtime.
    pub fn start(client: Client, namespace: &str, changed: Arc<watch::Sender<u64>>) -> Self {
        let api: Api<Secret> = Api::namespaced(client, namespace);
        let writer = reflector::store::Writer::default();
        let store = writer.as_reader();
        let named: Arc<Mutex<BTreeSet<String>>> = Arc::default();
        let watched = Arc::clone(&named);
        let what = format!("Secrets in {namespace}");
        let first_list = FirstList::default();
        let listed = first_list.clone();
        log::info!("watching {what} for credentialName");
        tokio::spawn(async move {
            let config = watcher::Config::default().fields(FIELD_SELECTOR);
            let stream = reflector::reflector(writer, watcher(api, config).modify(trim))
                .backoff(Retry::default());
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                let relevant = match &event {
                    Ok(watcher::Event::Apply(secret) | watcher::Event::Delete(secret)) => {
                        let name = secret.metadata.name.as_deref().unwrap_or_default();
                        let named = watched.lock().unwrap_or_else(PoisonError::into_inner);
                        named.contains(name)
                    }
                    Ok(watcher::Event::InitDone) => true,
                    Ok(_) => false,
                    Err(err) => {
                        log::warn!(
                            "watch of {what} failed: {err}; retrying (the last complete list stays served)"
                        );
                        false
                    }
                };
                if relevant {
                    changed.send_modify(|count| *count += 1);
                }
                if matches!(event, Ok(watcher::Event::InitDone)) {
                    listed.done();
                }
            }
        });
        Self {
            files: SecretFiles {
                namespace: namespace.to_string(),
                store,
            },
            named,
            first_list,
        }
    }

    /// Waits for the first complete list (counted as a change).
    pub async fn ready(&self) {
        self.first_list.wait().await;
    }

    /// The Secrets as files, for the loader and the proxy.
    pub fn files(&self) -> SecretFiles {
        self.files.clone()
    }

    /// Remembers which Secrets `model`'s credentials read, so only their
    /// changes start a reload.
    pub fn follow(&self, model: &Model) {
        let names = credential_secrets(model);
        *self.named.lock().unwrap_or_else(PoisonError::into_inner) = names;
    }
}

/// The Secret names a configuration's credentials read: each Gateway
/// server's `credentialName(s)` and `caCertCredentialName`, and each
/// DestinationRule's origination `credentialName`, each with its
/// `-cacert` companion.
pub fn credential_secrets(model: &Model) -> BTreeSet<String> {
    let servers = model
        .gateways
        .iter()
        .flat_map(|g| &g.servers)
        .filter_map(|s| s.tls.as_ref())
        .flat_map(|tls| {
            tls.credential_names
                .iter()
                .chain(&tls.ca_cert_credential_name)
                .cloned()
        });
    let rules = model.destination_rules.iter().flat_map(|dr| {
        let policies = std::iter::once(&dr.traffic_policy)
            .chain(dr.subsets.iter().filter_map(|s| s.traffic_policy.as_ref()));
        policies
            .filter_map(|p| p.tls.as_ref()?.credential_name.clone())
            .collect::<Vec<_>>()
    });
    servers
        .chain(rules)
        .flat_map(|name| [format!("{name}{CA_SUFFIX}"), name])
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn secret_data(pairs: &[(&str, &str)]) -> BTreeMap<String, ByteString> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
            .collect()
    }

    #[test]
    fn a_generic_secrets_cert_and_key_come_before_a_tls_secrets() {
        let both = secret_data(&[
            ("cert", "generic-cert"),
            ("key", "generic-key"),
            ("tls.crt", "tls-cert"),
            ("tls.key", "tls-key"),
        ]);
        assert_eq!(
            cert_and_key(&both).ok(),
            Some((&b"generic-cert"[..], &b"generic-key"[..]))
        );
        let tls = secret_data(&[
            ("tls.crt", "tls-cert"),
            ("tls.key", "tls-key"),
            ("cert", ""),
        ]);
        assert_eq!(
            cert_and_key(&tls).ok(),
            Some((&b"tls-cert"[..], &b"tls-key"[..]))
        );
    }

    #[test]
    fn a_secret_without_a_usable_pair_says_what_it_has() {
        let empty = secret_data(&[("tls.crt", ""), ("tls.key", "")]);
        let err = cert_and_key(&empty).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("found keys \"tls.crt\" and \"tls.key\", but they are empty")
        );
        let other = secret_data(&[("password", "x")]);
        let err = cert_and_key(&other).err().map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some("the Secret has neither cert and key nor tls.crt and tls.key (it has password)")
        );
    }

    #[test]
    fn the_ca_is_cacert_else_ca_crt() {
        let generic = secret_data(&[("cacert", "generic-ca"), ("ca.crt", "tls-ca")]);
        assert_eq!(root(&generic).ok(), Some(&b"generic-ca"[..]));
        let tls = secret_data(&[("ca.crt", "tls-ca")]);
        assert_eq!(root(&tls).ok(), Some(&b"tls-ca"[..]));
        assert!(root(&secret_data(&[("tls.crt", "c")])).is_err());
    }

    #[test]
    fn the_secrets_named_are_every_credential_and_its_cacert_companion() {
        let config = crate::config::load_sources(&[(
            "t.yaml".into(),
            "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
  - port: {number: 443, name: https, protocol: HTTPS}
    hosts: [a.example.com]
    tls: {mode: MUTUAL, credentialName: front}
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: out, namespace: istio-system}
spec:
  host: api.example.com
  trafficPolicy:
    tls: {mode: MUTUAL, credentialName: client}
"
            .to_string(),
        )]);
        assert_eq!(
            credential_secrets(&config.model),
            BTreeSet::from(["client", "client-cacert", "front", "front-cacert"].map(String::from))
        );
    }
}
