//! `cargo xtask layers`: the module layering of gateway-userspace, checked
//! against the table under the "Layers" heading of ARCHITECTURE.md, so the
//! document and the check cannot disagree.
//!
//! The library's top-level modules are the `mod` declarations of `lib.rs`;
//! their files are found by following non-test `mod x;` declarations, so
//! `#[cfg(test)]` modules (inline or in their own file) and `testdata` are
//! never read. In each file, every path that names a top-level module is an
//! edge: `use crate::...` (grouped, nested, over several lines, `pub use`),
//! `crate::x::` anywhere in code, and `super::` chains that climb out of the
//! module. The binary (`main.rs` and the modules it declares) sits above
//! every layer and sees the library only through its public API, so it is
//! not read.
//!
//! The check fails on a cycle between top-level modules, on an edge from a
//! module to one in the same or a higher layer, and on a module the table
//! does not place.
use std::{
    collections::{BTreeMap, BTreeSet},
    fmt,
    path::{Path, PathBuf},
};

use anyhow::{Context as _, bail};

/// Where the layer table lives, relative to the workspace root.
const ARCHITECTURE: &str = "ARCHITECTURE.md";
/// The crate whose modules are layered.
const SOURCE: &str = "gateway-userspace/src";

/// Checks the layering and prints every offending edge with its file and line.
pub(crate) fn run(root: &Path) -> anyhow::Result<()> {
    let doc = std::fs::read_to_string(root.join(ARCHITECTURE))
        .with_context(|| format!("cannot read {ARCHITECTURE}"))?;
    let layers = parse_layers(&doc)?;
    let src = root.join(SOURCE);
    let (modules, files) = library_files(&src)?;
    let mut edges = Vec::new();
    for (file, module_path) in &files {
        let text = std::fs::read_to_string(file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        let shown = file
            .strip_prefix(root)
            .unwrap_or(file)
            .display()
            .to_string();
        for (to, line) in imports(&text, module_path, &modules) {
            edges.push(Edge {
                from: module_path[0].clone(),
                to,
                file: shown.clone(),
                line,
            });
        }
    }
    let problems = check(&layers, &modules, &edges);
    if problems.is_empty() {
        println!(
            "layers: {} modules, {} cross-module imports in {} files, no cycle and none against the layer order of {ARCHITECTURE}",
            modules.len(),
            edges.len(),
            files.len()
        );
        return Ok(());
    }
    for problem in &problems {
        println!("{problem}");
    }
    bail!(
        "{} layering problem(s) in {SOURCE} (layer order: the \"Layers\" table of {ARCHITECTURE})",
        problems.len()
    )
}

/// One path from a file of module `from` naming module `to`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Edge {
    pub(crate) from: String,
    pub(crate) to: String,
    pub(crate) file: String,
    pub(crate) line: usize,
}

impl fmt::Display for Edge {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "{}:{}: {} -> {}",
            self.file, self.line, self.from, self.to
        )
    }
}

/// What is wrong with the layering.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Problem {
    /// A top-level module the table does not place.
    Unknown(String),
    /// An import of a module in the same or a higher layer.
    Upward {
        edge: Edge,
        from_layer: u32,
        to_layer: u32,
    },
    /// Modules that import each other, directly or round a loop, with the
    /// edges that close it.
    Cycle {
        modules: Vec<String>,
        edges: Vec<Edge>,
    },
}

impl fmt::Display for Problem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Unknown(module) => write!(
                f,
                "module `{module}` is in no layer of the {ARCHITECTURE} table"
            ),
            Self::Upward {
                edge,
                from_layer,
                to_layer,
            } => {
                let how = if from_layer == to_layer {
                    "the same layer"
                } else {
                    "a higher layer"
                };
                write!(
                    f,
                    "{edge}: imports {how} ({} is layer {from_layer}, {} is layer {to_layer})",
                    edge.from, edge.to
                )
            }
            Self::Cycle { modules, edges } => {
                write!(f, "cycle between {}:", modules.join(", "))?;
                for edge in edges {
                    write!(f, "\n    {edge}")?;
                }
                Ok(())
            }
        }
    }
}

/// Module name -> layer number, from the first table after a heading that
/// names "Layers": the first cell starts with the layer's number, the second
/// lists its modules in backticks.
pub(crate) fn parse_layers(doc: &str) -> anyhow::Result<BTreeMap<String, u32>> {
    let mut lines = doc.lines().skip_while(|line| {
        !(line.starts_with('#') && line.to_ascii_lowercase().contains("layers"))
    });
    if lines.next().is_none() {
        bail!("{ARCHITECTURE} has no heading naming \"Layers\"");
    }
    let mut layers = BTreeMap::new();
    let mut in_table = false;
    for line in lines {
        let line = line.trim();
        if !line.starts_with('|') {
            if in_table || line.starts_with('#') {
                break;
            }
            continue;
        }
        in_table = true;
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let Some(number) = cells.first().and_then(|cell| {
            let digits: String = cell.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        }) else {
            continue; // the header row and the separator
        };
        let Some(modules) = cells.get(1) else {
            bail!("layer {number} of the {ARCHITECTURE} table names no modules");
        };
        for module in modules.split('`').skip(1).step_by(2) {
            if let Some(before) = layers.insert(module.to_owned(), number) {
                bail!(
                    "module `{module}` is in layers {before} and {number} of the {ARCHITECTURE} table"
                );
            }
        }
    }
    if layers.is_empty() {
        bail!("the \"Layers\" section of {ARCHITECTURE} has no table of layers");
    }
    Ok(layers)
}

/// A source file and its module path (`["proxy", "http"]`).
type ModuleFile = (PathBuf, Vec<String>);

/// The library's top-level modules, and every non-test file of them.
fn library_files(src: &Path) -> anyhow::Result<(BTreeSet<String>, Vec<ModuleFile>)> {
    let lib = std::fs::read_to_string(src.join("lib.rs")).context("cannot read lib.rs")?;
    let modules: BTreeSet<String> = module_declarations(&lib).into_iter().collect();
    let mut files = Vec::new();
    let mut pending: Vec<ModuleFile> = Vec::new();
    for module in &modules {
        pending.push((src.to_path_buf(), vec![module.clone()]));
    }
    // (directory the module's file sits in, module path)
    while let Some((dir, path)) = pending.pop() {
        let name = path.last().expect("module paths are never empty");
        let flat = dir.join(format!("{name}.rs"));
        let nested = dir.join(name).join("mod.rs");
        let file = if flat.is_file() {
            flat
        } else if nested.is_file() {
            nested
        } else {
            bail!(
                "module {} has neither {} nor {}",
                path.join("::"),
                flat.display(),
                nested.display()
            );
        };
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("cannot read {}", file.display()))?;
        for child in module_declarations(&text) {
            let mut child_path = path.clone();
            child_path.push(child);
            pending.push((dir.join(name), child_path));
        }
        files.push((file, path));
    }
    files.sort();
    Ok((modules, files))
}

/// The `mod x;` declarations of a file that are not test-only.
pub(crate) fn module_declarations(text: &str) -> Vec<String> {
    let code = strip_tests(&blank_comments_and_literals(text));
    let tokens = tokenize(&code);
    let mut found = Vec::new();
    for window in tokens.windows(3) {
        if window[0].text == "mod" && is_ident(&window[1].text) && window[2].text == ";" {
            found.push(window[1].text.clone());
        }
    }
    found
}

/// The top-level modules other than its own that a file of module
/// `module_path` names, each with the line it is named on.
pub(crate) fn imports(
    text: &str,
    module_path: &[String],
    modules: &BTreeSet<String>,
) -> Vec<(String, usize)> {
    let code = strip_tests(&blank_comments_and_literals(text));
    let tokens = tokenize(&code);
    let own = &module_path[0];
    let mut found = Vec::new();
    let mut note = |path: &[&Token], scope: &[String]| {
        if let Some((module, line)) = resolve(path, scope, modules)
            && module != *own
            && !found.contains(&(module.clone(), line))
        {
            found.push((module, line));
        }
    };
    // Inline modules (not test-only ones, which are gone) deepen the scope
    // that `super::` and `self::` start from.
    let mut scope: Vec<String> = module_path.to_vec();
    let mut inline: Vec<usize> = Vec::new(); // brace depth at which each inline module ends
    let mut depth = 0usize;
    let mut i = 0;
    while i < tokens.len() {
        let token = &tokens[i];
        match token.text.as_str() {
            "{" => depth += 1,
            "}" => {
                depth = depth.saturating_sub(1);
                if inline.last() == Some(&depth) {
                    inline.pop();
                    scope.pop();
                }
            }
            "mod" if tokens.get(i + 2).is_some_and(|t| t.text == "{") => {
                scope.push(tokens[i + 1].text.clone());
                inline.push(depth);
            }
            "use"
                if starts_item(&tokens, i) && tokens.get(i + 1).is_some_and(|t| t.text != "<") =>
            {
                let end = tokens[i..]
                    .iter()
                    .position(|t| t.text == ";")
                    .map_or(tokens.len(), |p| i + p);
                for path in use_paths(&tokens[i + 1..end]) {
                    note(&path, &scope);
                }
                i = end;
                continue;
            }
            "crate" | "super"
                if tokens.get(i + 1).is_some_and(|t| t.text == "::")
                    && (i == 0 || tokens[i - 1].text != "::") =>
            {
                let mut path = vec![token];
                let mut j = i + 1;
                while tokens.get(j).is_some_and(|t| t.text == "::")
                    && tokens.get(j + 1).is_some_and(|t| is_ident(&t.text))
                {
                    path.push(&tokens[j + 1]);
                    j += 2;
                }
                note(&path, &scope);
                i = j;
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    found
}

/// Whether the `use` at `i` begins an item (not `impl Trait + use<'a>`).
fn starts_item(tokens: &[Token], i: usize) -> bool {
    i == 0
        || matches!(
            tokens[i - 1].text.as_str(),
            ";" | "{" | "}" | "]" | ")" | "pub"
        )
}

/// The top-level module a path names, resolved from `scope`, and the line
/// of the segment that names it.
fn resolve(
    path: &[&Token],
    scope: &[String],
    modules: &BTreeSet<String>,
) -> Option<(String, usize)> {
    let mut at: Vec<String> = scope.to_vec();
    let mut rest = path;
    match rest.first()?.text.as_str() {
        "crate" => {
            at.clear();
            rest = &rest[1..];
        }
        "super" | "self" => {
            while let Some(first) = rest.first() {
                match first.text.as_str() {
                    "super" => {
                        at.pop()?;
                    }
                    "self" => {}
                    _ => break,
                }
                rest = &rest[1..];
            }
            if !at.is_empty() {
                return None; // still inside the module it started in
            }
        }
        _ => return None, // an external crate, std, or a name in scope
    }
    let first = rest.first()?;
    modules
        .contains(&first.text)
        .then(|| (first.text.clone(), first.line))
}

/// Every path a use tree (the tokens between `use` and `;`) brings in, as
/// the segments leading to each leaf: `crate::{a::b, c::{d, e}}` gives
/// `crate::a::b`, `crate::c::d`, `crate::c::e`.
fn use_paths(tokens: &[Token]) -> Vec<Vec<&Token>> {
    let mut paths = Vec::new();
    let mut prefix: Vec<Vec<&Token>> = vec![Vec::new()]; // one prefix per open group
    let mut current: Vec<&Token> = Vec::new();
    let mut alias = false;
    fn flush<'t>(
        paths: &mut Vec<Vec<&'t Token>>,
        prefix: &[Vec<&'t Token>],
        current: &mut Vec<&'t Token>,
    ) {
        let mut full = prefix.last().cloned().unwrap_or_default();
        full.append(current);
        if !full.is_empty() {
            paths.push(full);
        }
    }
    for token in tokens {
        match token.text.as_str() {
            "{" => {
                let mut full = prefix.last().cloned().unwrap_or_default();
                full.append(&mut current);
                prefix.push(full);
            }
            "," | "}" => {
                if !current.is_empty() {
                    flush(&mut paths, &prefix, &mut current);
                }
                if token.text == "}" {
                    prefix.pop();
                }
            }
            // `a::*` brings in what `a` holds: the path is `a`.
            "*" => flush(&mut paths, &prefix, &mut current),
            // `a as b`: the path is `a`, and `b` is no segment.
            "as" => {
                flush(&mut paths, &prefix, &mut current);
                alias = true;
            }
            text if is_ident(text) => {
                if alias {
                    alias = false;
                } else {
                    current.push(token);
                }
            }
            _ => {}
        }
    }
    if !current.is_empty() {
        flush(&mut paths, &prefix, &mut current);
    }
    paths
}

/// The edges' problems: unknown modules, imports against the layer order,
/// and cycles.
pub(crate) fn check(
    layers: &BTreeMap<String, u32>,
    modules: &BTreeSet<String>,
    edges: &[Edge],
) -> Vec<Problem> {
    let mut problems: Vec<Problem> = modules
        .iter()
        .filter(|module| !layers.contains_key(*module))
        .map(|module| Problem::Unknown(module.clone()))
        .collect();
    for edge in edges {
        if let (Some(&from_layer), Some(&to_layer)) = (layers.get(&edge.from), layers.get(&edge.to))
            && from_layer <= to_layer
        {
            problems.push(Problem::Upward {
                edge: edge.clone(),
                from_layer,
                to_layer,
            });
        }
    }
    for component in cycles(modules, edges) {
        let inside: Vec<Edge> = edges
            .iter()
            .filter(|e| component.contains(&e.from) && component.contains(&e.to))
            .cloned()
            .collect();
        problems.push(Problem::Cycle {
            modules: component.into_iter().collect(),
            edges: inside,
        });
    }
    problems
}

/// The strongly connected components of more than one module (Tarjan).
fn cycles(modules: &BTreeSet<String>, edges: &[Edge]) -> Vec<BTreeSet<String>> {
    let names: Vec<&String> = modules.iter().collect();
    let index = |name: &str| names.iter().position(|n| *n == name);
    let mut next: Vec<BTreeSet<usize>> = vec![BTreeSet::new(); names.len()];
    for edge in edges {
        if let (Some(from), Some(to)) = (index(&edge.from), index(&edge.to)) {
            next[from].insert(to);
        }
    }
    struct Walk<'a> {
        next: &'a [BTreeSet<usize>],
        counter: usize,
        order: Vec<Option<usize>>,
        low: Vec<usize>,
        stack: Vec<usize>,
        on_stack: Vec<bool>,
        found: Vec<Vec<usize>>,
    }
    impl Walk<'_> {
        fn visit(&mut self, v: usize) {
            self.order[v] = Some(self.counter);
            self.low[v] = self.counter;
            self.counter += 1;
            self.stack.push(v);
            self.on_stack[v] = true;
            for &w in self.next[v].iter() {
                match self.order[w] {
                    None => {
                        self.visit(w);
                        self.low[v] = self.low[v].min(self.low[w]);
                    }
                    Some(order) if self.on_stack[w] => self.low[v] = self.low[v].min(order),
                    Some(_) => {}
                }
            }
            if Some(self.low[v]) == self.order[v] {
                let mut component = Vec::new();
                while let Some(w) = self.stack.pop() {
                    self.on_stack[w] = false;
                    component.push(w);
                    if w == v {
                        break;
                    }
                }
                if component.len() > 1 {
                    self.found.push(component);
                }
            }
        }
    }
    let mut walk = Walk {
        next: &next,
        counter: 0,
        order: vec![None; names.len()],
        low: vec![0; names.len()],
        stack: Vec::new(),
        on_stack: vec![false; names.len()],
        found: Vec::new(),
    };
    for v in 0..names.len() {
        if walk.order[v].is_none() {
            walk.visit(v);
        }
    }
    let mut found: Vec<BTreeSet<String>> = walk
        .found
        .into_iter()
        .map(|c| c.into_iter().map(|i| names[i].clone()).collect())
        .collect();
    found.sort();
    found
}

/// A token of Rust source: an identifier, `::`, or one punctuation character.
#[derive(Debug, PartialEq, Eq)]
struct Token {
    text: String,
    line: usize,
}

fn is_ident(text: &str) -> bool {
    text.chars()
        .next()
        .is_some_and(|c| c.is_alphabetic() || c == '_')
}

/// Identifiers, `::` and single punctuation characters, with their line
/// (numbers and whitespace are dropped). Expects comments and literals blanked.
fn tokenize(code: &str) -> Vec<Token> {
    let mut tokens = Vec::new();
    let mut line = 1;
    let mut chars = code.char_indices().peekable();
    while let Some((start, c)) = chars.next() {
        if c == '\n' {
            line += 1;
        } else if c.is_alphanumeric() || c == '_' {
            let mut end = start + c.len_utf8();
            while let Some(&(i, d)) = chars.peek() {
                if !(d.is_alphanumeric() || d == '_') {
                    break;
                }
                end = i + d.len_utf8();
                chars.next();
            }
            let word = &code[start..end];
            let word = word.strip_prefix("r#").unwrap_or(word);
            if is_ident(word) {
                tokens.push(Token {
                    text: word.to_owned(),
                    line,
                });
            }
        } else if c == ':' && chars.peek().is_some_and(|&(_, d)| d == ':') {
            chars.next();
            tokens.push(Token {
                text: "::".to_owned(),
                line,
            });
        } else if !c.is_whitespace() {
            tokens.push(Token {
                text: c.to_string(),
                line,
            });
        }
    }
    tokens
}

/// The source with comments and string, byte-string and char literals
/// replaced by spaces (newlines kept, so lines still count).
fn blank_comments_and_literals(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = String::with_capacity(text.len());
    let mut i = 0;
    let blank = |out: &mut String, s: &str| {
        for c in s.chars() {
            out.push(if c == '\n' { '\n' } else { ' ' });
        }
    };
    while i < bytes.len() {
        let rest = &text[i..];
        let prev_is_ident = i > 0 && (bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            blank(&mut out, &rest[..end]);
            i += end;
        } else if rest.starts_with("/*") {
            let mut nesting = 0;
            let mut j = 0;
            while j < rest.len() {
                if rest[j..].starts_with("/*") {
                    nesting += 1;
                    j += 2;
                } else if rest[j..].starts_with("*/") {
                    nesting -= 1;
                    j += 2;
                    if nesting == 0 {
                        break;
                    }
                } else {
                    j += rest[j..].chars().next().map_or(1, char::len_utf8);
                }
            }
            blank(&mut out, &rest[..j]);
            i += j;
        } else if let Some(len) = (!prev_is_ident).then(|| raw_string_len(rest)).flatten() {
            blank(&mut out, &rest[..len]);
            i += len;
        } else if rest.starts_with('"') || (!prev_is_ident && rest.starts_with("b\"")) {
            let open = if rest.starts_with('b') { 2 } else { 1 };
            let mut j = open;
            while j < rest.len() {
                match rest.as_bytes()[j] {
                    b'\\' => j += 2,
                    b'"' => {
                        j += 1;
                        break;
                    }
                    _ => j += 1,
                }
            }
            let j = j.min(rest.len());
            blank(&mut out, &rest[..j]);
            i += j;
        } else if rest.starts_with('\'') {
            // A char literal ('a', '\n', '\u{..}'), or a lifetime, which is left.
            let len = char_literal_len(rest);
            blank(&mut out, &rest[..len]);
            i += len.max(1);
            if len == 0 {
                out.push('\'');
            }
        } else {
            let c = rest.chars().next().expect("not at the end");
            out.push(c);
            i += c.len_utf8();
        }
    }
    out
}

/// Length of a raw (byte) string literal at the start of `rest`, if one is.
fn raw_string_len(rest: &str) -> Option<usize> {
    let after_prefix = rest.strip_prefix("br").or_else(|| rest.strip_prefix('r'))?;
    let hashes = after_prefix.len() - after_prefix.trim_start_matches('#').len();
    let body = after_prefix[hashes..].strip_prefix('"')?;
    let close = format!("\"{}", "#".repeat(hashes));
    let end = body.find(&close)?;
    Some(rest.len() - body.len() + end + close.len())
}

/// Length of a char literal at the start of `rest` (which starts with `'`),
/// or 0 for a lifetime or label.
fn char_literal_len(rest: &str) -> usize {
    let body = &rest[1..];
    if let Some(escaped) = body.strip_prefix('\\') {
        return escaped.find('\'').map_or(0, |end| end + 3);
    }
    let mut chars = body.chars();
    match (chars.next(), chars.next()) {
        (Some(c), Some('\'')) => 2 + c.len_utf8(),
        _ => 0,
    }
}

/// The code with every `#[cfg(test)]` item removed (an inline `mod tests {
/// .. }`, a `mod tests;` declaration, a test-only `use` or function).
/// Expects comments and literals blanked; keeps newlines.
fn strip_tests(code: &str) -> String {
    let mut out = String::with_capacity(code.len());
    let mut rest = code;
    while let Some(at) = find_test_attribute(rest) {
        out.push_str(&rest[..at.start]);
        let item = &rest[at.start..];
        let len = item_len(item, at.end - at.start);
        for c in item[..len].chars() {
            out.push(if c == '\n' { '\n' } else { ' ' });
        }
        rest = &item[len..];
    }
    out.push_str(rest);
    out
}

/// The next `#[cfg(test)]` (or `#[cfg(all(test, ..))]`) attribute.
fn find_test_attribute(code: &str) -> Option<std::ops::Range<usize>> {
    let mut from = 0;
    while let Some(found) = code[from..].find("#[") {
        let start = from + found;
        let end = start + code[start..].find(']')? + 1;
        let inner: String = code[start + 2..end]
            .chars()
            .filter(|c| !c.is_whitespace())
            .collect();
        if inner.starts_with("cfg(test)") || inner.starts_with("cfg(all(test,") {
            // The attribute may hold nested brackets: find its real end.
            let mut depth = 0;
            let mut real_end = start;
            for (i, c) in code[start + 1..].char_indices() {
                match c {
                    '[' => depth += 1,
                    ']' => {
                        depth -= 1;
                        if depth == 0 {
                            real_end = start + 1 + i + 1;
                            break;
                        }
                    }
                    _ => {}
                }
            }
            return Some(start..real_end);
        }
        from = start + 2;
    }
    None
}

/// Length of the item starting at `item` (an attribute of `attribute_len`
/// bytes first): up to its first `;` outside brackets, or its first
/// top-level `{ .. }` block.
fn item_len(item: &str, attribute_len: usize) -> usize {
    let mut depth = 0i32;
    let mut braces_seen = false;
    let bytes = item.as_bytes();
    let mut i = attribute_len;
    while i < bytes.len() {
        match bytes[i] {
            b'#' if bytes.get(i + 1) == Some(&b'[') && depth == 0 => {
                let mut in_attribute = 1;
                i += 2;
                while i < bytes.len() && in_attribute > 0 {
                    match bytes[i] {
                        b'[' => in_attribute += 1,
                        b']' => in_attribute -= 1,
                        _ => {}
                    }
                    i += 1;
                }
                continue;
            }
            b'(' | b'[' => depth += 1,
            b')' | b']' => depth -= 1,
            b'{' => {
                depth += 1;
                braces_seen = true;
            }
            b'}' => {
                depth -= 1;
                if depth == 0 && braces_seen {
                    return i + 1;
                }
            }
            b';' if depth == 0 => return i + 1,
            _ => {}
        }
        i += 1;
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn modules() -> BTreeSet<String> {
        ["model", "config", "compile", "proxy", "dataplane", "stats"]
            .into_iter()
            .map(String::from)
            .collect()
    }

    fn named(text: &str, module_path: &[&str]) -> Vec<(String, usize)> {
        let path: Vec<String> = module_path.iter().map(|s| (*s).to_owned()).collect();
        imports(text, &path, &modules())
    }

    fn edge(from: &str, to: &str, line: usize) -> Edge {
        Edge {
            from: from.into(),
            to: to.into(),
            file: format!("{from}.rs"),
            line,
        }
    }

    const TABLE: &str = "# Architecture\n\n## Layers\n\nLowest first.\n\n\
        | layer | modules | what |\n|---|---|---|\n\
        | 1 base | `model` | values |\n| 3 config | `config` | YAML |\n\
        | 4 compile | `compile` | model -> plan |\n| 5 runtime | `proxy`, `dataplane` | serving |\n\
        | 6 operator | `stats` | stats |\n\n## Next\n\n| 9 | `not_a_layer` | x |\n";

    #[test]
    fn layers_are_read_from_the_table_under_the_heading() {
        let layers = parse_layers(TABLE).unwrap();
        assert_eq!(layers["model"], 1);
        assert_eq!(layers["proxy"], 5);
        assert_eq!(layers["dataplane"], 5);
        assert_eq!(layers["stats"], 6);
        assert!(!layers.contains_key("not_a_layer"));
        assert!(parse_layers("# Architecture\n\nno layers here\n").is_err());
        assert!(parse_layers("## Layers\n\nonly text\n").is_err());
    }

    #[test]
    fn a_module_in_two_layers_is_an_error() {
        let doc = "## Layers\n| 1 | `model` | a |\n| 2 | `model` | b |\n";
        assert!(parse_layers(doc).is_err());
    }

    #[test]
    fn grouped_imports_name_each_module() {
        let text = "use crate::{model::Gateway, config};\nuse std::io;\n";
        assert_eq!(
            named(text, &["compile"]),
            [("model".to_owned(), 1), ("config".to_owned(), 1)]
        );
    }

    #[test]
    fn multi_line_nested_groups_give_the_line_of_each_module() {
        let text = "pub use crate::{\n    model::{Gateway, Subnet as Cidr},\n    config::{\n        self,\n        load,\n    },\n};\n";
        assert_eq!(
            named(text, &["compile", "bind"]),
            // One edge per module and line.
            [("model".to_owned(), 2), ("config".to_owned(), 3)]
        );
    }

    #[test]
    fn paths_in_code_and_super_chains_are_edges() {
        let text = "fn f() -> crate::model::Gateway {\n    let x = super::super::config::load();\n    super::sibling::g();\n    crate::compile::plan()\n}\n";
        assert_eq!(
            named(text, &["proxy", "http", "inner"]),
            [("model".to_owned(), 1), ("compile".to_owned(), 4)]
        );
        // From a top-level file, `super` is the crate root.
        assert_eq!(
            named("use super::model::Gateway;\n", &["stats"]),
            [("model".to_owned(), 1)]
        );
    }

    #[test]
    fn own_module_external_crates_comments_strings_and_tests_are_not_edges() {
        let text = "use crate::proxy::http;\nuse gateway_common::model;\n\
            // use crate::config;\n/* crate::model:: */\nconst S: &str = \"crate::config::x\";\n\
            const C: char = '{';\nfn f<'a>(x: &'a str) {}\n\
            #[cfg(test)]\nmod tests {\n    use crate::config::load;\n    fn g() { crate::model::x(); }\n}\n\
            #[cfg(test)]\nmod more_tests;\n#[cfg(test)]\nuse crate::compile;\n\
            fn h() { crate::dataplane::apply() }\n";
        assert_eq!(named(text, &["proxy"]), [("dataplane".to_owned(), 17)]);
    }

    #[test]
    fn test_only_module_files_are_not_followed() {
        let text = "pub mod bind;\nmod ids;\n#[cfg(test)]\nmod properties;\n#[cfg(test)]\n#[path = \"x.rs\"]\nmod tests;\nmod inline {\n}\n";
        assert_eq!(module_declarations(text), ["bind", "ids"]);
    }

    #[test]
    fn downward_imports_pass() {
        let layers = parse_layers(TABLE).unwrap();
        let edges = [edge("proxy", "model", 3), edge("stats", "proxy", 4)];
        assert_eq!(check(&layers, &modules(), &edges), []);
    }

    #[test]
    fn an_upward_import_fails_with_its_file_and_line() {
        let layers = parse_layers(TABLE).unwrap();
        let problems = check(&layers, &modules(), &[edge("config", "compile", 12)]);
        assert_eq!(
            problems,
            [Problem::Upward {
                edge: edge("config", "compile", 12),
                from_layer: 3,
                to_layer: 4
            }]
        );
        assert_eq!(
            problems[0].to_string(),
            "config.rs:12: config -> compile: imports a higher layer (config is layer 3, compile is layer 4)"
        );
    }

    #[test]
    fn modules_of_one_layer_never_import_each_other() {
        let layers = parse_layers(TABLE).unwrap();
        let problems = check(&layers, &modules(), &[edge("proxy", "dataplane", 7)]);
        assert!(matches!(
            &problems[..],
            [Problem::Upward {
                from_layer: 5,
                to_layer: 5,
                ..
            }]
        ));
    }

    #[test]
    fn a_cycle_names_every_edge_in_it() {
        // Without layers in the way: every module in one layer would flag
        // the edges as well, so place them apart and close a loop.
        let layers = parse_layers(TABLE).unwrap();
        let edges = [
            edge("compile", "model", 1),
            edge("model", "config", 2),
            edge("config", "compile", 3),
            edge("stats", "proxy", 4),
        ];
        let problems = check(&layers, &modules(), &edges);
        let cycles: Vec<&Problem> = problems
            .iter()
            .filter(|p| matches!(p, Problem::Cycle { .. }))
            .collect();
        assert_eq!(
            cycles,
            [&Problem::Cycle {
                modules: vec!["compile".into(), "config".into(), "model".into()],
                edges: edges[..3].to_vec(),
            }]
        );
        // model -> config and config -> compile are also upward.
        assert_eq!(problems.len(), 3);
    }

    #[test]
    fn a_module_the_table_does_not_place_is_an_error() {
        let layers = parse_layers(TABLE).unwrap();
        let mut modules = modules();
        modules.insert("hosts".into());
        assert_eq!(
            check(&layers, &modules, &[]),
            [Problem::Unknown("hosts".into())]
        );
    }

    #[test]
    fn the_workspace_table_places_every_library_module() {
        // The real document parses; which modules it places is the check's job.
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
        let doc = std::fs::read_to_string(root.join(ARCHITECTURE)).unwrap();
        let layers = parse_layers(&doc).unwrap();
        assert!(layers.contains_key("model") && layers.contains_key("daemon"));
    }
}
