//! Reading Istio YAML: the only module that knows YAML. Produces
//! [`model`](crate::model) values plus every diagnostic, each pinned to
//! `PATH:LINE:COL`.
mod certs;
mod cipher_suites;
mod common;
mod decode;
mod destination_rule;
mod diagnostic;
mod gateway;
mod headers;
mod kube_service;
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
pub use rules::duration_millis;

use self::{decode::Decoder, yaml::Value};
use crate::model::Model;

/// Kinds of `networking.istio.io` the gateway reads.
const KINDS: &[&str] = &[
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
];
/// API group whose `v1`, `v1beta1` and `v1alpha3` versions are read alike.
const ISTIO_NETWORKING: &str = "networking.istio.io";
const ISTIO_VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

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
/// `credentials_dir` (`None`: the default search, see [`Environment`]) and
/// files up to `max_file_bytes`.
pub fn load_from_disk(
    paths: &[PathBuf],
    credentials_dir: Option<&Path>,
    max_file_bytes: u64,
) -> Result<Config, ConfigError> {
    load_paths(
        paths,
        max_file_bytes,
        &Environment {
            files: &Disk,
            credentials_dir,
        },
    )
}

/// Reads files and directories (recursively, `*.yaml` / `*.yml`, in sorted
/// order, each file once however many paths lead to it), checking the
/// certificate files they name through `env`. A path on the command line
/// that does not exist is an error; every other problem with a file (not a
/// regular file, too large, unreadable, not UTF-8) is a diagnostic and the
/// file is skipped.
pub fn load_paths(
    paths: &[PathBuf],
    max_file_bytes: u64,
    env: &Environment<'_>,
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
    let mut config = load_sources_with(&sources, Some(env));
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
    load_sources_with(sources, None)
}

/// Decodes already-read sources, checking certificate files through `env` if given.
pub fn load_sources_with(sources: &[(PathBuf, String)], env: Option<&Environment<'_>>) -> Config {
    let mut config = Config::default();
    // (kind, namespace, name) -> where it was first defined.
    let mut seen: BTreeMap<(String, String, String), (PathBuf, usize, usize)> = BTreeMap::new();
    for (file, text) in sources {
        let parsed = yaml::for_each_document(text, |doc| {
            load_document(file, &doc, env, &mut seen, &mut config);
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
    diagnostic::sort_by_position(&mut config.diagnostics);
    config
}

fn load_document(
    file: &Path,
    doc: &yaml::Node,
    env: Option<&Environment<'_>>,
    seen: &mut BTreeMap<(String, String, String), (PathBuf, usize, usize)>,
    config: &mut Config,
) {
    if doc.value == Value::Null {
        return;
    }
    let mut d = Decoder::new(file, env);
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
    let istio = api_version.split_once('/').is_some_and(|(group, version)| {
        group == ISTIO_NETWORKING && ISTIO_VERSIONS.contains(&version)
    });
    if api_version == "v1" && kind == "Service" {
        d.report(Severity::Warning, doc, "", kube_service::warning(doc));
        config.diagnostics.append(&mut d.diagnostics);
        return;
    }
    if !istio || !KINDS.contains(&kind.as_str()) {
        d.report(
            Severity::Note,
            doc,
            "",
            format!("{kind} ({api_version}) is not served by this gateway yet; skipped"),
        );
        config.diagnostics.append(&mut d.diagnostics);
        return;
    }
    let Some((namespace, name)) = gateway::identity(&mut d, doc) else {
        config.diagnostics.append(&mut d.diagnostics);
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
    if let Some((first_file, line, col)) = seen.get(&key) {
        let message = format!(
            "duplicate {kind} {namespace}/{name}: first defined at {}:{line}:{col}",
            first_file.display()
        );
        d.error(name_node, "metadata.name", message);
    } else {
        seen.insert(key, (file.to_path_buf(), name_node.line, name_node.col));
    }
    let mut model = Model::default();
    match kind.as_str() {
        "Gateway" => {
            model
                .gateways
                .extend(gateway::decode(&mut d, doc, namespace, name));
        }
        "VirtualService" => {
            let created = gateway::creation_timestamp(&mut d, doc);
            model.virtual_services.extend(virtual_service::decode(
                &mut d, doc, namespace, name, created,
            ));
        }
        "DestinationRule" => {
            model
                .destination_rules
                .extend(destination_rule::decode(&mut d, doc, namespace, name));
        }
        _ => {
            model
                .service_entries
                .extend(service_entry::decode(&mut d, doc, namespace, name));
        }
    }
    if !d.has_errors() {
        let target = &mut config.model;
        target.gateways.append(&mut model.gateways);
        target.virtual_services.append(&mut model.virtual_services);
        target
            .destination_rules
            .append(&mut model.destination_rules);
        target.service_entries.append(&mut model.service_entries);
    }
    config.diagnostics.append(&mut d.diagnostics);
}

#[cfg(test)]
mod certs_tests;
#[cfg(test)]
mod gateway_rules_tests;
#[cfg(test)]
mod routing_rules_tests;
#[cfg(test)]
mod tests;
