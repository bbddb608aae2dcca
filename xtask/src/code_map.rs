//! The code map of ARCHITECTURE.md held to the tree, as part of `cargo
//! xtask docs --check` (and so of `cargo xtask lint`): every product file of
//! the crates in [`CRATES`] is named in the map's subsection for its crate,
//! and every `.rs` file the map names exists.
//!
//! A product file is one the crate compiles outside tests: reached from a
//! crate root (`src/lib.rs`, `src/main.rs`, `src/bin/*.rs`) through `mod x;`
//! declarations that are not `#[cfg(test)]`, so `tests.rs`, `*_tests.rs`,
//! `properties.rs` and a test-only `fake.rs` need not be named (they may
//! be, in passing). A file is named by a code span (backticks) holding its
//! path below its top-level module's directory or its whole path under
//! `src/` (`config/gateway/tls.rs` as `gateway/tls.rs` or
//! `config/gateway/tls.rs`, `proxy/phases.rs` as `phases.rs`); a `mod.rs`
//! by its directory (`http/` or `proxy/http/`).
use std::{
    collections::BTreeSet,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

use crate::layers::module_declarations;

/// The document the map is in, relative to the workspace root.
const ARCHITECTURE: &str = "ARCHITECTURE.md";

/// The crates whose every product file the map names.
const CRATES: &[&str] = &[
    "gateway-common",
    "gateway-ebpf",
    "gateway-userspace",
    "xtask",
    "tests",
];

/// The problems between the code map and the tree, one sentence each.
pub(crate) fn check(root: &Path) -> anyhow::Result<Vec<String>> {
    let doc = std::fs::read_to_string(root.join(ARCHITECTURE))
        .with_context(|| format!("cannot read {ARCHITECTURE}"))?;
    let map = section(&doc)?;
    let mut problems = Vec::new();
    for krate in CRATES {
        let spans = subsection(&map, krate).map(|text| spans(&text));
        let Some(spans) = spans else {
            problems.push(format!(
                "{ARCHITECTURE}: the code map has no subsection for `{krate}` (a `###` heading naming it in backticks)"
            ));
            continue;
        };
        let src = root.join(krate).join("src");
        for file in product_files(&src)? {
            if !named(&file, &spans) {
                problems.push(format!(
                    "{krate}/src/{}: not in the code map of {ARCHITECTURE} (name it in backticks under `{krate}`, as `{}`)",
                    file.display(),
                    names(&file).first().map_or("", String::as_str)
                ));
            }
        }
    }
    for (dir, text) in subsections(&map) {
        let files = rust_files(&root.join(&dir))?;
        for span in spans(&text) {
            if span.ends_with(".rs")
                && !span.contains(['*', '<', ' '])
                && !files.iter().any(|file| ends_at_component(file, &span))
                && !root.join(&span).is_file()
            {
                problems.push(format!(
                    "{ARCHITECTURE}: the code map names `{span}` under `{dir}`, and no such file is there"
                ));
            }
        }
    }
    Ok(problems)
}

/// The text of the section under the `## Code map` heading.
fn section(doc: &str) -> anyhow::Result<String> {
    let mut lines = doc.lines().skip_while(|line| {
        !(line.starts_with("## ") && line.to_ascii_lowercase().contains("code map"))
    });
    if lines.next().is_none() {
        bail!("{ARCHITECTURE} has no \"## Code map\" heading");
    }
    Ok(lines
        .take_while(|line| !line.starts_with("## "))
        .collect::<Vec<_>>()
        .join("\n"))
}

/// The map's `###` subsections whose heading names something in its first
/// code span (a crate's directory): (that name, the text under it). A
/// `.rs` name in one is looked for under that directory, else from the
/// workspace root (`gateway-userspace/build.rs`).
fn subsections(map: &str) -> Vec<(String, String)> {
    let mut found: Vec<(String, String)> = Vec::new();
    for line in map.lines() {
        if let Some(heading) = line.strip_prefix("### ") {
            let name = heading.split('`').nth(1).unwrap_or("").to_owned();
            found.push((name, String::new()));
        } else if let Some((_, text)) = found.last_mut() {
            text.push_str(line);
            text.push('\n');
        }
    }
    found.retain(|(name, _)| !name.is_empty());
    found
}

/// The text under the `###` heading that names `krate` in backticks.
fn subsection(map: &str, krate: &str) -> Option<String> {
    subsections(map)
        .into_iter()
        .find(|(name, _)| name == krate)
        .map(|(_, text)| text)
}

/// The code spans of a piece of Markdown, whitespace collapsed (a span may
/// run over a line break).
fn spans(text: &str) -> Vec<String> {
    text.split('`')
        .skip(1)
        .step_by(2)
        .map(|span| span.split_whitespace().collect::<Vec<_>>().join(" "))
        .collect()
}

/// The ways the map may name `file` (a path relative to `src/`), the
/// shortest first.
fn names(file: &Path) -> Vec<String> {
    let parts: Vec<String> = file
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let mut names = Vec::new();
    if parts.last().is_some_and(|name| name == "mod.rs") && parts.len() >= 2 {
        let dirs = &parts[..parts.len() - 1];
        names.push(format!("{}/", dirs[dirs.len() - 1]));
        names.push(format!("{}/", dirs.join("/")));
    } else if parts.len() >= 2 {
        names.push(parts[1..].join("/"));
    }
    names.push(parts.join("/"));
    names.dedup();
    names
}

/// Whether a code span among `spans` names `file` (relative to `src/`).
fn named(file: &Path, spans: &[String]) -> bool {
    let names = names(file);
    spans.iter().any(|span| {
        names
            .iter()
            .any(|name| span == name || span.ends_with(&format!("/{name}")))
    })
}

/// Whether `path` ends with `tail`, cut at a path separator.
fn ends_at_component(path: &Path, tail: &str) -> bool {
    let path = path.to_string_lossy();
    path == tail || path.ends_with(&format!("/{tail}"))
}

/// Every `.rs` file under `dir` (relative to it), `target/` left out.
fn rust_files(dir: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found = Vec::new();
    let mut pending = vec![PathBuf::new()];
    while let Some(rel) = pending.pop() {
        let Ok(entries) = std::fs::read_dir(dir.join(&rel)) else {
            continue;
        };
        for entry in entries {
            let entry = entry?;
            let name = entry.file_name();
            let path = rel.join(&name);
            if entry.file_type()?.is_dir() {
                if name != "target" {
                    pending.push(path);
                }
            } else if path.extension().is_some_and(|ext| ext == "rs") {
                found.push(path);
            }
        }
    }
    Ok(found)
}

/// The crate's product files under `src` (relative to it): its roots and
/// every file a non-test `mod x;` declaration reaches from them.
pub(crate) fn product_files(src: &Path) -> anyhow::Result<BTreeSet<PathBuf>> {
    let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"]
        .iter()
        .map(PathBuf::from)
        .filter(|root| src.join(root).is_file())
        .collect();
    if let Ok(entries) = std::fs::read_dir(src.join("bin")) {
        for entry in entries {
            let name = PathBuf::from("bin").join(entry?.file_name());
            if name.extension().is_some_and(|ext| ext == "rs") {
                roots.push(name);
            } else if src.join(&name).join("main.rs").is_file() {
                roots.push(name.join("main.rs"));
            }
        }
    }
    if roots.is_empty() {
        bail!("{} has no lib.rs, main.rs or bin/", src.display());
    }
    let mut files = BTreeSet::new();
    // (file, whether it is a crate root)
    let mut pending: Vec<(PathBuf, bool)> = roots.into_iter().map(|root| (root, true)).collect();
    while let Some((file, root)) = pending.pop() {
        let text = std::fs::read_to_string(src.join(&file))
            .with_context(|| format!("cannot read {}", src.join(&file).display()))?;
        // Where its `mod x;` files are: beside a crate root or a `mod.rs`,
        // else in the directory named after the file.
        let dir = if root || file.file_name().is_some_and(|name| name == "mod.rs") {
            file.parent().map(Path::to_path_buf).unwrap_or_default()
        } else {
            file.with_extension("")
        };
        for child in module_declarations(&text) {
            let flat = dir.join(format!("{child}.rs"));
            let nested = dir.join(&child).join("mod.rs");
            let found = if src.join(&flat).is_file() {
                flat
            } else if src.join(&nested).is_file() {
                nested
            } else {
                bail!(
                    "{}: module `{child}` has neither {} nor {} (a `#[path]` is not followed)",
                    src.join(&file).display(),
                    flat.display(),
                    nested.display()
                );
            };
            pending.push((found, false));
        }
        files.insert(file);
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_is_named_by_its_path_below_its_top_level_module_or_under_src() {
        let tls = Path::new("config/gateway/tls.rs");
        assert!(named(tls, &spans("`gateway/tls.rs`")));
        assert!(named(tls, &spans("`config/gateway/tls.rs`")));
        assert!(named(
            tls,
            &spans("`gateway-userspace/src/config/gateway/tls.rs`")
        ));
        assert!(!named(tls, &spans("`tls.rs`, `gateway/`")));
        assert!(!named(tls, &spans("gateway/tls.rs outside a code span")));
        let phases = Path::new("proxy/phases.rs");
        assert!(named(phases, &spans("`phases.rs`")));
        assert!(!named(phases, &spans("`phases`, `my_phases.rs`")));
        assert!(named(Path::new("cli.rs"), &spans("`cli.rs`")));
        assert!(named(
            Path::new("bin/xdp-bench.rs"),
            &spans("`xdp-bench.rs`")
        ));
    }

    #[test]
    fn a_mod_rs_is_named_by_its_directory() {
        let http = Path::new("proxy/http/mod.rs");
        assert!(named(http, &spans("`http/` (forward, headers)")));
        assert!(named(http, &spans("`proxy/http/`")));
        assert!(named(http, &spans("`proxy/http/mod.rs`")));
        assert!(!named(http, &spans("`http`, `mod.rs`")));
        let proxy = Path::new("proxy/mod.rs");
        assert!(named(proxy, &spans("`proxy/`")));
        assert!(!named(proxy, &spans("`mod.rs`")));
    }

    #[test]
    fn a_code_span_may_run_over_a_line_break() {
        assert_eq!(
            spans("a `gateway\n  compile` b `x.rs`"),
            ["gateway compile", "x.rs"]
        );
    }

    const DOC: &str = "# A\n\n## Code map\n\nEvery file.\n\n\
        ### `gateway-common` (no_std)\n\n- `lib.rs`: re-exports; `host/`\n\n\
        ### `xtask`\n\n`main.rs`, `gone.rs`\n\n## Seams\n\n`later.rs`\n";

    #[test]
    fn the_map_is_the_section_under_its_heading_cut_by_crate() {
        let map = section(DOC).unwrap();
        assert!(!map.contains("later.rs"));
        let common = subsection(&map, "gateway-common").unwrap();
        assert_eq!(spans(&common), ["lib.rs", "host/"]);
        assert_eq!(
            spans(&subsection(&map, "xtask").unwrap()),
            ["main.rs", "gone.rs"]
        );
        assert!(subsection(&map, "tests").is_none());
        assert!(section("# A\n\nno map\n").is_err());
    }

    /// A crate in a scratch directory: `files` as (path under `src/`, text).
    fn scratch(name: &str, files: &[(&str, &str)]) -> PathBuf {
        let dir =
            std::env::temp_dir().join(format!("xtask-code-map-{name}-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        for (path, text) in files {
            let path = dir.join("src").join(path);
            std::fs::create_dir_all(path.parent().unwrap()).unwrap();
            std::fs::write(path, text).unwrap();
        }
        dir
    }

    #[test]
    fn product_files_follow_non_test_declarations_only() {
        let dir = scratch(
            "walk",
            &[
                ("lib.rs", "pub mod a;\nmod b;\n#[cfg(test)]\nmod tests;\n"),
                ("main.rs", "mod cli;\n"),
                ("cli.rs", ""),
                (
                    "a.rs",
                    "mod inner;\n#[cfg(test)]\n#[path = \"a_tests.rs\"]\nmod tests;\n",
                ),
                ("a/inner.rs", ""),
                ("a_tests.rs", ""),
                (
                    "b/mod.rs",
                    "mod c;\n#[cfg(test)]\npub mod fake;\nmod d {\n    fn f() {}\n}\n",
                ),
                ("b/c.rs", ""),
                ("b/fake.rs", ""),
                ("tests.rs", ""),
                ("bin/tool.rs", ""),
            ],
        );
        let files = product_files(&dir.join("src")).unwrap();
        let files: Vec<String> = files.iter().map(|f| f.display().to_string()).collect();
        assert_eq!(
            files,
            [
                "a/inner.rs",
                "a.rs",
                "b/c.rs",
                "b/mod.rs",
                "bin/tool.rs",
                "cli.rs",
                "lib.rs",
                "main.rs"
            ]
        );
        std::fs::remove_dir_all(dir).unwrap();
    }

    #[test]
    fn a_file_missing_from_the_map_and_a_file_the_map_invents_are_reported() {
        let crates: Vec<(String, Vec<(&str, &str)>)> = CRATES
            .iter()
            .map(|krate| {
                (
                    (*krate).to_owned(),
                    vec![
                        ("lib.rs", "mod kept;\nmod forgotten;\n"),
                        ("kept.rs", ""),
                        ("forgotten.rs", ""),
                    ],
                )
            })
            .collect();
        let root = std::env::temp_dir().join(format!("xtask-code-map-ws-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&root);
        let mut doc = String::from("# A\n\n## Code map\n\n");
        for (krate, files) in &crates {
            for (path, text) in files {
                let path = root.join(krate).join("src").join(path);
                std::fs::create_dir_all(path.parent().unwrap()).unwrap();
                std::fs::write(path, text).unwrap();
            }
            let extra = if krate == "xtask" {
                ", `forgotten.rs`, `gone.rs`"
            } else {
                ""
            };
            doc.push_str(&format!("### `{krate}`\n\n`lib.rs`, `kept.rs`{extra}\n\n"));
        }
        std::fs::write(root.join(ARCHITECTURE), doc).unwrap();
        let problems = check(&root).unwrap();
        let missing: Vec<&String> = problems
            .iter()
            .filter(|p| p.contains("forgotten.rs: not in the code map"))
            .collect();
        assert_eq!(missing.len(), CRATES.len() - 1, "{problems:#?}");
        assert!(
            missing[0].starts_with("gateway-common/src/forgotten.rs:"),
            "{problems:#?}"
        );
        assert!(
            problems
                .iter()
                .any(|p| p.contains("names `gone.rs` under `xtask`")),
            "{problems:#?}"
        );
        assert_eq!(problems.len(), CRATES.len(), "{problems:#?}");
        std::fs::remove_dir_all(root).unwrap();
    }

    #[test]
    fn the_workspace_map_names_every_product_file() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let problems = check(root).unwrap();
        assert!(problems.is_empty(), "{}", problems.join("\n"));
    }
}
