//! Two network namespaces joined by a veth pair, with documentation-range
//! addresses: the gateway side and the client side. Removed on drop.
use std::{
    process::{Command, Output},
    sync::atomic::{AtomicU32, Ordering},
};

/// Gateway-side IPv4 address.
pub const GATEWAY_V4: &str = "192.0.2.1";
/// Client-side IPv4 address.
pub const CLIENT_V4: &str = "192.0.2.2";
/// Gateway-side IPv6 address.
pub const GATEWAY_V6: &str = "2001:db8::1";
/// Client-side IPv6 address.
pub const CLIENT_V6: &str = "2001:db8::2";
/// The gateway's address towards the backend namespace.
pub const GATEWAY_TO_BACKEND_V4: &str = "198.51.100.1";
/// The backend namespace's address.
pub const BACKEND_V4: &str = "198.51.100.2";
/// The gateway's IPv6 address towards the backend namespace.
pub const GATEWAY_TO_BACKEND_V6: &str = "2001:db8:1::1";
/// The backend namespace's IPv6 address.
pub const BACKEND_V6: &str = "2001:db8:1::2";

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The namespaces and links of one test.
pub struct Topology {
    /// Namespace the daemon runs in.
    pub gateway_ns: String,
    /// Namespace the clients run in.
    pub client_ns: String,
    /// The veth end inside `gateway_ns`, where XDP attaches.
    pub gateway_if: String,
    /// Namespace backends run in, linked to the gateway's (not the
    /// client's), once [`Topology::add_backend_namespace`] made it.
    pub backend_ns: Option<String>,
}

impl Topology {
    /// Creates the namespaces and link; panics (after cleaning up) on failure.
    pub fn new() -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let tag = format!("{}x{n}", std::process::id() % 100_000);
        let topology = Self {
            gateway_ns: format!("gwt-{tag}-gw"),
            client_ns: format!("gwt-{tag}-cl"),
            gateway_if: format!("gw{tag}"),
            backend_ns: None,
        };
        let client_if = format!("cl{tag}");
        let (gw, cl, gw_if) = (
            &topology.gateway_ns,
            &topology.client_ns,
            &topology.gateway_if,
        );
        // The guard exists from here on, so a failing step still removes what was made.
        for ns in [gw, cl] {
            must(Command::new("ip").args(["netns", "add", ns]));
        }
        must(Command::new("ip").args([
            "link", "add", gw_if, "netns", gw, "type", "veth", "peer", "name", &client_if, "netns",
            cl,
        ]));
        for (ns, link, v4, v6) in [
            (gw, gw_if, GATEWAY_V4, GATEWAY_V6),
            (cl, &client_if, CLIENT_V4, CLIENT_V6),
        ] {
            must(&mut topology.exec(ns, &["ip", "addr", "add", &format!("{v4}/24"), "dev", link]));
            must(&mut topology.exec(
                ns,
                &[
                    "ip",
                    "addr",
                    "add",
                    &format!("{v6}/64"),
                    "dev",
                    link,
                    "nodad",
                ],
            ));
            must(&mut topology.exec(ns, &["ip", "link", "set", link, "up"]));
            must(&mut topology.exec(ns, &["ip", "link", "set", "lo", "up"]));
        }
        topology
    }

    /// Adds a backend namespace joined to the gateway's by a second veth:
    /// the gateway is [`GATEWAY_TO_BACKEND_V4`], backends [`BACKEND_V4`].
    pub fn add_backend_namespace(&mut self) -> &str {
        let tag = self
            .gateway_ns
            .trim_end_matches("-gw")
            .trim_start_matches("gwt-")
            .to_string();
        let ns = format!("gwt-{tag}-be");
        must(Command::new("ip").args(["netns", "add", &ns]));
        // Recorded at once, so Drop removes it even if a later step fails.
        self.backend_ns = Some(ns.clone());
        let (gw_side, be_side) = (format!("gb{tag}"), format!("bg{tag}"));
        must(Command::new("ip").args([
            "link",
            "add",
            &gw_side,
            "netns",
            &self.gateway_ns,
            "type",
            "veth",
            "peer",
            "name",
            &be_side,
            "netns",
            &ns,
        ]));
        let gateway_ns = self.gateway_ns.clone();
        for (ns, link, v4, v6) in [
            (
                &gateway_ns,
                &gw_side,
                GATEWAY_TO_BACKEND_V4,
                GATEWAY_TO_BACKEND_V6,
            ),
            (&ns, &be_side, BACKEND_V4, BACKEND_V6),
        ] {
            must(&mut self.exec(ns, &["ip", "addr", "add", &format!("{v4}/24"), "dev", link]));
            let v6 = format!("{v6}/64");
            must(&mut self.exec(ns, &["ip", "addr", "add", &v6, "dev", link, "nodad"]));
            must(&mut self.exec(ns, &["ip", "link", "set", link, "up"]));
            must(&mut self.exec(ns, &["ip", "link", "set", "lo", "up"]));
        }
        self.backend_ns.as_deref().unwrap_or_default()
    }

    /// A command that runs `argv` inside namespace `ns`.
    pub fn exec(&self, ns: &str, argv: &[&str]) -> Command {
        let mut cmd = Command::new("ip");
        cmd.args(["netns", "exec", ns]).args(argv);
        cmd
    }

    /// Runs `argv` in the client namespace and returns its output.
    pub fn client(&self, argv: &[&str]) -> Output {
        output(&mut self.exec(&self.client_ns, argv))
    }

    /// The body of `http://host:port/` fetched from the client namespace
    /// at `ip` (curl, 3 s at most), or curl's complaint.
    pub fn http_body(&self, ip: &str, port: u16, host: &str) -> Result<String, String> {
        let resolve = format!("{host}:{port}:{ip}");
        let url = format!("http://{host}:{port}/");
        let argv = [
            "curl",
            "-sS",
            "--max-time",
            "3",
            "--resolve",
            &resolve,
            &url,
        ];
        let out = self.client(&argv);
        if out.status.success() {
            Ok(String::from_utf8_lossy(&out.stdout).into_owned())
        } else {
            Err(String::from_utf8_lossy(&out.stderr).into_owned())
        }
    }

    /// Runs `argv` in the gateway namespace and returns its output.
    pub fn gateway(&self, argv: &[&str]) -> Output {
        output(&mut self.exec(&self.gateway_ns, argv))
    }
}

impl Default for Topology {
    fn default() -> Self {
        Self::new()
    }
}

impl Drop for Topology {
    fn drop(&mut self) {
        // Deleting a namespace deletes the veth end inside it, and with it the peer.
        for ns in [
            Some(&self.gateway_ns),
            Some(&self.client_ns),
            self.backend_ns.as_ref(),
        ]
        .into_iter()
        .flatten()
        {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}

fn output(cmd: &mut Command) -> Output {
    cmd.output()
        .unwrap_or_else(|err| panic!("cannot run {cmd:?}: {err}"))
}

fn must(cmd: &mut Command) {
    let out = output(cmd);
    assert!(
        out.status.success(),
        "{cmd:?} failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}
