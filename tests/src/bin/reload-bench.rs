//! `cargo xtask bench reload`: what a configuration reload costs at scale.
//! A running daemon (the `gateway` binary in `GATEWAY_BIN`) serving one
//! host under a client loop is reloaded to 1,000 listeners with 10,000
//! server hosts, then to the same with one host changed; for each reload,
//! the time to read and compile the configuration and to update the kernel
//! maps (from the daemon's log), and the requests that failed meanwhile
//! (target: none). Prints a Markdown table.
use std::{
    fs,
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use gateway_tests::{
    daemon::{ADMIN, Daemon},
    hostile::Scratch,
    netns::{GATEWAY_V4, Topology},
};

const LISTENERS: u16 = 1000;
const HOSTS_PER_LISTENER: usize = 10;
const FIRST_PORT: u16 = 20000;

/// The served host on port 8080 and, with `listeners`, that many more HTTP
/// listeners with `HOSTS_PER_LISTENER` hosts each; `variant` renames one host.
fn config(listeners: u16, variant: usize) -> String {
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {name: gw, namespace: istio-system}\nspec:\n  selector: {istio: ingressgateway}\n  servers:\n  - port: {number: 8080, name: load, protocol: HTTP}\n    hosts: [load.example]\n",
    );
    for index in 0..listeners {
        let port = FIRST_PORT + index;
        let hosts: Vec<String> = (0..HOSTS_PER_LISTENER)
            .map(|h| {
                let tag = if index == 0 && h == 0 { variant } else { 0 };
                format!("\"h{h}-{tag}.p{port}.example\"")
            })
            .collect();
        yaml.push_str(&format!(
            "  - port: {{number: {port}, name: p{port}, protocol: HTTP}}\n    hosts: [{}]\n",
            hosts.join(", ")
        ));
    }
    yaml.push_str(
        "---\napiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata: {name: load, namespace: istio-system}\nspec:\n  hosts: [load.example]\n  gateways: [gw]\n  http:\n  - directResponse: {status: 200, body: {string: ok}}\n",
    );
    yaml
}

fn replace(path: &Path, text: &str) -> anyhow::Result<()> {
    let staged = path.with_extension("staged");
    fs::write(&staged, text)?;
    fs::rename(&staged, path)?;
    Ok(())
}

/// A client asking for the served host in a loop (at most 3,000 requests
/// or 120 s), one status code per line.
fn client_loop(topology: &Topology) -> anyhow::Result<Child> {
    let script = format!(
        "end=$((SECONDS+120)); for i in $(seq 1 3000); do [ $SECONDS -ge $end ] && break; \
         curl -s -o /dev/null -w '%{{http_code}}\\n' --max-time 3 --resolve load.example:8080:{GATEWAY_V4} http://load.example:8080/; done"
    );
    topology
        .exec(&topology.client_ns, &["bash", "-c", &script])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .context("client loop")
}

/// Sends SIGHUP and waits for the reload's log line; returns (compile ms,
/// maps ms).
fn reload(daemon: &Daemon, done_before: usize) -> anyhow::Result<(f64, f64)> {
    // SAFETY: kill(2) on the daemon this process started.
    unsafe { libc::kill(daemon.pid() as i32, libc::SIGHUP) };
    let deadline = Instant::now() + Duration::from_secs(120);
    loop {
        let log = daemon.log();
        let lines: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("configuration reloaded:"))
            .collect();
        if lines.len() > done_before {
            let line = lines[done_before];
            let number = |after: &str| -> Option<f64> {
                let rest = &line[line.find(after)? + after.len()..];
                rest.split_whitespace().next()?.parse().ok()
            };
            let compile = number("compiled in ").context("compile time in the log")?;
            let maps = number("maps updated in ").context("map time in the log")?;
            return Ok((compile, maps));
        }
        if log.contains("configuration reload refused") {
            bail!("the reload was refused:\n{log}");
        }
        if Instant::now() > deadline {
            bail!("no reload within 120 s:\n{log}");
        }
        thread::sleep(Duration::from_millis(20));
    }
}

fn main() -> anyhow::Result<()> {
    let topology = Topology::new();
    let scratch = Scratch::new();
    let path = scratch.path.join("gateway.yaml");
    fs::write(&path, config(0, 0))?;
    let daemon = Daemon::start(
        &topology,
        &[
            "--config",
            &path.display().to_string(),
            "--interface",
            &topology.gateway_if,
            "--address",
            GATEWAY_V4,
            "--admin-address",
            ADMIN,
        ],
    );
    let client = client_loop(&topology)?;
    thread::sleep(Duration::from_secs(1));

    let mut rows = Vec::new();
    let steps = [
        (
            "1 -> 1,001 listeners, 10,000 hosts added",
            config(LISTENERS, 0),
        ),
        (
            "1,001 listeners, 10,001 hosts: one host renamed",
            config(LISTENERS, 1),
        ),
        (
            "back to 1 listener (1,000 listeners, 10,000 hosts removed)",
            config(0, 0),
        ),
    ];
    for (index, (name, text)) in steps.iter().enumerate() {
        replace(&path, text)?;
        let wall = Instant::now();
        let (compile, maps) = reload(&daemon, index)?;
        rows.push((*name, compile, maps, wall.elapsed()));
        thread::sleep(Duration::from_millis(500));
    }
    thread::sleep(Duration::from_millis(500));
    let mut client = client;
    let _ = client.kill();
    let output = client.wait_with_output()?;
    let codes = String::from_utf8_lossy(&output.stdout).into_owned();
    let total = codes.lines().count();
    let failed = codes.lines().filter(|c| *c != "200").count();

    println!("| reload | read + compile, ms | kernel maps, ms | SIGHUP to reloaded, ms |");
    println!("|---|---|---|---|");
    for (name, compile, maps, wall) in rows {
        println!(
            "| {name} | {compile:.1} | {maps:.1} | {:.0} |",
            wall.as_secs_f64() * 1000.0
        );
    }
    println!(
        "\nRequests to a listener that stays, in a loop through all three reloads: {total}, failed: {failed} (target 0)."
    );
    if failed > 0 {
        bail!("{failed} of {total} requests failed during the reloads: {codes}");
    }
    Ok(())
}
