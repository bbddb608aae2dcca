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
}
