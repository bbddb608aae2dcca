//! The `gateway` binary's behaviour on bad input, which needs no root: the
//! configuration is read and checked before anything touches the kernel.
use std::process::Command;

fn gateway(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_gateway"))
        .args(args)
        .env("RUST_LOG", "info")
        .output()
        .expect("run gateway")
}

#[test]
fn invalid_config_fails_with_every_positioned_error_and_starts_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("bad.yaml");
    std::fs::write(
        &path,
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata:\n  name: bad\nspec:\n  servers:\n  - port: {number: 80, name: \"\", protocol: SMTP}\n    hosts: [a.example.com]\n",
    )
    .unwrap();
    let out = gateway(&[
        "run",
        "--config",
        path.to_str().unwrap(),
        "--interface",
        "lo",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    let file = path.display();
    assert!(
        stderr.contains(&format!("{file}:7:44: error: Gateway default/bad: spec.servers[0].port.protocol: invalid protocol \"SMTP\"")),
        "{stderr}"
    );
    assert!(
        stderr.contains(&format!("{file}:7:30: error: Gateway default/bad: spec.servers[0].port.name: port name must be set")),
        "{stderr}"
    );
    assert!(
        stderr.contains("error: 2 error(s) in the configuration; nothing was started"),
        "{stderr}"
    );
}

#[test]
fn missing_config_file_is_named() {
    let out = gateway(&["run", "--config", "/nonexistent.yaml", "--interface", "lo"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr.contains("error: cannot read /nonexistent.yaml: No such file or directory"),
        "{stderr}"
    );
}

#[test]
fn bad_flag_value_is_rejected_by_name() {
    let out = gateway(&[
        "run",
        "--config",
        "x.yaml",
        "--interface",
        "lo",
        "--address",
        "not-an-ip",
    ]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        stderr.contains("invalid value 'not-an-ip' for '--address <IP>'"),
        "{stderr}"
    );
}
