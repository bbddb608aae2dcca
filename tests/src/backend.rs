//! A `test-backend` process in the topology's backend namespace, killed on drop.
use std::{
    net::SocketAddr,
    path::Path,
    process::{Child, Stdio},
    thread,
    time::{Duration, Instant},
};

use crate::netns::Topology;

/// A running backend.
pub struct Backend {
    child: Child,
}

impl Backend {
    /// Starts `binary` (the `test-backend` built with the tests, or any
    /// server) with `args` in namespace `ns` and waits until `addr` accepts
    /// connections (probed from inside `ns`). Panics after 10 seconds.
    pub fn start(
        topology: &Topology,
        ns: &str,
        binary: &Path,
        args: &[&str],
        addr: SocketAddr,
    ) -> Self {
        let child = topology
            .exec(ns, &[])
            .arg(binary)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .spawn()
            .expect("spawn test-backend");
        let backend = Self { child };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let probe = topology
                .exec(
                    ns,
                    &[
                        "bash",
                        "-c",
                        &format!("exec 3<>/dev/tcp/{}/{}", addr.ip(), addr.port()),
                    ],
                )
                .stderr(Stdio::null())
                .status();
            if probe.is_ok_and(|s| s.success()) {
                return backend;
            }
            assert!(
                Instant::now() < deadline,
                "test-backend not listening on {addr}"
            );
            thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}
