//! Entry points for the fuzz targets in `fuzz/`: kept here so the targets
//! stay one line and the logic is type-checked with the rest of the crate.
use std::path::{Path, PathBuf};

use crate::{
    compile,
    config::{self, Environment, MemoryFiles},
    model::Instance,
    report,
};

/// Any bytes as Istio YAML: load, validate, compile and render the plan.
/// Panics only if the pipeline has a bug.
pub fn config(data: &[u8]) {
    let text = String::from_utf8_lossy(data).into_owned();
    let files = MemoryFiles::default();
    let env = Environment {
        files: &files,
        credentials_dir: Path::new("/credentials"),
    };
    let loaded = config::load_sources_with(&[(PathBuf::from("fuzz.yaml"), text)], Some(&env));
    for diagnostic in &loaded.diagnostics {
        let _ = diagnostic.to_string();
    }
    if let Ok(plan) = compile::plan(&loaded.model, &Instance::default(), &[]) {
        let _ = report::table(&plan);
        let _ = report::json(&plan);
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_seed_corpus_passes_through_the_pipeline() {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../fuzz/corpus/config");
        let mut seeds = 0;
        for entry in std::fs::read_dir(dir).expect("corpus") {
            super::config(&std::fs::read(entry.expect("entry").path()).expect("seed"));
            seeds += 1;
        }
        assert!(seeds >= 4, "the committed corpus has {seeds} seeds");
    }
}
