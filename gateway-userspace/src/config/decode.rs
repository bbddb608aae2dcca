//! Typed access to [`Node`]s that records a positioned diagnostic for
//! every problem instead of stopping at the first.
use std::path::Path;

use super::{
    certs::Environment,
    diagnostic::{Diagnostic, Severity},
    yaml::{Node, Value},
};

/// Decodes one resource, collecting diagnostics.
pub(super) struct Decoder<'a> {
    file: &'a Path,
    /// Certificate files and credentials; `None` skips file checks (pure decoding).
    pub env: Option<&'a Environment<'a>>,
    /// `<Kind> <namespace>/<name>`, once known.
    pub resource: String,
    pub diagnostics: Vec<Diagnostic>,
}

impl<'a> Decoder<'a> {
    /// `file:line` of `node`.
    pub(super) fn position(&self, node: &Node) -> String {
        format!("{}:{}", self.file.display(), node.line)
    }

    pub(super) fn new(file: &'a Path, env: Option<&'a Environment<'a>>) -> Self {
        Decoder {
            file,
            env,
            resource: String::new(),
            diagnostics: Vec::new(),
        }
    }

    /// The configuration file being decoded.
    pub(super) fn file(&self) -> &'a Path {
        self.file
    }

    pub(super) fn report(&mut self, severity: Severity, node: &Node, field: &str, message: String) {
        self.diagnostics.push(Diagnostic {
            severity,
            file: self.file.to_path_buf(),
            line: node.line,
            col: node.col,
            resource: self.resource.clone(),
            field: field.to_string(),
            message,
        });
    }

    pub(super) fn error(&mut self, node: &Node, field: &str, message: impl Into<String>) {
        self.report(Severity::Error, node, field, message.into());
    }

    /// Number of errors reported so far; compare before and after a step
    /// to tell whether that step failed.
    pub(super) fn error_count(&self) -> usize {
        self.diagnostics
            .iter()
            .filter(|d| d.severity == Severity::Error)
            .count()
    }

    /// Turns the errors reported since there were `before` into warnings
    /// that `what` is not served, returning the first one's message: a
    /// credential that cannot be read yet disables what names it, not the
    /// resource (Kubernetes mode, where a Secret may come later).
    pub(super) fn demote_errors_since(&mut self, before: usize, what: &str) -> Option<String> {
        let mut reason = None;
        let errors = self
            .diagnostics
            .iter_mut()
            .filter(|d| d.severity == Severity::Error);
        for diagnostic in errors.skip(before) {
            diagnostic.severity = Severity::Warning;
            diagnostic.message = format!("{what} not served: {}", diagnostic.message);
            reason.get_or_insert_with(|| diagnostic.message.clone());
        }
        reason
    }

    pub(super) fn has_errors(&self) -> bool {
        self.diagnostics
            .iter()
            .any(|d| d.severity == Severity::Error)
    }

    /// The entries of a mapping; warns about keys not in `known` so typos
    /// do not pass silently. Null counts as an empty mapping.
    pub(super) fn mapping<'n>(
        &mut self,
        node: &'n Node,
        path: &str,
        known: &[&str],
    ) -> Option<&'n [(Node, Node)]> {
        match &node.value {
            Value::Map(entries) => {
                for (index, (key, _)) in entries.iter().enumerate() {
                    let duplicate = entries[..index]
                        .iter()
                        .any(|(earlier, _)| earlier.value == key.value);
                    if duplicate {
                        let name = match &key.value {
                            Value::Str(name) => name.clone(),
                            _ => String::from("(non-string key)"),
                        };
                        self.error(key, &join(path, &name), format!("duplicate key {name}"));
                        continue;
                    }
                    match &key.value {
                        Value::Str(name) if known.contains(&name.as_str()) => {}
                        Value::Str(name) => {
                            let field = join(path, name);
                            self.report(
                                Severity::Warning,
                                key,
                                &field,
                                "unknown field, ignored".to_string(),
                            );
                        }
                        _ => self.error(key, path, "mapping keys must be strings"),
                    }
                }
                Some(entries)
            }
            Value::Null => Some(&[]),
            _ => self.type_error(node, path, "a mapping"),
        }
    }

    pub(super) fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        match &node.value {
            Value::Str(s) => Some(s.clone()),
            _ => self.type_error(node, path, "a string"),
        }
    }

    pub(super) fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        match &node.value {
            Value::Bool(b) => Some(*b),
            _ => self.type_error(node, path, "true or false"),
        }
    }

    pub(super) fn integer(&mut self, node: &Node, path: &str) -> Option<i64> {
        match &node.value {
            Value::Int(i) => Some(*i),
            _ => self.type_error(node, path, "an integer"),
        }
    }

    pub(super) fn sequence<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.value {
            Value::Seq(items) => Some(items),
            Value::Null => Some(&[]),
            _ => self.type_error(node, path, "a list"),
        }
    }

    /// An optional string field; empty counts as absent.
    pub(super) fn opt_string(
        &mut self,
        entries: &[(Node, Node)],
        name: &str,
        path: &str,
    ) -> Option<String> {
        field(entries, name)
            .and_then(|n| self.string(n, &join(path, name)))
            .filter(|s| !s.is_empty())
    }

    /// An optional boolean field, false when absent.
    pub(super) fn flag(&mut self, entries: &[(Node, Node)], name: &str, path: &str) -> bool {
        field(entries, name)
            .and_then(|n| self.boolean(n, &join(path, name)))
            .unwrap_or(false)
    }

    /// An optional list of strings.
    pub(super) fn string_list(
        &mut self,
        entries: &[(Node, Node)],
        name: &str,
        path: &str,
    ) -> Vec<String> {
        let Some(node) = field(entries, name) else {
            return Vec::new();
        };
        let list_path = join(path, name);
        let items = self.sequence(node, &list_path).unwrap_or_default();
        items
            .iter()
            .enumerate()
            .filter_map(|(i, node)| self.string(node, &item(&list_path, i)))
            .collect()
    }

    /// The items of an optional list field, each with its path.
    pub(super) fn items<'n>(
        &mut self,
        entries: &'n [(Node, Node)],
        name: &str,
        path: &str,
    ) -> Vec<(String, &'n Node)> {
        let Some(node) = field(entries, name) else {
            return Vec::new();
        };
        let list_path = join(path, name);
        self.sequence(node, &list_path)
            .unwrap_or_default()
            .iter()
            .enumerate()
            .map(|(i, node)| (item(&list_path, i), node))
            .collect()
    }

    /// Records "expected X, found Y" and yields nothing.
    fn type_error<T>(&mut self, node: &Node, path: &str, expected: &str) -> Option<T> {
        self.error(
            node,
            path,
            format!("expected {expected}, found {}", node.type_name()),
        );
        None
    }
}

/// `path.field`, or `field` at the top level.
pub(super) fn join(path: &str, field: &str) -> String {
    if path.is_empty() {
        return field.to_string();
    }
    // Built by hand: paths are made for every field of every document, and
    // the formatting machinery was a tenth of loading a large configuration.
    let mut joined = String::with_capacity(path.len() + 1 + field.len());
    joined.push_str(path);
    joined.push('.');
    joined.push_str(field);
    joined
}

/// `path[index]`, the path of a list item.
pub(super) fn item(path: &str, index: usize) -> String {
    let mut digits = [0u8; 20];
    let mut at = digits.len();
    let mut rest = index;
    loop {
        at -= 1;
        digits[at] = b'0' + (rest % 10) as u8;
        rest /= 10;
        if rest == 0 {
            break;
        }
    }
    let mut out = String::with_capacity(path.len() + 2 + digits.len() - at);
    out.push_str(path);
    out.push('[');
    for digit in &digits[at..] {
        out.push(char::from(*digit));
    }
    out.push(']');
    out
}

/// The value of `key` among mapping entries.
pub(super) fn field<'n>(entries: &'n [(Node, Node)], key: &str) -> Option<&'n Node> {
    entries
        .iter()
        .find(|(k, _)| matches!(&k.value, Value::Str(s) if s == key))
        .map(|(_, v)| v)
}

#[cfg(test)]
mod path_tests {
    use super::{item, join};

    #[test]
    fn paths_join_fields_and_index_items() {
        assert_eq!(join("", "spec"), "spec");
        assert_eq!(join("spec", "hosts"), "spec.hosts");
        assert_eq!(item("spec.hosts", 0), "spec.hosts[0]");
        assert_eq!(item("spec.hosts", 10), "spec.hosts[10]");
        assert_eq!(item("x", 19_999), "x[19999]");
        assert_eq!(item("x", usize::MAX), format!("x[{}]", usize::MAX));
    }
}
