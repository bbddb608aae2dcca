//! Reading Istio YAML: the only module that knows YAML. Produces
//! [`model`](crate::model) values plus every diagnostic, each pinned to
//! `PATH:LINE:COL`.
//!
//! Fields and rules follow Istio 1.31 (master): the CRDs of `istio/api` at
//! `b8f8791` (2026-07-21, `kubernetes/customresourcedefinitions.gen.yaml`)
//! and `pkg/config/validation` of `istio/istio` at `86c9f01` (2026-08-22).
mod authorization_policy;
mod certs;
mod cipher_suites;
mod common;
mod decode;
mod destination_rule;
mod diagnostic;
mod gateway;
mod headers;
mod kinds;
mod kube_service;
mod request_authentication;
mod rules;
mod service_entry;
mod virtual_service;
mod walk;
pub(crate) mod yaml;

use std::{
    collections::BTreeMap,
    io,
    path::{Path, PathBuf},
};

pub use certs::{Disk, Environment, FileSource, MemoryFiles, SYSTEM_CREDENTIALS_DIR};
pub use diagnostic::{Diagnostic, Severity};
pub use kinds::{IgnoredKind, REFUSED as REFUSED_KINDS, Refused};
pub use rules::duration_millis;

use self::{decode::Decoder, yaml::Value};
use crate::model::Model;

/// Failure to read the configuration at all (as opposed to problems in it,
/// which are [`Diagnostic`]s).
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// A path given on the command line or found in a directory could not be read.
    #[error("cannot read {path}")]
    Read {
        path: PathBuf,
        #[source]
        source: io::Error,
    },
}

/// Everything read from the configuration paths.
#[derive(Debug, Default)]
pub struct Config {
    /// Resources without errors, each kind in the order read.
    pub model: Model,
    pub diagnostics: Vec<Diagnostic>,
}

impl Config {
    /// Whether any diagnostic is an error.
    pub fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }
}

/// Largest configuration file read by default: four times the 4 MB
/// benchmark configuration of 10,000 VirtualServices in one file.
pub const DEFAULT_MAX_FILE_BYTES: u64 = 16 << 20;

/// `load_paths` on the real file system, with credentials under
/// `credentials_dir` (`None`: the default search, see [`Environment`]),
/// files up to `max_file_bytes`, and the refused kinds in `ignored`
/// accepted unenforced (`--ignore-kind`).
pub fn load_from_disk(
    paths: &[PathBuf],
    credentials_dir: Option<&Path>,
    max_file_bytes: u64,
    ignored: &[IgnoredKind],
) -> Result<Config, ConfigError> {
    load_paths(
        paths,
        max_file_bytes,
        &Environment {
            files: &Disk,
            credentials_dir,
            unreadable_credential_drops_server: false,
        },
        ignored,
    )
}

/// Reads files and directories (recursively, `*.yaml` / `*.yml`, in sorted
/// order, each file once however many paths lead to it), checking the
/// certificate files they name through `env`. A path on the command line
/// that does not exist is an error; every other problem with a file (not a
/// regular file, too large, unreadable, not UTF-8) is a diagnostic and the
/// file is skipped. Resources of a kind in `ignored` are a note instead of
/// an error.
pub fn load_paths(
    paths: &[PathBuf],
    max_file_bytes: u64,
    env: &Environment<'_>,
    ignored: &[IgnoredKind],
) -> Result<Config, ConfigError> {
    let mut problems = Vec::new();
    let files = walk::yaml_files(paths, &mut problems)?;
    let mut sources = Vec::new();
    for file in files {
        match walk::read_text(&file, max_file_bytes) {
            Ok(text) => sources.push((file, text)),
            Err(message) => problems.push(walk::Problem {
                path: file,
                named: true,
                message,
            }),
        }
    }
    let mut config = load_sources_ignoring(&sources, Some(env), ignored);
    let file_diagnostics = problems.into_iter().map(|problem| Diagnostic {
        // Named on the command line (or chosen by the walk and then
        // unreadable): the operator expects it served, so it is an error.
        severity: if problem.named {
            Severity::Error
        } else {
            Severity::Warning
        },
        file: problem.path,
        line: 0,
        col: 0,
        resource: String::new(),
        field: String::new(),
        message: problem.message,
    });
    config.diagnostics.splice(0..0, file_diagnostics);
    diagnostic::sort_by_position(&mut config.diagnostics);
    Ok(config)
}

/// Decodes already-read sources without reading any other file (no
/// certificate checks); the seam for tests of the rules.
pub fn load_sources(sources: &[(PathBuf, String)]) -> Config {
    load_sources_ignoring(sources, None, &[])
}

/// Decodes already-read sources, checking certificate files through `env` if given.
pub fn load_sources_with(sources: &[(PathBuf, String)], env: Option<&Environment<'_>>) -> Config {
    load_sources_ignoring(sources, env, &[])
}

/// [`load_sources_with`], with the refused kinds in `ignored` accepted
/// unenforced.
pub fn load_sources_ignoring(
    sources: &[(PathBuf, String)],
    env: Option<&Environment<'_>>,
    ignored: &[IgnoredKind],
) -> Config {
    let mut config = Config::default();
    let mut loader = Loader {
        env,
        ignored,
        seen: BTreeMap::new(),
        delegate_sites: Vec::new(),
    };
    for (file, text) in sources {
        let parsed = yaml::for_each_document(text, |doc| {
            loader.document(file, &doc, &mut config);
        });
        if let Err(err) = parsed {
            config.diagnostics.push(Diagnostic {
                severity: Severity::Error,
                file: file.clone(),
                line: err.line,
                col: err.col,
                resource: String::new(),
                field: String::new(),
                message: err.message,
            });
        }
    }
    // Delegates may come after their roots, in any file: checked once all are read.
    let missing = virtual_service::check_delegates(&config.model, &loader.delegate_sites);
    config.diagnostics.extend(missing);
    diagnostic::sort_by_position(&mut config.diagnostics);
    config
}

/// State across the documents of one load.
struct Loader<'a> {
    env: Option<&'a Environment<'a>>,
    ignored: &'a [IgnoredKind],
    /// (kind, namespace, name) -> where it was first defined.
    seen: BTreeMap<(String, String, String), (PathBuf, usize, usize)>,
    /// Every root rule's `delegate`, checked once all documents are read.
    delegate_sites: Vec<virtual_service::DelegateSite>,
}

impl Loader<'_> {
    fn document(&mut self, file: &Path, doc: &yaml::Node, config: &mut Config) {
        if doc.value == Value::Null {
            return;
        }
        let mut d = Decoder::new(file, self.env);
        let (Some(api_version), Some(kind)) = (doc.get("apiVersion"), doc.get("kind")) else {
            d.error(
                doc,
                "",
                "not a Kubernetes resource: apiVersion and kind are required",
            );
            config.diagnostics.append(&mut d.diagnostics);
            return;
        };
        let (Some(api_version), Some(kind)) =
            (d.string(api_version, "apiVersion"), d.string(kind, "kind"))
        else {
            config.diagnostics.append(&mut d.diagnostics);
            return;
        };
        match kinds::disposition(&api_version, &kind) {
            kinds::Disposition::Served => self.served(&mut d, doc, kind, config),
            kinds::Disposition::List => {
                // A list's items are documents of their own (and may be
                // lists: bounded by the YAML depth limit).
                match doc.get("items") {
                    Some(items) => {
                        for item in d.sequence(items, "items").unwrap_or_default() {
                            self.document(file, item, config);
                        }
                    }
                    None => d.report(
                        Severity::Warning,
                        doc,
                        "items",
                        format!("{kind} ({api_version}) has no items; nothing read"),
                    ),
                }
            }
            kinds::Disposition::UnservedVersion(versions) => {
                d.resource = loose_identity(&kind, doc);
                d.error(
                    doc,
                    "apiVersion",
                    format!(
                        "{kind} ({api_version}) is not a version this gateway reads ({}): serving without it would let through what it denies, so the configuration is refused",
                        versions.join(", ")
                    ),
                );
            }
            kinds::Disposition::Refused(refused) => {
                let ignored = self.ignored.iter().any(|k| k.name() == refused.kind);
                d.resource = loose_identity(&kind, doc);
                let severity = if ignored {
                    Severity::Note
                } else {
                    Severity::Error
                };
                let message = kinds::refused_message(refused, &api_version, ignored);
                d.report(severity, doc, "", message);
            }
            kinds::Disposition::Warned if api_version == "v1" && kind == "Service" => {
                let service = kube_service::decode(doc);
                let mappings = kube_service::mappings(&service);
                let mut message = format!(
                    "Service {} is read for the gateway's port translation only: when it selects the gateway workload, a server on one of its ports listens on that port's targetPort",
                    service.key
                );
                if !mappings.is_empty() {
                    message.push_str(&format!(" (it maps {})", mappings.join(", ")));
                }
                d.report(Severity::Note, doc, "", message);
                config.model.kubernetes.workload_services.push(service);
            }
            kinds::Disposition::Warned => {
                d.resource = loose_identity(&kind, doc);
                d.report(
                    Severity::Warning,
                    doc,
                    "",
                    format!("{kind} ({api_version}) is not read by this gateway; skipped"),
                );
            }
        }
        config.diagnostics.append(&mut d.diagnostics);
    }

    /// Decodes one of the served kinds into `config.model` (only if it has no errors).
    fn served(&mut self, d: &mut Decoder<'_>, doc: &yaml::Node, kind: String, config: &mut Config) {
        let Some((namespace, name)) = gateway::identity(d, doc) else {
            return;
        };
        d.resource = format!("{kind} {namespace}/{name}");
        let key = (kind.clone(), namespace.clone(), name.clone());
        let name_node = doc
            .get("metadata")
            .and_then(|m| m.get("name"))
            .unwrap_or(doc);
        // A duplicate is an error, but its content is still validated so every
        // problem in it shows at once; it never reaches the model.
        if let Some((first_file, line, col)) = self.seen.get(&key) {
            let message = format!(
                "duplicate {kind} {namespace}/{name}: first defined at {}:{line}:{col}",
                first_file.display()
            );
            d.error(name_node, "metadata.name", message);
        } else {
            self.seen
                .insert(key, (d.file().to_path_buf(), name_node.line, name_node.col));
        }
        let mut model = Model::default();
        match kind.as_str() {
            "Gateway" => {
                model
                    .gateways
                    .extend(gateway::decode(d, doc, namespace, name));
            }
            "VirtualService" => {
                let created = gateway::creation_timestamp(d, doc);
                model
                    .virtual_services
                    .extend(virtual_service::decode(d, doc, namespace, name, created));
            }
            "RequestAuthentication" => {
                model
                    .request_authentications
                    .extend(request_authentication::decode(d, doc, namespace, name));
            }
            "DestinationRule" => {
                model
                    .destination_rules
                    .extend(destination_rule::decode(d, doc, namespace, name));
            }
            "AuthorizationPolicy" => {
                model
                    .authorization_policies
                    .extend(authorization_policy::decode(d, doc, namespace, name));
            }
            _ => {
                model
                    .service_entries
                    .extend(service_entry::decode(d, doc, namespace, name));
            }
        }
        if !d.has_errors() {
            for vs in &model.virtual_services {
                let sites = virtual_service::delegate_sites(d, doc, vs);
                self.delegate_sites.extend(sites);
            }
            let target = &mut config.model;
            target.gateways.append(&mut model.gateways);
            target.virtual_services.append(&mut model.virtual_services);
            target
                .destination_rules
                .append(&mut model.destination_rules);
            target.service_entries.append(&mut model.service_entries);
            target
                .request_authentications
                .append(&mut model.request_authentications);
            target
                .authorization_policies
                .append(&mut model.authorization_policies);
        }
    }
}

/// `<Kind> <namespace>/<name>` of a resource that is not decoded, as far
/// as its metadata can be read; the kind alone otherwise.
fn loose_identity(kind: &str, doc: &yaml::Node) -> String {
    let text = |key: &str| match doc.get("metadata").and_then(|m| m.get(key)) {
        Some(yaml::Node {
            value: Value::Str(s),
            ..
        }) => Some(s.clone()),
        _ => None,
    };
    match text("name") {
        Some(name) => {
            let namespace = text("namespace").unwrap_or_else(|| gateway::DEFAULT_NAMESPACE.into());
            format!("{kind} {namespace}/{name}")
        }
        None => kind.to_string(),
    }
}

#[cfg(test)]
mod authorization_policy_rules_tests;
#[cfg(test)]
mod certs_tests;
#[cfg(test)]
mod gateway_rules_tests;
#[cfg(test)]
mod routing_rules_tests;
#[cfg(test)]
mod tests;
