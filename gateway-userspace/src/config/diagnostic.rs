//! Problems found in the configuration, pinned to where they were written.
use std::{fmt, path::PathBuf};

/// How bad a diagnostic is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Severity {
    /// The resource (or the part named) cannot be served.
    Error,
    /// Served, but probably not what the author meant.
    Warning,
    /// Information, such as a resource kind that is skipped.
    Note,
}

/// One problem, printed as
/// `PATH:LINE:COL: error|warning: <Kind> <namespace>/<name>: <field path>: <message>`,
/// or `PATH: error|warning: <message>` for a file as a whole (line 0).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Diagnostic {
    pub severity: Severity,
    pub file: PathBuf,
    pub line: usize,
    pub col: usize,
    /// `<Kind> <namespace>/<name>`, empty when the problem is outside any resource.
    pub resource: String,
    /// Dotted field path such as `spec.servers[0].port.protocol`; empty for the whole document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let severity = match self.severity {
            Severity::Error => "error",
            Severity::Warning => "warning",
            Severity::Note => "note",
        };
        // Line 0: about the file as a whole (unreadable, too large).
        if self.line == 0 {
            write!(f, "{}: {severity}: ", self.file.display())?;
        } else {
            write!(
                f,
                "{}:{}:{}: {severity}: ",
                self.file.display(),
                self.line,
                self.col
            )?;
        }
        if !self.resource.is_empty() {
            write!(f, "{}: ", self.resource)?;
        }
        if !self.field.is_empty() {
            write!(f, "{}: ", self.field)?;
        }
        f.write_str(&self.message)
    }
}

/// Orders diagnostics by (file, line, column) so they read top to bottom
/// however the checks that found them were ordered; ties keep their order.
pub(super) fn sort_by_position(diagnostics: &mut [Diagnostic]) {
    diagnostics.sort_by(|a, b| (&a.file, a.line, a.col).cmp(&(&b.file, b.line, b.col)));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_follows_compiler_style() {
        let diagnostic = Diagnostic {
            severity: Severity::Error,
            file: PathBuf::from("examples/seed.yaml"),
            line: 52,
            col: 9,
            resource: "Gateway default/istio-gateway".into(),
            field: "spec.servers[0].port.protocol".into(),
            message: "invalid protocol \"\"".into(),
        };
        assert_eq!(
            diagnostic.to_string(),
            "examples/seed.yaml:52:9: error: Gateway default/istio-gateway: spec.servers[0].port.protocol: invalid protocol \"\""
        );
    }

    fn at(file: &str, line: usize, col: usize, message: &str) -> Diagnostic {
        Diagnostic {
            severity: Severity::Error,
            file: PathBuf::from(file),
            line,
            col,
            resource: String::new(),
            field: String::new(),
            message: message.into(),
        }
    }

    #[test]
    fn sorting_follows_file_line_and_column_and_keeps_ties_in_order() {
        let mut diagnostics = vec![
            at("b.yaml", 1, 1, "b"),
            at("a.yaml", 36, 9, "later line"),
            at("a.yaml", 35, 9, "first tie"),
            at("a.yaml", 35, 2, "earlier column"),
            at("a.yaml", 35, 9, "second tie"),
            at("a.yaml", 0, 0, "whole file"),
        ];
        sort_by_position(&mut diagnostics);
        let order: Vec<&str> = diagnostics.iter().map(|d| d.message.as_str()).collect();
        assert_eq!(
            order,
            [
                "whole file",
                "earlier column",
                "first tie",
                "second tie",
                "later line",
                "b"
            ]
        );
    }
}
