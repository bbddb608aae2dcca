//! A real Kubernetes API server for the Kubernetes test level, built once
//! per machine and cached outside the checkout.
//!
//! Debian ships no kube-apiserver binary, and no Go module proxy is
//! reachable here, so it is built from Debian bookworm's *source* package
//! `kubernetes` (upstream 1.20.2 with every dependency vendored) with
//! Debian's Go 1.19, and run against Debian's etcd 3.4. One vendored
//! library needs a fix first: reflect2 v1.0.1 calls the runtime's
//! `reflect.mapiterinit` with the pre-1.18 signature (the iterator
//! returned instead of filled in), which crashes the server on the first
//! custom object it encodes; reflect2 v1.0.2 made the same change.
use std::{
    fs,
    path::{Path, PathBuf},
    process::Command,
};

use anyhow::{Context as _, bail};

use crate::{
    exec::{output, run},
    provision::debian_packages,
};

/// The upstream release inside Debian's source package.
pub(crate) const VERSION: &str = "1.20.2";
/// Where built binaries are kept between runs, keyed by [`VERSION`]
/// (override with `GATEWAY_KUBE_CACHE`).
const CACHE: &str = "/var/cache/gateway-kube";
/// Debian's Go, the newest that builds this tree in GOPATH mode.
const GO_BIN: &str = "/usr/lib/go-1.19/bin";
/// (command, Debian package) the build and the test level need.
const PACKAGES: &[(&str, &str)] = &[
    ("/usr/lib/go-1.19/bin/go", "golang-1.19-go"),
    ("etcd", "etcd-server"),
    ("make", "make"),
    // Kubernetes' build copies its outputs with rsync.
    ("rsync", "rsync"),
    ("kubectl", "kubernetes-client"),
];
/// The apt source list that adds source packages for the suites the
/// machine already uses (written once; it names no host of its own).
const SOURCE_LIST: &str = "/etc/apt/sources.list.d/gateway-deb-src.sources";

/// The cached kube-apiserver, built first if missing. Returns its path.
pub(crate) fn provision() -> anyhow::Result<PathBuf> {
    debian_packages(PACKAGES)?;
    let cache =
        std::env::var_os("GATEWAY_KUBE_CACHE").map_or_else(|| PathBuf::from(CACHE), PathBuf::from);
    let binary = cache.join(format!("kube-apiserver-{VERSION}"));
    if reports_version(&binary) {
        return Ok(binary);
    }
    println!(
        "== building kube-apiserver {VERSION} from Debian's source package (once per machine; about 3.5 minutes on 2 cores)"
    );
    let started = std::time::Instant::now();
    let build = cache.join("build");
    if build.exists() {
        fs::remove_dir_all(&build).with_context(|| format!("cannot clear {}", build.display()))?;
    }
    fs::create_dir_all(&build).with_context(|| format!("cannot create {}", build.display()))?;
    add_source_list()?;
    run(Command::new("apt-get").args(["update", "-qq"]))?;
    run(Command::new("apt-get")
        .args(["source", "-qq", "--download-only", "kubernetes"])
        .current_dir(&build))?;
    let orig = fs::read_dir(&build)?
        .filter_map(Result::ok)
        .map(|entry| entry.path())
        .find(|path| path.to_string_lossy().ends_with(".orig.tar.gz"))
        .context("apt-get source kubernetes fetched no .orig.tar.gz")?;
    run(Command::new("tar")
        .arg("xzf")
        .arg(&orig)
        .current_dir(&build))?;
    let tree = build.join(format!("kubernetes-{VERSION}"));
    if !tree.is_dir() {
        bail!(
            "Debian's kubernetes source is not upstream {VERSION} ({} missing); update VERSION in xtask/src/kube_server.rs",
            tree.display()
        );
    }
    fix_reflect2(&tree.join("vendor/github.com/modern-go/reflect2"))?;
    let path = format!("{GO_BIN}:{}", std::env::var("PATH").unwrap_or_default());
    run(Command::new("make")
        .arg("WHAT=cmd/kube-apiserver")
        .current_dir(&tree)
        .env("PATH", path)
        // The Go build cache goes with the tree, removed below.
        .env("GOCACHE", build.join("go-cache")))?;
    let built = tree.join("_output/bin/kube-apiserver");
    fs::copy(&built, &binary)
        .with_context(|| format!("cannot copy {} to {}", built.display(), binary.display()))?;
    fs::remove_dir_all(&build).with_context(|| format!("cannot remove {}", build.display()))?;
    if !reports_version(&binary) {
        bail!("the built {} does not report v{VERSION}", binary.display());
    }
    println!(
        "== kube-apiserver {VERSION} built in {} s, cached at {}",
        started.elapsed().as_secs(),
        binary.display()
    );
    Ok(binary)
}

/// Whether `binary` runs and is [`VERSION`].
fn reports_version(binary: &Path) -> bool {
    output(Command::new(binary).arg("--version"))
        .is_some_and(|version| version.trim() == format!("Kubernetes v{VERSION}"))
}

/// Adds `deb-src` for every `deb` source of the machine's Debian list.
fn add_source_list() -> anyhow::Result<()> {
    if Path::new(SOURCE_LIST).exists() {
        return Ok(());
    }
    let debian = Path::new("/etc/apt/sources.list.d/debian.sources");
    let text = fs::read_to_string(debian).with_context(|| {
        format!(
            "cannot read {}; add a deb-src entry for bookworm by hand",
            debian.display()
        )
    })?;
    fs::write(SOURCE_LIST, source_stanzas(&text))
        .with_context(|| format!("cannot write {SOURCE_LIST}"))
}

/// The deb822 `text` with every `Types: deb` stanza as `deb-src`, and the
/// others left out.
fn source_stanzas(text: &str) -> String {
    text.split("\n\n")
        .filter(|stanza| stanza.lines().any(|line| line.trim() == "Types: deb"))
        .map(|stanza| stanza.replace("Types: deb\n", "Types: deb-src\n"))
        .map(|stanza| stanza.trim().to_string() + "\n")
        .collect::<Vec<_>>()
        .join("\n")
}

/// The runtime's map iterator (Go 1.18 to 1.22), which the caller now
/// allocates: every field, so the allocation has the runtime's size.
const HITER: &str = "type hiter struct {
\tkey         unsafe.Pointer
\tvalue       unsafe.Pointer
\tt           unsafe.Pointer
\th           unsafe.Pointer
\tbuckets     unsafe.Pointer
\tbptr        unsafe.Pointer
\toverflow    *[]unsafe.Pointer
\toldoverflow *[]unsafe.Pointer
\tstartBucket uintptr
\toffset      uint8
\twrapped     bool
\tB           uint8
\ti           uint8
\tbucket      uintptr
\tcheckBucket uintptr
}";

/// reflect2 v1.0.2's change: since Go 1.18 `reflect.mapiterinit` fills in
/// an iterator the caller allocates instead of returning one.
fn fix_reflect2(dir: &Path) -> anyhow::Result<()> {
    replace_once(
        &dir.join("unsafe_link.go"),
        "type hiter struct {\n\tkey   unsafe.Pointer // Must be in first position.  Write nil to indicate iteration end (see cmd/internal/gc/range.go).\n\tvalue unsafe.Pointer // Must be in second position (see cmd/internal/gc/range.go).\n\t// rest fields are ignored\n}",
        HITER,
    )?;
    replace_once(
        &dir.join("unsafe_link.go"),
        "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer) *hiter",
        "func mapiterinit(rtype unsafe.Pointer, m unsafe.Pointer, it *hiter)",
    )?;
    replace_once(
        &dir.join("unsafe_map.go"),
        "\treturn &UnsafeMapIterator{\n\t\thiter:      mapiterinit(type2.rtype, *(*unsafe.Pointer)(obj)),",
        "\tvar it hiter\n\tmapiterinit(type2.rtype, *(*unsafe.Pointer)(obj), &it)\n\treturn &UnsafeMapIterator{\n\t\thiter:      &it,",
    )
}

fn replace_once(file: &Path, from: &str, to: &str) -> anyhow::Result<()> {
    let text =
        fs::read_to_string(file).with_context(|| format!("cannot read {}", file.display()))?;
    if text.matches(from).count() != 1 {
        bail!(
            "{}: the code the reflect2 fix replaces is not there once; the vendored reflect2 changed",
            file.display()
        );
    }
    fs::write(file, text.replacen(from, to, 1))
        .with_context(|| format!("cannot write {}", file.display()))
}

#[cfg(test)]
mod tests {
    use super::source_stanzas;

    #[test]
    fn binary_sources_become_source_sources_and_others_are_left_out() {
        let list = "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm\nComponents: main\n\nTypes: deb-src\nURIs: http://mirror.invalid/debian\nSuites: sid\n";
        assert_eq!(
            source_stanzas(list),
            "Types: deb-src\nURIs: http://mirror.invalid/debian\nSuites: bookworm\nComponents: main\n"
        );
    }
}
