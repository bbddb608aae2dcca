//! The documents' view of the `gateway` command, held to the binary itself.
//!
//! `cargo xtask docs` writes `docs/cli.md` from `gateway --help` and every
//! subcommand's `--help`, so the reference cannot drift from the code.
//! `cargo xtask lint` checks that file is current, and that every `--flag`
//! the documents name is a flag of `gateway` (of the very subcommand, when
//! the line runs one), of `cargo xtask`, or of a tool listed in
//! [`OTHER_TOOLS_FLAGS`] with its reason; and that the code map of
//! ARCHITECTURE.md names every product file ([`crate::code_map`]).
use std::{
    collections::{BTreeMap, BTreeSet},
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};
use clap::CommandFactory as _;

/// The generated reference, relative to the workspace root.
const CLI_MD: &str = "docs/cli.md";

/// Flags of commands other than `gateway` and `cargo xtask` that the
/// documents may name, each with the tool it belongs to.
const OTHER_TOOLS_FLAGS: &[(&str, &str)] = &[
    // cargo and the test harness, in the commands CONTRIBUTING and tests/README give.
    ("--release", "cargo build"),
    // kube-apiserver's NodePort range, named in docs/kubernetes.md.
    ("--service-node-port-range", "kube-apiserver"),
    ("--package", "cargo"),
    ("--bin", "cargo"),
    ("--test", "cargo test"),
    ("--lib", "cargo test"),
    ("--workspace", "cargo"),
    ("--exclude", "cargo"),
    ("--all-targets", "cargo clippy"),
    ("--all", "cargo fmt"),
    ("--check", "cargo fmt"),
    ("--test-threads", "the libtest harness"),
    // curl, in the demo's and the docs' example requests.
    ("--resolve", "curl"),
    ("--cacert", "curl"),
    ("--connect-timeout", "curl"),
    ("--max-time", "curl"),
    // The test backend (tests/src/bin/test-backend.rs).
    ("--tls", "test-backend"),
    ("--echo", "test-backend"),
    ("--name", "test-backend"),
    ("--listen", "test-backend"),
    // Settings of the other proxies in the benchmark, named in docs/benchmarks.md.
    ("--concurrency", "Envoy"),
];

/// `cargo xtask docs`: writes `docs/cli.md`.
pub(crate) fn write(root: &Path) -> anyhow::Result<()> {
    let help = Help::of(&gateway(root)?)?;
    let path = root.join(CLI_MD);
    std::fs::create_dir_all(root.join("docs"))?;
    std::fs::write(&path, help.markdown())
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("wrote {}", path.display());
    Ok(())
}

/// The lint's check: `docs/cli.md` is what `cargo xtask docs` writes,
/// every flag the documents name exists, and the code map is complete.
pub(crate) fn check(root: &Path) -> anyhow::Result<()> {
    let help = Help::of(&gateway(root)?)?;
    let mut problems = Vec::new();
    let current = std::fs::read_to_string(root.join(CLI_MD)).unwrap_or_default();
    if current != help.markdown() {
        problems.push(format!(
            "{CLI_MD} is not what `gateway --help` says: run `cargo xtask docs`"
        ));
    }
    let xtask = xtask_flags();
    for path in documents(root)? {
        let text = std::fs::read_to_string(&path)
            .with_context(|| format!("cannot read {}", path.display()))?;
        let shown = path.strip_prefix(root).unwrap_or(&path).display();
        for (line, flag, command) in named_flags(&text) {
            if let Some(wrong) = help.unknown(&flag, command.as_deref(), &xtask) {
                problems.push(format!("{shown}:{line}: {flag}: {wrong}"));
            }
        }
    }
    problems.extend(crate::code_map::check(root)?);
    if problems.is_empty() {
        return Ok(());
    }
    for problem in &problems {
        eprintln!("{problem}");
    }
    bail!(
        "{} problem(s) between the documents and `gateway --help` or the tree",
        problems.len()
    )
}

/// The documents whose flags are checked: the front page, the contributor
/// guide, the architecture, `docs/*.md` (but the generated reference), the
/// READMEs of the examples, tests and fuzz targets.
fn documents(root: &Path) -> anyhow::Result<Vec<PathBuf>> {
    let mut found: Vec<PathBuf> = ["README.md", "CONTRIBUTING.md", "ARCHITECTURE.md"]
        .iter()
        .chain(&["tests/README.md", "fuzz/README.md"])
        .map(|name| root.join(name))
        .filter(|path| path.is_file())
        .collect();
    let in_dir = |dir: PathBuf, keep: &dyn Fn(&str) -> bool| -> Vec<PathBuf> {
        let Ok(entries) = std::fs::read_dir(dir) else {
            return Vec::new();
        };
        let mut paths: Vec<PathBuf> = entries
            .filter_map(|entry| entry.ok().map(|e| e.path()))
            .filter(|p| p.file_name().and_then(|n| n.to_str()).is_some_and(keep))
            .collect();
        paths.sort();
        paths
    };
    found.extend(in_dir(root.join("docs"), &|name| {
        name.ends_with(".md") && name != "cli.md"
    }));
    for example in in_dir(root.join("examples"), &|_| true) {
        if example.is_dir() {
            found.extend(in_dir(example, &|name| name.starts_with("README")));
        }
    }
    Ok(found)
}

/// The `gateway` binary to ask: `GATEWAY_BIN` if set (as the tests take
/// it), else the debug build, built now (with the XDP object unless
/// `GATEWAY_SKIP_EBPF=1`: `--help` does not need it).
fn gateway(root: &Path) -> anyhow::Result<PathBuf> {
    if let Some(bin) = std::env::var_os("GATEWAY_BIN") {
        return Ok(PathBuf::from(bin));
    }
    crate::exec::build_gateway(root, false)
}

/// Every long flag of `cargo xtask` and its subcommands, read from its own
/// clap definition.
fn xtask_flags() -> BTreeSet<String> {
    fn walk(cmd: &clap::Command, into: &mut BTreeSet<String>) {
        for arg in cmd.get_arguments() {
            if let Some(long) = arg.get_long() {
                into.insert(format!("--{long}"));
            }
        }
        for sub in cmd.get_subcommands() {
            walk(sub, into);
        }
    }
    let mut flags = BTreeSet::new();
    walk(&crate::Cli::command(), &mut flags);
    flags
}

/// `gateway --help` and each subcommand's, with the flags each offers.
struct Help {
    /// The top-level help text.
    top: String,
    /// Subcommand -> its help text, in the order `--help` lists them.
    commands: Vec<(String, String)>,
    /// Subcommand -> its long flags.
    flags: BTreeMap<String, BTreeSet<String>>,
}

impl Help {
    fn of(gateway: &Path) -> anyhow::Result<Self> {
        let ask = |args: &[&str]| -> anyhow::Result<String> {
            let out = Command::new(gateway)
                .args(args)
                .env("COLUMNS", "100")
                .output()
                .with_context(|| format!("cannot start {}", gateway.display()))?;
            if !out.status.success() {
                bail!(
                    "{} {} failed ({})",
                    gateway.display(),
                    args.join(" "),
                    out.status
                );
            }
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        };
        let top = ask(&["--help"])?;
        let mut commands = Vec::new();
        let mut flags = BTreeMap::new();
        for name in subcommands(&top) {
            let text = ask(&[&name, "--help"])?;
            flags.insert(name.clone(), long_flags(&text));
            commands.push((name, text));
        }
        if commands.is_empty() {
            bail!("`gateway --help` lists no subcommands");
        }
        Ok(Self {
            top,
            commands,
            flags,
        })
    }

    /// `docs/cli.md`.
    fn markdown(&self) -> String {
        let mut out = String::from(
            "# The `gateway` command\n\n\
             <!-- Generated by `cargo xtask docs` from `gateway --help` and each \
             subcommand's `--help`: do not edit. `cargo xtask lint` fails when \
             it is out of date. -->\n\n\
             What each flag means, as the binary itself says it. How the \
             flags work together in operation: [operations.md](operations.md).\n",
        );
        let mut section = |title: &str, text: &str| {
            out.push_str(&format!(
                "\n## `{title}`\n\n```text\n{}\n```\n",
                text.trim_end()
            ));
        };
        section("gateway", &self.top);
        for (name, text) in &self.commands {
            section(&format!("gateway {name}"), text);
        }
        out
    }

    /// Why `flag` is not a flag the documents may name, if it is not: on
    /// a line running `gateway <command>`, it must be that command's.
    fn unknown(
        &self,
        flag: &str,
        command: Option<&str>,
        xtask: &BTreeSet<String>,
    ) -> Option<String> {
        let global = ["--help", "--version"];
        if global.contains(&flag) {
            return None;
        }
        if let Some(command) = command {
            let Some(flags) = self.flags.get(command) else {
                return Some(format!("`gateway {command}` is not a subcommand"));
            };
            return (!flags.contains(flag)).then(|| {
                format!("not a flag of `gateway {command}` (see `gateway {command} --help`)")
            });
        }
        let known = self.flags.values().any(|flags| flags.contains(flag))
            || xtask.contains(flag)
            || OTHER_TOOLS_FLAGS.iter().any(|(known, _)| *known == flag);
        (!known).then(|| {
            "no `gateway` subcommand has this flag, nor `cargo xtask`; if it belongs to \
             another tool, add it to OTHER_TOOLS_FLAGS in xtask/src/docs.rs"
                .to_owned()
        })
    }
}

/// The subcommands `--help` lists under `Commands:`, but `help`.
fn subcommands(help: &str) -> Vec<String> {
    help.lines()
        .skip_while(|line| line.trim() != "Commands:")
        .skip(1)
        .take_while(|line| !line.trim().is_empty())
        .filter(|line| line.starts_with("  ") && !line.starts_with("   "))
        .filter_map(|line| line.split_whitespace().next())
        .filter(|name| *name != "help")
        .map(str::to_owned)
        .collect()
}

/// The long flags a help text defines (`  -c, --config <PATH>`, `      --json`).
fn long_flags(help: &str) -> BTreeSet<String> {
    help.lines()
        .map(str::trim_start)
        .filter(|line| line.starts_with('-'))
        .flat_map(flag_tokens)
        .collect()
}

/// The `--long-flag` tokens of a piece of text, in order.
fn flag_tokens(text: &str) -> Vec<String> {
    let bytes = text.as_bytes();
    let mut found = Vec::new();
    let mut i = 0;
    while let Some(at) = text[i..].find("--") {
        let start = i + at;
        let before_ok =
            start == 0 || !(bytes[start - 1].is_ascii_alphanumeric() || bytes[start - 1] == b'-');
        let mut end = start + 2;
        while end < bytes.len()
            && (bytes[end].is_ascii_lowercase()
                || bytes[end].is_ascii_digit()
                || bytes[end] == b'-')
        {
            end += 1;
        }
        let name = &text[start + 2..end];
        if before_ok && name.starts_with(|c: char| c.is_ascii_lowercase()) && !name.ends_with('-') {
            found.push(text[start..end].to_owned());
        }
        i = end.max(start + 2);
    }
    found
}

/// The flags a document names: (line number, flag, the `gateway`
/// subcommand the line runs it with, if the flag follows one on its line).
fn named_flags(text: &str) -> Vec<(usize, String, Option<String>)> {
    let commands = ["run", "check", "compile", "reload", "stats", "prune-pins"];
    let mut found = Vec::new();
    for (number, line) in text.lines().enumerate() {
        // Where each `gateway <command>` on the line starts, and which.
        let mut runs: Vec<(usize, &str)> = Vec::new();
        let mut from = 0;
        while let Some(at) = line[from..].find("gateway ") {
            let start = from + at;
            let rest = &line[start + "gateway ".len()..];
            let word = rest
                .split(|c: char| c.is_whitespace() || c == '`')
                .next()
                .unwrap_or("");
            let standalone = start == 0
                || !line.as_bytes()[start - 1].is_ascii_alphanumeric()
                    && line.as_bytes()[start - 1] != b'-'
                    && line.as_bytes()[start - 1] != b'/';
            if let Some(command) = commands.iter().find(|c| standalone && **c == word) {
                runs.push((start, command));
            }
            from = start + "gateway ".len();
        }
        let mut search = 0;
        for flag in flag_tokens(line) {
            let at = search + line[search..].find(&flag).unwrap_or(0);
            search = at + flag.len();
            // The command run on this line before the flag, unless a code
            // span ended between them (prose naming another command's flag).
            let command = runs
                .iter()
                .rev()
                .find(|(start, _)| *start < at)
                .filter(|(start, _)| !line[*start..at].contains('`'))
                .map(|(_, command)| (*command).to_owned());
            found.push((number + 1, flag, command));
        }
    }
    found
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flags_are_found_whole_and_not_in_yaml_separators_or_words() {
        assert_eq!(
            flag_tokens("gateway run --config a.yaml -i eth0 --allow-port 22 --- x--y `--json`"),
            ["--config", "--allow-port", "--json"]
        );
    }

    #[test]
    fn a_flag_after_a_gateway_command_belongs_to_it() {
        let found = named_flags("`gateway check --strict` and `--workers`\ngateway stats --json");
        assert_eq!(
            found,
            [
                (1, "--strict".to_owned(), Some("check".to_owned())),
                (1, "--workers".to_owned(), None),
                (2, "--json".to_owned(), Some("stats".to_owned())),
            ]
        );
    }

    #[test]
    fn subcommands_are_read_from_the_commands_section() {
        let help = "About\n\nUsage: gateway <COMMAND>\n\nCommands:\n  run    Serve\n         more\n  check  Check\n  help   Print\n\nOptions:\n  -h, --help\n";
        assert_eq!(subcommands(help), ["run", "check"]);
    }
}
