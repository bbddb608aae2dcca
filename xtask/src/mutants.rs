//! Mutation testing of the pure modules with cargo-mutants: every mutant
//! (a one-line change such as `>=` for `>` or `true` for a condition) is
//! built and the library's unit tests are run against it. A missed mutant is
//! a behaviour no test pins: add a test that fails on it, or say why it
//! cannot change behaviour. A mutant that times out (a loop that no longer
//! ends) is caught.
use std::{collections::BTreeMap, fs, path::Path, process::Command, time::SystemTime};

use anyhow::{Context as _, bail};

use crate::{exec::output, provision};

/// Files to mutate (package gateway-userspace): the modules their unit
/// tests cover without root or kernel (the per-request proxy modules through
/// `proxy::testing`, on loopback).
const FILES: &[&str] = &[
    "gateway-userspace/src/config/**",
    "gateway-userspace/src/compile/**",
    "gateway-userspace/src/model/host.rs",
    "gateway-userspace/src/plan/hosts.rs",
    "gateway-userspace/src/management.rs",
    "gateway-userspace/src/proxy/redirect.rs",
    "gateway-userspace/src/proxy/route/**",
    "gateway-userspace/src/proxy/rewrite.rs",
    "gateway-userspace/src/proxy/client_hello.rs",
    "gateway-userspace/src/proxy/client_cert.rs",
    "gateway-userspace/src/proxy/access_log.rs",
    "gateway-userspace/src/proxy/tls.rs",
    "gateway-userspace/src/connection/deadlines.rs",
    "gateway-userspace/src/proxy/egress/mod.rs",
    "gateway-userspace/src/proxy/egress/passthrough.rs",
    "gateway-userspace/src/proxy/metrics.rs",
    "gateway-userspace/src/proxy/lean_redirect.rs",
    "gateway-userspace/src/proxy/upstream/error.rs",
    "gateway-userspace/src/proxy/upstream/balance.rs",
    "gateway-userspace/src/proxy/upstream/dns.rs",
    "gateway-userspace/src/proxy/upstream/pool.rs",
    "gateway-userspace/src/proxy/upstream/mod.rs",
    "gateway-userspace/src/proxy/upstream/discovered.rs",
    "gateway-userspace/src/discovery.rs",
    "gateway-userspace/src/model/service.rs",
    "gateway-userspace/src/kubernetes/endpoints.rs",
    "gateway-userspace/src/kubernetes/status.rs",
    "gateway-userspace/src/proxy/http/headers.rs",
    "gateway-userspace/src/proxy/http/forward.rs",
    "gateway-userspace/src/proxy/http/mod.rs",
    "gateway-userspace/src/proxy/http/fault.rs",
    "gateway-userspace/src/proxy/http/cors.rs",
    "gateway-userspace/src/model/fault.rs",
    "gateway-userspace/src/proxy/http/bodies.rs",
    "gateway-userspace/src/model/locality.rs",
    "gateway-userspace/src/plan/locality.rs",
    "gateway-userspace/src/proxy/upstream/priority.rs",
    "gateway-userspace/src/proxy/upstream/budget.rs",
    "gateway-userspace/src/proxy/upstream/original.rs",
    "gateway-userspace/src/proxy/proxy_protocol.rs",
    "gateway-userspace/src/proxy/tunnel.rs",
];
/// Test files among them.
const EXCLUDE: &[&str] = &["*_tests.rs", "tests.rs", "properties.rs"];
/// Where cargo-mutants writes its outcome lists (gitignored).
const OUTPUT: &str = "mutants.out";
/// Seconds one mutant's tests may take (the suite takes about one).
const TEST_TIMEOUT: &str = "15";

/// Runs cargo-mutants on `FILES` from the workspace root; with `in_diff`,
/// only on the lines `git diff <in_diff>` changes (tracked files: `git add
/// -N` new ones first). Fails if a mutant was missed or timed out.
pub(crate) fn run(in_diff: Option<&str>) -> anyhow::Result<()> {
    provision::cargo_mutants()?;
    let mut cmd = Command::new("cargo");
    cmd.args(["mutants", "--package", "gateway-userspace", "--no-shuffle"])
        .args(["--jobs", "1"])
        .args(["--timeout", TEST_TIMEOUT])
        // Lints are the linter's job; a mutant that only trips one still runs.
        .args(["--cap-lints", "true"])
        // Build and run only the library's unit tests: seconds per mutant.
        .args(["--cargo-arg", "--lib"])
        // No XDP object (unit tests never load it) and no debug info: each
        // mutant rebuilds in a second or two instead of relinking for ten.
        .env("GATEWAY_SKIP_EBPF", "1")
        .env("CARGO_PROFILE_DEV_DEBUG", "0");
    for file in FILES {
        cmd.args(["--file", file]);
    }
    for file in EXCLUDE {
        cmd.args(["--exclude", file]);
    }
    if let Some(base) = in_diff {
        let diff = output(Command::new("git").args(["diff", base]))
            .with_context(|| format!("`git diff {base}` failed"))?;
        if diff.trim().is_empty() {
            println!("== no changes since {base}: no mutants to test");
            return Ok(());
        }
        let path = Path::new("target/mutants-in-diff.patch");
        fs::create_dir_all("target").context("cannot create target/")?;
        fs::write(path, diff).with_context(|| format!("cannot write {}", path.display()))?;
        cmd.arg("--in-diff").arg(path);
    }
    println!("== mutation testing (cargo-mutants, one mutant at a time)");
    let started = SystemTime::now();
    let shown = format!("{cmd:?}");
    let status = cmd
        .status()
        .with_context(|| format!("cannot start {shown}"))?;
    let out = Path::new(OUTPUT);
    // With nothing to test, cargo-mutants leaves an earlier run's lists in place.
    let fresh = fs::metadata(out.join("outcomes.json"))
        .and_then(|m| m.modified())
        .is_ok_and(|modified| modified >= started);
    if !fresh {
        println!("== no mutants tested");
        return if status.success() {
            Ok(())
        } else {
            bail!("{shown} failed with {status}")
        };
    }
    let read = |name: &str| fs::read_to_string(out.join(name)).unwrap_or_default();
    let outcomes = [
        read("caught.txt"),
        read("missed.txt"),
        read("unviable.txt"),
        read("timeout.txt"),
    ];
    print!("{}", summary(&outcomes));
    // Exit codes: 2 = missed mutants, 3 = timeouts (cargo-mutants docs). A
    // timeout is a mutant the tests did not let pass (typically a loop that
    // no longer ends, such as `i -= step` for `i += step`): caught, only slowly.
    let missed = !outcomes[1].trim().is_empty();
    match status.code() {
        Some(0) => Ok(()),
        Some(2 | 3) if missed => bail!(
            "mutants missed: {}; add a test that fails on each",
            out.join("missed.txt").display()
        ),
        Some(3) => {
            println!("== timeouts count as caught: the mutated code never finished the tests");
            Ok(())
        }
        _ => bail!("{shown} failed with {status}"),
    }
}

/// A table of caught / missed / unviable / timeout counts per file, from
/// cargo-mutants' outcome lists (one `path:line:col: description` per line).
fn summary(outcomes: &[String; 4]) -> String {
    let mut per_file: BTreeMap<&str, [usize; 4]> = BTreeMap::new();
    for (column, text) in outcomes.iter().enumerate() {
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            let file = line.split_once(':').map_or(line, |(file, _)| file);
            per_file.entry(file).or_default()[column] += 1;
        }
    }
    let mut total = [0; 4];
    let mut text = format!(
        "{:<50} {:>7} {:>7} {:>9} {:>8}\n",
        "file", "caught", "missed", "unviable", "timeout"
    );
    for (file, counts) in &per_file {
        for (sum, count) in total.iter_mut().zip(counts) {
            *sum += count;
        }
        text += &row(file, counts);
    }
    text += &row("total", &total);
    text
}

fn row(name: &str, [caught, missed, unviable, timeout]: &[usize; 4]) -> String {
    format!("{name:<50} {caught:>7} {missed:>7} {unviable:>9} {timeout:>8}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn summary_counts_outcomes_per_file() {
        let outcomes = [
            "a.rs:1:1: replace x\na.rs:2:1: replace y\n".to_string(),
            "b.rs:3:5: replace > with >=\n".to_string(),
            String::new(),
            "a.rs:9:9: replace loop\n".to_string(),
        ];
        let text = summary(&outcomes);
        let lines: Vec<Vec<&str>> = text
            .lines()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(lines[1], ["a.rs", "2", "0", "0", "1"]);
        assert_eq!(lines[2], ["b.rs", "0", "1", "0", "0"]);
        assert_eq!(lines[3], ["total", "2", "1", "0", "1"]);
    }
}
