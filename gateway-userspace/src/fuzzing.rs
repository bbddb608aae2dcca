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
        credentials_dir: Some(Path::new("/credentials")),
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

/// Any bytes through the YAML loader alone: it must return an error or
/// documents within its own limits, never panic, overflow the stack or
/// expand past them (libFuzzer's memory and time limits catch the rest).
pub fn yaml(data: &[u8]) {
    use crate::config::yaml::{self, MAX_DEPTH, MAX_DOCUMENT_NODES, Node, Value};
    let text = String::from_utf8_lossy(data);
    let _ = yaml::for_each_document(&text, |doc| {
        // (node, depth) pairs on an explicit stack: no recursion here either.
        let mut pending: Vec<(&Node, usize)> = vec![(&doc, 1)];
        let mut nodes = 0;
        while let Some((node, depth)) = pending.pop() {
            nodes += 1;
            assert!(depth <= MAX_DEPTH + 1, "depth {depth} past the limit");
            match &node.value {
                Value::Seq(items) => pending.extend(items.iter().map(|n| (n, depth + 1))),
                Value::Map(entries) => {
                    for (k, v) in entries {
                        pending.push((k, depth + 1));
                        pending.push((v, depth + 1));
                    }
                }
                _ => {}
            }
        }
        assert!(nodes <= MAX_DOCUMENT_NODES, "{nodes} nodes past the limit");
    });
}

#[cfg(test)]
mod tests {
    /// Runs `target` on every seed of `fuzz/corpus/<name>`; returns how many.
    fn run_seeds(name: &str, target: fn(&[u8])) -> usize {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../fuzz/corpus")
            .join(name);
        let mut seeds = 0;
        for entry in std::fs::read_dir(dir).expect("corpus") {
            target(&std::fs::read(entry.expect("entry").path()).expect("seed"));
            seeds += 1;
        }
        seeds
    }

    #[test]
    fn the_seed_corpus_passes_through_the_pipeline() {
        let seeds = run_seeds("config", super::config);
        assert!(seeds >= 4, "the committed corpus has {seeds} seeds");
    }

    #[test]
    fn the_yaml_seed_corpus_passes_through_the_loader() {
        let seeds = run_seeds("yaml", super::yaml);
        assert!(seeds >= 5, "the committed corpus has {seeds} seeds");
    }
}
