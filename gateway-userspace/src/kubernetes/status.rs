//! What each resource read from the cluster gets written back as its
//! `status`, so `kubectl get gateway -o yaml` says why a host is a 404
//! without the logs. Pure: built from a load's diagnostics and its plan.
//!
//! The shape is Istio's `IstioStatus` (`istio.meta.v1alpha1`):
//! `observedGeneration`, `conditions` (one, `Accepted`) and
//! `validationMessages` (`level`, `type.name`), each message also carrying
//! a `message` with the field and the reason (Istio's analysis messages
//! keep theirs in istioctl; the CRDs preserve unknown status fields).
use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::{
    config::{Diagnostic, Severity},
    plan::Plan,
};

/// A resource by kind, namespace and name.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ResourceKey {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

impl std::fmt::Display for ResourceKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{} {}/{}", self.kind, self.namespace, self.name)
    }
}

/// One thing said about a resource.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Finding {
    pub level: Level,
    /// What kind of finding: `InvalidResource`, `ConfigWarning`,
    /// `ServerNotServed`, `RouteNotServedAsWritten`.
    pub type_name: &'static str,
    pub message: String,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Error,
    Warning,
}

impl Level {
    fn name(self) -> &'static str {
        match self {
            Self::Error => "ERROR",
            Self::Warning => "WARNING",
        }
    }
}

/// What one resource's status says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    /// `metadata.generation` of the object the load read.
    pub generation: Option<i64>,
    pub findings: Vec<Finding>,
}

impl Report {
    /// Whether the resource is served: it has no error (a resource with
    /// one is skipped whole).
    pub fn accepted(&self) -> bool {
        !self.findings.iter().any(|f| f.level == Level::Error)
    }

    /// The `status` object; `since` is when `Accepted` last changed.
    pub fn status(&self, since: &str) -> Value {
        let count = |level| self.findings.iter().filter(|f| f.level == level).count();
        let (errors, warnings) = (count(Level::Error), count(Level::Warning));
        let (status, reason, message) = if errors > 0 {
            (
                "False",
                "Invalid",
                format!("skipped: {errors} error(s); the rest of the configuration is served"),
            )
        } else if warnings > 0 {
            (
                "True",
                "AcceptedWithWarnings",
                format!("served, with {warnings} warning(s)"),
            )
        } else {
            ("True", "Accepted", "served".to_string())
        };
        let messages: Vec<Value> = self
            .findings
            .iter()
            .map(|f| {
                json!({
                    "level": f.level.name(),
                    "type": {"name": f.type_name},
                    "message": f.message,
                })
            })
            .collect();
        json!({
            "observedGeneration": self.generation,
            "conditions": [{
                "type": "Accepted",
                "status": status,
                "reason": reason,
                "message": message,
                "lastTransitionTime": since,
            }],
            "validationMessages": messages,
        })
    }
}

/// The report of every resource in `read` (each with the generation the
/// load read): the load's diagnostics about it, the servers the plan left
/// out of it, and the plan's warnings that name it.
pub fn reports(
    read: &BTreeMap<ResourceKey, Option<i64>>,
    diagnostics: &[Diagnostic],
    plan: Option<&Plan>,
) -> BTreeMap<ResourceKey, Report> {
    let mut reports: BTreeMap<ResourceKey, Report> = read
        .iter()
        .map(|(key, generation)| {
            let report = Report {
                generation: *generation,
                findings: Vec::new(),
            };
            (key.clone(), report)
        })
        .collect();
    for diagnostic in diagnostics {
        let Some(key) = key_of_source(&diagnostic.file) else {
            continue;
        };
        let (level, type_name) = match diagnostic.severity {
            Severity::Error => (Level::Error, "InvalidResource"),
            Severity::Warning => (Level::Warning, "ConfigWarning"),
            Severity::Note => continue,
        };
        if let Some(report) = reports.get_mut(&key) {
            let message = if diagnostic.field.is_empty() {
                diagnostic.message.clone()
            } else {
                format!("{}: {}", diagnostic.field, diagnostic.message)
            };
            report.findings.push(Finding {
                level,
                type_name,
                message,
            });
        }
    }
    let Some(plan) = plan else {
        return reports;
    };
    for dropped in &plan.dropped {
        let Some((namespace, name)) = dropped.gateway.split_once('/') else {
            continue;
        };
        let key = ResourceKey {
            kind: "Gateway".into(),
            namespace: namespace.into(),
            name: name.into(),
        };
        let Some(report) = reports.get_mut(&key) else {
            continue;
        };
        // A server dropped for its credential was said by the load already.
        if report
            .findings
            .iter()
            .any(|f| f.message.ends_with(&dropped.reason))
        {
            continue;
        }
        report.findings.push(Finding {
            level: Level::Warning,
            type_name: "ServerNotServed",
            message: format!(
                "spec.servers[{}] not served: {}",
                dropped.server, dropped.reason
            ),
        });
    }
    for warning in &plan.warnings {
        let Some((key, rest)) = key_of_warning(warning) else {
            continue;
        };
        if let Some(report) = reports.get_mut(&key) {
            report.findings.push(Finding {
                level: Level::Warning,
                type_name: "RouteNotServedAsWritten",
                message: rest.to_string(),
            });
        }
    }
    reports
}

/// The resource a source named `kubernetes/<Kind>/<namespace>/<name>` is.
fn key_of_source(file: &std::path::Path) -> Option<ResourceKey> {
    let parts: Vec<&str> = file.iter().filter_map(|p| p.to_str()).collect();
    match parts.as_slice() {
        ["kubernetes", kind, namespace, name] => Some(ResourceKey {
            kind: (*kind).to_string(),
            namespace: (*namespace).to_string(),
            name: (*name).to_string(),
        }),
        _ => None,
    }
}

/// The resource a plan warning starts with (`VirtualService ns/name
/// spec.http[0]: ...`), and the rest of the warning.
fn key_of_warning(warning: &str) -> Option<(ResourceKey, &str)> {
    let (kind, rest) = warning.split_once(' ')?;
    if !matches!(
        kind,
        "Gateway" | "VirtualService" | "DestinationRule" | "ServiceEntry"
    ) {
        return None;
    }
    let end = rest.find([' ', ':']).unwrap_or(rest.len());
    let (namespace, name) = rest[..end].split_once('/')?;
    let key = ResourceKey {
        kind: kind.to_string(),
        namespace: namespace.to_string(),
        name: name.to_string(),
    };
    Some((key, rest[end..].trim_start_matches([' ', ':'])))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use super::*;
    use crate::plan::DroppedServer;

    fn key(kind: &str, namespace: &str, name: &str) -> ResourceKey {
        ResourceKey {
            kind: kind.into(),
            namespace: namespace.into(),
            name: name.into(),
        }
    }

    fn diagnostic(severity: Severity, file: &str, field: &str, message: &str) -> Diagnostic {
        Diagnostic {
            severity,
            file: PathBuf::from(file),
            line: 3,
            col: 1,
            resource: String::new(),
            field: field.into(),
            message: message.into(),
        }
    }

    #[test]
    fn each_resource_gets_its_own_diagnostics_dropped_servers_and_route_warnings() {
        let read = BTreeMap::from([
            (key("Gateway", "istio-system", "gw"), Some(2)),
            (key("Gateway", "default", "broken"), Some(1)),
            (key("VirtualService", "apps", "r"), Some(7)),
            (key("DestinationRule", "apps", "quiet"), None),
        ]);
        let diagnostics = [
            diagnostic(
                Severity::Error,
                "kubernetes/Gateway/default/broken",
                "spec.servers[0].port.number",
                "70000 is not a port",
            ),
            diagnostic(
                Severity::Note,
                "kubernetes/VirtualService/apps/r",
                "",
                "a note",
            ),
            diagnostic(
                Severity::Warning,
                "gateway.yaml",
                "",
                "not from the cluster",
            ),
        ];
        let plan = Plan {
            dropped: vec![DroppedServer {
                gateway: "istio-system/gw".into(),
                server: 1,
                reason: "server not served: Secret istio-system/web not found".into(),
            }],
            warnings: vec![
                "VirtualService apps/r spec.http[0]: no Kubernetes Service or ServiceEntry declares host api.apps.svc.cluster.local; requests routed there get 503".into(),
                "UDP on port 53: nothing serves it".into(),
            ],
            ..Plan::default()
        };
        let reports = reports(&read, &diagnostics, Some(&plan));
        let broken = &reports[&key("Gateway", "default", "broken")];
        assert!(!broken.accepted());
        assert_eq!(
            broken.findings[0].message,
            "spec.servers[0].port.number: 70000 is not a port"
        );
        let gw = &reports[&key("Gateway", "istio-system", "gw")];
        assert!(gw.accepted());
        assert_eq!(
            gw.findings[0].message,
            "spec.servers[1] not served: server not served: Secret istio-system/web not found"
        );
        let route = &reports[&key("VirtualService", "apps", "r")];
        assert_eq!(route.findings.len(), 1, "the note is not a finding");
        assert_eq!(
            route.findings[0].message,
            "spec.http[0]: no Kubernetes Service or ServiceEntry declares host api.apps.svc.cluster.local; requests routed there get 503"
        );
        assert!(
            reports[&key("DestinationRule", "apps", "quiet")]
                .findings
                .is_empty()
        );
    }

    #[test]
    fn the_status_says_accepted_or_skipped_with_each_message_and_the_generation_read() {
        let skipped = Report {
            generation: Some(4),
            findings: vec![Finding {
                level: Level::Error,
                type_name: "InvalidResource",
                message: "spec.hosts: required".into(),
            }],
        };
        let status = skipped.status("2026-12-07T10:00:00Z");
        assert_eq!(status["observedGeneration"], 4);
        assert_eq!(status["conditions"][0]["status"], "False");
        assert_eq!(status["conditions"][0]["reason"], "Invalid");
        assert_eq!(
            status["conditions"][0]["lastTransitionTime"],
            "2026-12-07T10:00:00Z"
        );
        assert_eq!(status["validationMessages"][0]["level"], "ERROR");
        assert_eq!(
            status["validationMessages"][0]["type"]["name"],
            "InvalidResource"
        );
        assert_eq!(
            status["validationMessages"][0]["message"],
            "spec.hosts: required"
        );
        let clean = Report {
            generation: Some(1),
            findings: Vec::new(),
        };
        assert_eq!(clean.status("t")["conditions"][0]["reason"], "Accepted");
        assert_eq!(clean.status("t")["conditions"][0]["message"], "served");
        assert_eq!(clean.status("t")["validationMessages"], json!([]));
        let warned = Report {
            generation: Some(1),
            findings: vec![Finding {
                level: Level::Warning,
                type_name: "ConfigWarning",
                message: "spec.hosts[0]: unusual".into(),
            }],
        };
        let status = warned.status("t");
        assert_eq!(status["conditions"][0]["status"], "True");
        assert_eq!(status["conditions"][0]["reason"], "AcceptedWithWarnings");
        assert_eq!(
            status["conditions"][0]["message"],
            "served, with 1 warning(s)"
        );
        assert_eq!(status["validationMessages"][0]["level"], "WARNING");
        assert_eq!(key("Gateway", "ns", "gw").to_string(), "Gateway ns/gw");
    }

    #[test]
    fn only_sources_and_warnings_that_name_a_resource_are_attributed() {
        assert_eq!(
            key_of_source(std::path::Path::new("kubernetes/Gateway/ns/gw")),
            Some(key("Gateway", "ns", "gw"))
        );
        assert_eq!(key_of_source(std::path::Path::new("gateway.yaml")), None);
        assert_eq!(
            key_of_warning("Gateway ns/gw at t.yaml:3: x"),
            Some((key("Gateway", "ns", "gw"), "at t.yaml:3: x"))
        );
        assert_eq!(key_of_warning("Listener 80: x"), None);
        assert_eq!(key_of_warning("VirtualService nonamespace: x"), None);
    }
}
