//! Istio objects read from the API server, as the sources the file
//! loader decodes: each object one JSON document (JSON is YAML) named
//! `kubernetes/<Kind>/<namespace>/<name>`, so every diagnostic names the
//! object it is about, and the same decoder, rules and merge apply to a
//! cluster's objects as to files.
use std::path::PathBuf;

use serde_json::{Map, Value, json};

/// The annotation kubectl keeps a whole copy of the object in.
pub(crate) const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// One object of an Istio kind, as the API server returned it.
#[derive(Clone, Debug, PartialEq)]
pub struct Object {
    /// `networking.istio.io/<version>`: the version it was read at.
    pub api_version: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// `metadata` as returned.
    pub metadata: Value,
    /// `spec` (null when the object has none).
    pub spec: Value,
}

/// The sources for `objects`, in Istio's order: oldest first by
/// `creationTimestamp`, then by namespace and name, as Istio sorts
/// configuration before it merges (the oldest of two conflicting
/// Gateways wins).
pub fn sources(objects: &[Object]) -> Vec<(PathBuf, String)> {
    let mut ordered: Vec<&Object> = objects.iter().collect();
    ordered.sort_by(|a, b| {
        (created(a), &a.namespace, &a.name).cmp(&(created(b), &b.namespace, &b.name))
    });
    ordered.into_iter().map(source).collect()
}

/// RFC 3339 in UTC, as the API server writes it, sorts as text.
fn created(object: &Object) -> &str {
    object
        .metadata
        .get("creationTimestamp")
        .and_then(Value::as_str)
        .unwrap_or("")
}

fn source(object: &Object) -> (PathBuf, String) {
    let path = PathBuf::from(format!(
        "kubernetes/{}/{}/{}",
        object.kind, object.namespace, object.name
    ));
    let document = json!({
        "apiVersion": object.api_version,
        "kind": object.kind,
        "metadata": metadata(&object.metadata),
        "spec": object.spec,
    });
    // Pretty: a diagnostic's line and column then point into a readable
    // document (`gateway` logs them; `kubectl get -o json` shows the same).
    let text = serde_json::to_string_pretty(&document).unwrap_or_default();
    (path, text)
}

/// What the decoder reads of `metadata`: the server's bookkeeping
/// (`managedFields`, kubectl's copy of the whole object) left out.
fn metadata(metadata: &Value) -> Value {
    let mut kept = Map::new();
    for field in [
        "name",
        "namespace",
        "labels",
        "annotations",
        "creationTimestamp",
        "generation",
    ] {
        if let Some(value) = metadata.get(field) {
            kept.insert(field.to_string(), value.clone());
        }
    }
    if let Some(Value::Object(annotations)) = kept.get_mut("annotations") {
        annotations.remove(LAST_APPLIED);
        if annotations.is_empty() {
            kept.remove("annotations");
        }
    }
    Value::Object(kept)
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use serde_json::json;

    use super::{Object, sources};
    use crate::config::load_sources;

    fn gateway(namespace: &str, name: &str, created: &str, host: &str) -> Object {
        Object {
            api_version: "networking.istio.io/v1beta1".into(),
            kind: "Gateway".into(),
            namespace: namespace.into(),
            name: name.into(),
            metadata: json!({
                "name": name,
                "namespace": namespace,
                "creationTimestamp": created,
                "resourceVersion": "7",
                "managedFields": [{"manager": "kubectl"}],
                "annotations": {"kubectl.kubernetes.io/last-applied-configuration": "{}"},
            }),
            spec: json!({
                "selector": {"istio": "ingressgateway"},
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": [host]}],
            }),
        }
    }

    #[test]
    fn objects_are_ordered_oldest_first_then_by_namespace_and_name() {
        let objects = [
            gateway("b", "z", "2026-01-02T00:00:00Z", "one.test"),
            gateway("b", "a", "2026-01-02T00:00:00Z", "two.test"),
            gateway("a", "z", "2026-01-02T00:00:00Z", "three.test"),
            gateway("c", "c", "2026-01-01T00:00:00Z", "four.test"),
        ];
        let paths: Vec<PathBuf> = sources(&objects)
            .into_iter()
            .map(|(path, _)| path)
            .collect();
        assert_eq!(
            paths,
            [
                "kubernetes/Gateway/c/c",
                "kubernetes/Gateway/a/z",
                "kubernetes/Gateway/b/a",
                "kubernetes/Gateway/b/z"
            ]
            .map(PathBuf::from)
        );
    }

    #[test]
    fn an_object_decodes_as_the_same_resource_a_file_would_hold() {
        let config = load_sources(&sources(&[gateway(
            "istio-system",
            "gw",
            "2026-01-01T00:00:00Z",
            "app.test",
        )]));
        assert!(config.diagnostics.is_empty(), "{:?}", config.diagnostics);
        let [gateway] = config.model.gateways.as_slice() else {
            panic!("one Gateway: {:?}", config.model.gateways);
        };
        assert_eq!(gateway.name, "gw");
        assert_eq!(gateway.namespace, "istio-system");
    }

    #[test]
    fn the_servers_bookkeeping_is_left_out() {
        let [(_, text)] = sources(&[gateway("ns", "gw", "2026-01-01T00:00:00Z", "a.test")])
            .try_into()
            .expect("one source");
        assert!(!text.contains("managedFields"), "{text}");
        assert!(!text.contains("last-applied"), "{text}");
        assert!(!text.contains("annotations"), "{text}");
        assert!(
            text.contains("\"creationTimestamp\": \"2026-01-01T00:00:00Z\""),
            "{text}"
        );
    }

    #[test]
    fn an_invalid_object_is_an_error_naming_it_and_the_others_still_load() {
        let mut broken = gateway("default", "broken", "2026-01-01T00:00:00Z", "b.test");
        broken.spec["servers"][0]["port"]["number"] = json!(70000);
        let config = load_sources(&sources(&[
            broken,
            gateway("default", "good", "2026-01-01T00:00:01Z", "g.test"),
        ]));
        let errors: Vec<String> = config.diagnostics.iter().map(ToString::to_string).collect();
        assert!(
            errors
                .iter()
                .any(|e| e.contains("kubernetes/Gateway/default/broken")),
            "{errors:?}"
        );
        assert_eq!(config.model.gateways.len(), 1);
        assert_eq!(config.model.gateways[0].name, "good");
    }
}
