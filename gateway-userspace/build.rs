//! Builds the XDP program (gateway-ebpf) for bpfel-unknown-none with the
//! installed nightly and bpf-linker, so a plain `cargo build` embeds it.
//!
//! Without those tools (a host that only runs unit tests), the binary is
//! built without the object and `gateway run` says how to fix that, unless
//! GATEWAY_REQUIRE_EBPF=1 (set by `cargo xtask`), which makes it a hard error.
//! GATEWAY_SKIP_EBPF=1 leaves the object out on purpose, for builds that never
//! load it (fuzzing).
use std::{env, path::PathBuf, process::Command};

fn main() {
    println!("cargo::rustc-check-cfg=cfg(gateway_no_ebpf)");
    println!("cargo:rerun-if-env-changed=GATEWAY_REQUIRE_EBPF");
    println!("cargo:rerun-if-env-changed=GATEWAY_SKIP_EBPF");
    if env::var("GATEWAY_SKIP_EBPF").is_ok_and(|v| v == "1") {
        println!("cargo:rustc-cfg=gateway_no_ebpf");
        return;
    }
    let required = env::var("GATEWAY_REQUIRE_EBPF").is_ok_and(|v| v == "1");
    if let Some(missing) = missing_tool() {
        if required {
            panic!("cannot build the XDP program: {missing}; run `cargo xtask setup`");
        }
        println!(
            "cargo:warning=building without the XDP program ({missing}); `cargo xtask setup` installs what is missing"
        );
        println!("cargo:rustc-cfg=gateway_no_ebpf");
        return;
    }
    let ebpf_dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../gateway-ebpf");
    let ebpf_dir = ebpf_dir.to_string_lossy().into_owned();
    let package = aya_build::Package {
        name: "gateway-ebpf",
        root_dir: &ebpf_dir,
        ..Default::default()
    };
    if let Err(err) = aya_build::build_ebpf([package], aya_build::Toolchain::Nightly) {
        panic!("building the XDP program failed: {err:#}");
    }
}

/// Names the first build tool that is not installed, if any.
fn missing_tool() -> Option<&'static str> {
    let works = |cmd: &str, args: &[&str]| {
        Command::new(cmd)
            .args(args)
            .output()
            .is_ok_and(|out| out.status.success())
    };
    if !works("rustup", &["run", "nightly", "rustc", "--version"]) {
        return Some("the nightly toolchain is not installed");
    }
    if !works("bpf-linker", &["--version"]) {
        return Some("bpf-linker is not on PATH");
    }
    None
}
