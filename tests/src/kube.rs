//! A real Kubernetes API server (kube-apiserver 1.20 with etcd 3.4, both
//! from Debian: the server built from Debian's source package by `cargo
//! xtask test`) on the loopback of a test namespace, so a daemon in that
//! namespace reaches it as an in-cluster one reaches its cluster's. Both
//! processes and their files are removed on drop, also when a test fails.
use std::{
    fs,
    io::Write as _,
    path::{Path, PathBuf},
    process::{Child, Command, Output, Stdio},
    sync::atomic::{AtomicU32, Ordering},
    thread,
    time::{Duration, Instant},
};

use crate::netns::Topology;

/// Where the API server listens, inside its namespace.
pub const SERVER: &str = "https://127.0.0.1:6443";
/// The namespace the gateway's deployment runs in (`deploy/kubernetes/`).
pub const GATEWAY_NAMESPACE: &str = "istio-system";
/// The gateway's service account there.
pub const GATEWAY_ACCOUNT: &str = "xdp-gateway";
/// How long the server may take to become ready (about 5 s here).
const READY_WITHIN: Duration = Duration::from_secs(60);

static NEXT: AtomicU32 = AtomicU32::new(0);

/// The kube-apiserver binary: `GATEWAY_KUBE_APISERVER` (set by `cargo
/// xtask test`, which builds it) or the cache it builds it into.
pub fn apiserver_bin() -> PathBuf {
    let path = std::env::var_os("GATEWAY_KUBE_APISERVER").map_or_else(
        || PathBuf::from("/var/cache/gateway-kube/kube-apiserver-1.20.2"),
        PathBuf::from,
    );
    assert!(
        path.exists(),
        "no kube-apiserver at {}: `cargo xtask test` builds it (or set GATEWAY_KUBE_APISERVER)",
        path.display()
    );
    path
}

/// Who a request to the server is made as.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Identity {
    /// `system:masters`: applies CRDs, RBAC and the test's objects.
    Admin,
    /// The gateway's service account, with only the RBAC the deployment grants.
    Gateway,
}

impl Identity {
    fn token(self) -> &'static str {
        match self {
            Self::Admin => "admin-token",
            Self::Gateway => "gateway-token",
        }
    }
}

/// etcd and kube-apiserver running in one namespace of a topology.
pub struct ApiServer {
    namespace: String,
    dir: PathBuf,
    etcd: Option<Child>,
    apiserver: Option<Child>,
}

impl ApiServer {
    /// Starts etcd and the API server in `namespace` of `topology` and waits
    /// until `/readyz` answers; panics with their logs if they do not.
    pub fn start(topology: &Topology, namespace: &str) -> Self {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("gwt-kube-{}-{n}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        fs::create_dir_all(&dir).expect("a scratch directory");
        let mut server = Self {
            namespace: namespace.to_string(),
            dir,
            etcd: None,
            apiserver: None,
        };
        server.write_credentials();
        let etcd_log = server.file("etcd.log");
        server.etcd = Some(spawn_logged(
            &mut topology.exec(
                namespace,
                &[
                    "etcd",
                    "--data-dir",
                    &server.path("etcd"),
                    "--listen-client-urls",
                    "http://127.0.0.1:2379",
                    "--advertise-client-urls",
                    "http://127.0.0.1:2379",
                    "--listen-peer-urls",
                    "http://127.0.0.1:2380",
                ],
            ),
            &etcd_log,
        ));
        server.start_apiserver(topology);
        server
    }

    /// Starts the API server (again) and waits until it is ready.
    pub fn start_apiserver(&mut self, topology: &Topology) {
        let bin = apiserver_bin();
        let log = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.file("apiserver.log"))
            .expect("a log file");
        let err = log.try_clone().expect("a log file");
        let child = topology
            .exec(
                &self.namespace,
                &[
                    &bin.to_string_lossy(),
                    "--etcd-servers",
                    "http://127.0.0.1:2379",
                    "--bind-address",
                    "127.0.0.1",
                    "--advertise-address",
                    "127.0.0.1",
                    "--secure-port",
                    "6443",
                    "--cert-dir",
                    &self.path("certs"),
                    "--token-auth-file",
                    &self.path("tokens.csv"),
                    "--authorization-mode",
                    "RBAC",
                    "--service-account-key-file",
                    &self.path("sa.pub"),
                    "--service-account-signing-key-file",
                    &self.path("sa.key"),
                    "--service-account-issuer",
                    "https://kubernetes.default.svc",
                    // Room for the ClusterIPs of `bench kubernetes`' 1,000 Services.
                    "--service-cluster-ip-range",
                    "10.96.0.0/16",
                ],
            )
            .stdin(Stdio::null())
            .stdout(log)
            .stderr(err)
            .spawn()
            .expect("start kube-apiserver");
        self.apiserver = Some(child);
        self.wait_ready(topology);
    }

    /// Stops the API server (etcd keeps the objects).
    pub fn stop_apiserver(&mut self) {
        if let Some(child) = self.apiserver.take() {
            stop(child);
        }
    }

    /// A kubeconfig file for `identity`, trusting the server's own certificate.
    pub fn kubeconfig(&self, identity: Identity) -> PathBuf {
        let path = self.dir.join(format!("kubeconfig-{identity:?}"));
        let config = format!(
            "apiVersion: v1
kind: Config
clusters:
- name: test
  cluster: {{server: \"{SERVER}\", certificate-authority: \"{ca}\"}}
users:
- name: user
  user: {{token: {token}}}
contexts:
- name: test
  context: {{cluster: test, user: user, namespace: {GATEWAY_NAMESPACE}}}
current-context: test
",
            ca = self.path("certs/apiserver.crt"),
            token = identity.token(),
        );
        fs::write(&path, config).expect("write a kubeconfig");
        path
    }

    /// Runs `kubectl <args>` as `identity` in the server's namespace, with
    /// `stdin` on its standard input.
    pub fn kubectl(
        &self,
        topology: &Topology,
        identity: Identity,
        args: &[&str],
        stdin: &str,
    ) -> Output {
        let kubeconfig = self.kubeconfig(identity);
        let mut argv = vec!["kubectl", "--kubeconfig"];
        let kubeconfig = kubeconfig.to_string_lossy();
        argv.push(&kubeconfig);
        argv.extend_from_slice(args);
        let mut child = topology
            .exec(&self.namespace, &argv)
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start kubectl");
        if let Some(mut input) = child.stdin.take() {
            input.write_all(stdin.as_bytes()).expect("kubectl's stdin");
        }
        child.wait_with_output().expect("kubectl runs")
    }

    /// `kubectl apply -f -` of `yaml` as the admin; panics with kubectl's
    /// output if it fails.
    pub fn apply(&self, topology: &Topology, yaml: &str) {
        let out = self.kubectl(topology, Identity::Admin, &["apply", "-f", "-"], yaml);
        assert!(
            out.status.success(),
            "kubectl apply failed: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }

    /// The logs of etcd and the API server, for a failure message.
    pub fn logs(&self) -> String {
        let tail = |name: &str| {
            let text = fs::read_to_string(self.dir.join(name)).unwrap_or_default();
            let lines: Vec<&str> = text.lines().collect();
            lines[lines.len().saturating_sub(40)..].join("\n")
        };
        format!(
            "--- etcd.log\n{}\n--- apiserver.log\n{}",
            tail("etcd.log"),
            tail("apiserver.log")
        )
    }

    fn wait_ready(&mut self, topology: &Topology) {
        let deadline = Instant::now() + READY_WITHIN;
        loop {
            let out = self.kubectl(topology, Identity::Admin, &["get", "--raw", "/readyz"], "");
            if out.status.success() && String::from_utf8_lossy(&out.stdout).trim() == "ok" {
                return;
            }
            let exited = [&mut self.etcd, &mut self.apiserver]
                .into_iter()
                .flatten()
                .any(|child| matches!(child.try_wait(), Ok(Some(_))));
            assert!(
                !exited && Instant::now() < deadline,
                "the API server is not ready (exited: {exited}):\n{}",
                self.logs()
            );
            thread::sleep(Duration::from_millis(200));
        }
    }

    /// The service-account signing key and the static tokens: the admin's,
    /// and the gateway service account's (the identity a pod of the
    /// DaemonSet has, so RBAC applies to it exactly as in a cluster).
    fn write_credentials(&self) {
        let out = Command::new("openssl")
            .args(["genrsa", "-out", &self.path("sa.key"), "2048"])
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl genrsa failed");
        let out = Command::new("openssl")
            .args([
                "rsa",
                "-in",
                &self.path("sa.key"),
                "-pubout",
                "-out",
                &self.path("sa.pub"),
            ])
            .output()
            .expect("openssl runs");
        assert!(out.status.success(), "openssl rsa failed");
        let tokens = format!(
            "admin-token,admin,admin,\"system:masters\"\n\
             gateway-token,system:serviceaccount:{GATEWAY_NAMESPACE}:{GATEWAY_ACCOUNT},gateway,\"system:serviceaccounts,system:serviceaccounts:{GATEWAY_NAMESPACE},system:authenticated\"\n"
        );
        fs::write(self.dir.join("tokens.csv"), tokens).expect("write tokens");
    }

    fn path(&self, name: &str) -> String {
        self.dir.join(name).to_string_lossy().into_owned()
    }

    fn file(&self, name: &str) -> PathBuf {
        self.dir.join(name)
    }
}

impl Drop for ApiServer {
    fn drop(&mut self) {
        for child in [self.apiserver.take(), self.etcd.take()]
            .into_iter()
            .flatten()
        {
            stop(child);
        }
        let _ = fs::remove_dir_all(&self.dir);
    }
}

fn spawn_logged(command: &mut Command, log: &Path) -> Child {
    let file = fs::File::create(log).expect("a log file");
    let err = file.try_clone().expect("a log file");
    command
        .stdin(Stdio::null())
        .stdout(file)
        .stderr(err)
        .spawn()
        .expect("start the process")
}

/// SIGTERM, then SIGKILL if it has not exited within 5 seconds.
fn stop(mut child: Child) {
    if let Ok(pid) = i32::try_from(child.id()) {
        // SAFETY: kill has no memory preconditions; the pid is our child's.
        unsafe { libc::kill(pid, libc::SIGTERM) };
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while Instant::now() < deadline {
        if matches!(child.try_wait(), Ok(Some(_))) {
            return;
        }
        thread::sleep(Duration::from_millis(50));
    }
    let _ = child.kill();
    let _ = child.wait();
}
