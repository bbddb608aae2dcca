//! The egress plug-in: which connections it claims and how it names their
//! interface, and each [`Hook`] method on real loopback connections, with
//! the entries the log phase is handed. A loopback connection's original
//! destination is the listener it was made to, so ALLOW_ANY's passthrough
//! reaches that listener again.
use std::{io::ErrorKind, sync::Mutex, time::Duration};

use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::TcpListener,
    sync::watch,
};

use super::*;
use crate::{
    connection::{Activity, Gate},
    proxy::{
        access_log::{AccessLog, Format},
        testing,
        upstream::Upstreams,
    },
};

#[test]
fn verdicts_follow_the_entry() {
    let mut entry = Entry::default();
    assert_eq!(verdict(&entry), "allowed");
    entry.flags.push("NR");
    assert_eq!(verdict(&entry), "refused");
    entry.upstream_cluster = Some(PASSTHROUGH_CLUSTER.into());
    assert_eq!(verdict(&entry), "passthrough");
}

fn egress(interfaces: &[(u32, &str)]) -> Egress {
    Egress {
        policy: OutboundPolicy::RegistryOnly,
        gateway_addresses: vec!["192.0.2.1".parse().unwrap()],
        interfaces: interfaces
            .iter()
            .map(|(index, name)| (*index, Arc::from(*name)))
            .collect(),
        workloads: None,
    }
}

#[test]
fn only_connections_to_other_addresses_are_claimed_with_their_interface() {
    let remote: SocketAddr = "10.0.0.2:40000".parse().unwrap();
    let one = egress(&[(3, "veth-a")]);
    assert_eq!(one.claim("192.0.2.1:80".parse().unwrap(), remote), None);
    assert_eq!(
        one.claim("[::ffff:192.0.2.1]:80".parse().unwrap(), remote),
        None
    );
    let claimed = one.claim("203.0.113.9:443".parse().unwrap(), remote);
    assert_eq!(claimed.as_deref(), Some("veth-a"));
    // Two interfaces and no counters to tell them apart: claimed, as "-".
    let two = egress(&[(3, "veth-a"), (4, "veth-b")]);
    let claimed = two.claim("203.0.113.9:443".parse().unwrap(), remote);
    assert_eq!(claimed.as_deref(), Some("-"));
}

#[test]
fn the_interface_lookup_the_daemon_passes_picks_among_the_captured_ones() {
    let mut two = egress(&[(3, "veth-a"), (4, "veth-b")]);
    two.workloads = Some(Arc::new(|_, mut among: &mut dyn Iterator<Item = u32>| {
        Iterator::find(&mut among, |index| *index == 4)
    }));
    let claimed = two.claim(
        "203.0.113.9:443".parse().unwrap(),
        "10.0.0.2:40000".parse().unwrap(),
    );
    assert_eq!(claimed.as_deref(), Some("veth-b"));
}

#[test]
fn the_log_hook_gives_a_claimed_entry_its_verdict() {
    let mut entry = Entry {
        workload_interface: Some(Arc::from("veth-a")),
        flags: vec!["NR"],
        ..Entry::default()
    };
    egress(&[(3, "veth-a")]).log(&mut entry);
    assert_eq!(entry.verdict, Some("refused"));
}

/// How long a test waits for the proxy's side before it fails.
const PATIENCE: Duration = Duration::from_secs(5);
/// The captured interface every test connection comes from.
const INTERFACE: &str = "veth-a";

/// The plug-in as the log phase sees it: completes each entry as the
/// egress under test does, and keeps it for the test.
#[derive(Debug)]
struct Recorder {
    egress: Egress,
    entries: Mutex<Vec<Entry>>,
}

impl Hook for Recorder {
    fn claim(&self, local: SocketAddr, remote: SocketAddr) -> Option<Arc<str>> {
        self.egress.claim(local, remote)
    }

    fn unserved_port<'a>(
        &'a self,
        stream: TcpStream,
        downstream: Downstream,
        conn: Conn<'a>,
    ) -> HookFuture<'a> {
        self.egress.unserved_port(stream, downstream, conn)
    }

    fn unknown_sni<'a>(
        &'a self,
        stream: TcpStream,
        prefix: &'a [u8],
        downstream: &'a Downstream,
        conn: &'a Conn<'a>,
    ) -> HookFuture<'a, Option<TcpStream>> {
        self.egress.unknown_sni(stream, prefix, downstream, conn)
    }

    fn http<'a>(
        &'a self,
        stream: TcpStream,
        serves: &'a (dyn Fn(&str) -> bool + Sync),
        downstream: &'a Downstream,
        conn: &'a Conn<'a>,
    ) -> HookFuture<'a, HttpChoice> {
        self.egress.http(stream, serves, downstream, conn)
    }

    fn log(&self, entry: &mut Entry) {
        self.egress.log(entry);
        self.entries
            .lock()
            .expect("no test panicked")
            .push(entry.clone());
    }
}

/// An egress under `policy` and what its connections are served with.
struct Harness {
    egress: Egress,
    recorder: Arc<Recorder>,
    shared: Arc<Shared>,
    gate: Gate,
    activity: Arc<Activity>,
    drain: watch::Receiver<bool>,
    _draining: watch::Sender<bool>,
}

impl Harness {
    fn new(policy: OutboundPolicy) -> Self {
        let egress = Egress {
            policy,
            ..egress(&[(3, INTERFACE)])
        };
        let recorder = Arc::new(Recorder {
            egress: egress.clone(),
            entries: Mutex::default(),
        });
        let shared = Arc::new(Shared {
            upstreams: Upstreams::default(),
            hook: Some(Arc::clone(&recorder) as Arc<dyn Hook>),
            access_log: AccessLog::new(Format::Off),
            trusted_proxies: 0,
            tcp_idle_timeout: Duration::from_secs(60),
            jwt: None,
            jwks_fetch: None,
            authorizer: Default::default(),
        });
        let (draining, drain) = watch::channel(false);
        Self {
            egress,
            recorder,
            shared,
            gate: Gate::new(testing::limits()),
            activity: Arc::new(Activity::new()),
            drain,
            _draining: draining,
        }
    }

    fn conn(&self) -> Conn<'_> {
        Conn {
            shared: &self.shared,
            gate: &self.gate,
            activity: &self.activity,
            drain: self.drain.clone(),
        }
    }

    /// The one entry the log phase was handed.
    fn entry(&self) -> Entry {
        let entries = self.recorder.entries.lock().expect("no test panicked");
        match &entries[..] {
            [entry] => entry.clone(),
            other => panic!("one entry expected, got {other:#?}"),
        }
    }
}

/// A connection a workload made, as the proxy accepted it.
struct Captured {
    /// The workload's end.
    client: TcpStream,
    /// The proxy's end.
    server: TcpStream,
    /// The listener the connection was made to: its original destination.
    origin: TcpListener,
    downstream: Downstream,
}

async fn captured(sni: Option<&str>) -> Captured {
    let origin = TcpListener::bind((testing::LOOPBACK, 0))
        .await
        .expect("bind loopback");
    let client = TcpStream::connect(origin.local_addr().expect("local address"))
        .await
        .expect("connect");
    let (server, remote) = origin.accept().await.expect("accept");
    let downstream = Downstream {
        tls: false,
        local: server.local_addr().expect("local address"),
        remote,
        sni: sni.map(str::to_string),
        workload_interface: Some(Arc::from(INTERFACE)),
        remote_ip: std::sync::OnceLock::new(),
    };
    Captured {
        client,
        server,
        origin,
        downstream,
    }
}

/// Runs `hook` (the proxy's side) while the original destination accepts
/// the passthrough, reads what the workload sent and answers `answer`;
/// returns what each end received.
async fn through_origin<T>(
    hook: impl Future<Output = T>,
    client: &mut TcpStream,
    origin: &TcpListener,
    sent: &[u8],
    answer: &[u8],
) -> (T, Vec<u8>, Vec<u8>) {
    let ends = async {
        let (mut upstream, _) = origin.accept().await.expect("the passthrough connects");
        client.write_all(sent).await.expect("write");
        client.shutdown().await.expect("half-close");
        let mut received = Vec::new();
        upstream.read_to_end(&mut received).await.expect("read");
        upstream.write_all(answer).await.expect("write");
        upstream.shutdown().await.expect("half-close");
        let mut back = Vec::new();
        client.read_to_end(&mut back).await.expect("read");
        (received, back)
    };
    let (out, (received, back)) =
        tokio::time::timeout(PATIENCE, async { tokio::join!(hook, ends) })
            .await
            .expect("the passthrough ends in time");
    (out, received, back)
}

/// The entry of a connection refused at the proxy.
fn assert_refused(entry: &Entry, downstream: &Downstream, between: (SystemTime, SystemTime)) {
    let start = entry.start.expect("a start time");
    assert!(between.0 <= start && start <= between.1, "{start:?}");
    assert_eq!(entry.flags, ["NR"]);
    assert_eq!(entry.details, Some("egress_refused"));
    assert_eq!(entry.downstream_local, Some(downstream.local));
    assert_eq!(entry.downstream_remote, Some(downstream.remote));
    assert_eq!(entry.sni, downstream.sni);
    assert_eq!(entry.workload_interface.as_deref(), Some(INTERFACE));
    assert_eq!(entry.upstream_cluster, None);
    assert_eq!(entry.verdict, Some("refused"));
}

/// The entry of a connection passed to its original destination.
fn assert_passed_through(
    entry: &Entry,
    downstream: &Downstream,
    between: (SystemTime, SystemTime),
    moved: (u64, u64),
) {
    let start = entry.start.expect("a start time");
    assert!(between.0 <= start && start <= between.1, "{start:?}");
    assert!(entry.flags.is_empty(), "{:?}", entry.flags);
    assert_eq!(entry.upstream_cluster.as_deref(), Some(PASSTHROUGH_CLUSTER));
    assert_eq!(entry.upstream_host, Some(downstream.local));
    assert_eq!(entry.downstream_local, Some(downstream.local));
    assert_eq!(entry.downstream_remote, Some(downstream.remote));
    assert_eq!(entry.sni, downstream.sni);
    assert_eq!(entry.workload_interface.as_deref(), Some(INTERFACE));
    assert_eq!((entry.bytes_received, entry.bytes_sent), moved);
    assert_eq!(entry.verdict, Some("passthrough"));
}

#[test]
fn the_debug_form_names_the_policy_and_the_interfaces() {
    assert_eq!(
        format!("{:?}", egress(&[(3, INTERFACE)])),
        "Egress { policy: RegistryOnly, interfaces: {3: \"veth-a\"}, .. }"
    );
}

#[test]
fn a_refusal_says_what_the_egress_gateway_lacks() {
    assert_eq!(
        Refusal::UnservedPort.to_string(),
        "no egress Gateway server on this port"
    );
    assert_eq!(
        Refusal::UnknownSni(Some("blocked.example".into())).to_string(),
        "SNI blocked.example is not a host of the egress Gateway"
    );
    assert_eq!(
        Refusal::UnknownSni(None).to_string(),
        "no SNI, and no default server"
    );
}

#[tokio::test]
async fn registry_only_resets_an_unserved_port_and_logs_it_refused() {
    let harness = Harness::new(OutboundPolicy::RegistryOnly);
    let Captured {
        mut client,
        server,
        downstream,
        ..
    } = captured(None).await;
    let before = SystemTime::now();
    let hook = harness
        .egress
        .unserved_port(server, downstream.clone(), harness.conn());
    tokio::time::timeout(PATIENCE, hook)
        .await
        .expect("refused at once");
    let after = SystemTime::now();
    let read = tokio::time::timeout(PATIENCE, client.read(&mut [0; 1]))
        .await
        .expect("the workload hears in time");
    assert_eq!(
        read.expect_err("a reset").kind(),
        ErrorKind::ConnectionReset
    );
    assert_refused(&harness.entry(), &downstream, (before, after));
}

#[tokio::test]
async fn registry_only_logs_an_unknown_sni_refused_and_hands_the_stream_back_for_the_alert() {
    let harness = Harness::new(OutboundPolicy::RegistryOnly);
    let Captured {
        client,
        server,
        downstream,
        ..
    } = captured(Some("blocked.example")).await;
    let conn = harness.conn();
    let before = SystemTime::now();
    let hook = harness
        .egress
        .unknown_sni(server, b"\x16\x03\x01", &downstream, &conn);
    let back = tokio::time::timeout(PATIENCE, hook)
        .await
        .expect("refused at once")
        .expect("the stream comes back");
    let after = SystemTime::now();
    assert_eq!(
        back.peer_addr().expect("peer address"),
        client.local_addr().expect("local address")
    );
    assert_refused(&harness.entry(), &downstream, (before, after));
}

#[tokio::test]
async fn allow_any_passes_an_unserved_port_to_its_original_destination() {
    let harness = Harness::new(OutboundPolicy::AllowAny);
    let Captured {
        mut client,
        server,
        origin,
        downstream,
    } = captured(None).await;
    let before = SystemTime::now();
    let hook = harness
        .egress
        .unserved_port(server, downstream.clone(), harness.conn());
    let ((), received, back) = through_origin(hook, &mut client, &origin, b"ping", b"pong!").await;
    let after = SystemTime::now();
    assert_eq!(received, b"ping");
    assert_eq!(back, b"pong!");
    assert_passed_through(&harness.entry(), &downstream, (before, after), (4, 5));
}

#[tokio::test]
async fn allow_any_passes_an_unknown_sni_through_with_the_hello_already_read() {
    let harness = Harness::new(OutboundPolicy::AllowAny);
    let Captured {
        mut client,
        server,
        origin,
        downstream,
    } = captured(Some("anywhere.example")).await;
    let conn = harness.conn();
    let before = SystemTime::now();
    let hook = harness
        .egress
        .unknown_sni(server, b"hello ", &downstream, &conn);
    let (back_to_gateway, received, back) =
        through_origin(hook, &mut client, &origin, b"and the rest", b"server").await;
    let after = SystemTime::now();
    assert!(back_to_gateway.is_none(), "the passthrough took the stream");
    assert_eq!(received, b"hello and the rest");
    assert_eq!(back, b"server");
    assert_passed_through(&harness.entry(), &downstream, (before, after), (18, 6));
}

/// A host the HTTP port serves.
fn serves_app(host: &str) -> bool {
    host == "app.test"
}

#[tokio::test]
async fn registry_only_serves_an_http_port_without_reading_ahead() {
    let harness = Harness::new(OutboundPolicy::RegistryOnly);
    let Captured {
        mut client,
        server,
        downstream,
        ..
    } = captured(None).await;
    client
        .write_all(b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n")
        .await
        .expect("write");
    let conn = harness.conn();
    let hook = harness.egress.http(server, &serves_app, &downstream, &conn);
    let choice = tokio::time::timeout(PATIENCE, hook)
        .await
        .expect("decided at once");
    let HttpChoice::Serve { read_ahead, .. } = choice else {
        panic!("served by the gateway");
    };
    assert_eq!(read_ahead, None);
}

/// The read-ahead of a served request under ALLOW_ANY: the head as the
/// workload sent it, in two writes when `split` is given. The original
/// destination is closed, so a wrong passthrough ends at once.
async fn read_ahead_of(head: &[u8], split: Option<usize>) -> Vec<u8> {
    let harness = Harness::new(OutboundPolicy::AllowAny);
    let Captured {
        mut client,
        server,
        origin,
        downstream,
    } = captured(None).await;
    drop(origin);
    let (first, second) = head.split_at(split.unwrap_or(head.len()));
    client.write_all(first).await.expect("write");
    // The first read finds the first write alone.
    server.readable().await.expect("readable");
    let conn = harness.conn();
    let hook = harness.egress.http(server, &serves_app, &downstream, &conn);
    tokio::pin!(hook);
    let early = tokio::select! {
        biased;
        choice = &mut hook => Some(choice),
        () = std::future::ready(()) => None,
    };
    client.write_all(second).await.expect("write");
    let choice = match early {
        Some(choice) => choice,
        None => tokio::time::timeout(PATIENCE, hook)
            .await
            .expect("decided in time"),
    };
    // The connection stays open: nothing ended the head but its end.
    drop(client);
    match choice {
        HttpChoice::Serve { read_ahead, .. } => read_ahead.expect("the head read ahead"),
        HttpChoice::Taken => panic!("taken, not served"),
    }
}

#[tokio::test]
async fn allow_any_serves_a_request_for_a_served_host_after_its_head() {
    let head = b"GET / HTTP/1.1\r\nHost: app.test:8080\r\n\r\n";
    assert_eq!(read_ahead_of(head, None).await, head);
}

#[tokio::test]
async fn allow_any_reads_a_head_split_across_reads_to_its_end() {
    let head = b"GET / HTTP/1.1\r\nHo";
    let rest = b"st: app.test\r\n\r\n";
    let whole = [&head[..], rest].concat();
    assert_eq!(read_ahead_of(&whole, Some(head.len())).await, whole);
}

#[tokio::test]
async fn allow_any_passes_a_request_for_another_host_through_with_its_head() {
    let harness = Harness::new(OutboundPolicy::AllowAny);
    let Captured {
        mut client,
        server,
        origin,
        downstream,
    } = captured(None).await;
    let head = b"GET / HTTP/1.1\r\nHost: other.example\r\n\r\n";
    client.write_all(head).await.expect("write");
    let conn = harness.conn();
    let before = SystemTime::now();
    let hook = harness.egress.http(server, &serves_app, &downstream, &conn);
    let (choice, received, back) = through_origin(
        hook,
        &mut client,
        &origin,
        b"body",
        b"HTTP/1.1 204 No Content\r\n\r\n",
    )
    .await;
    let after = SystemTime::now();
    assert!(
        matches!(choice, HttpChoice::Taken),
        "taken by the passthrough"
    );
    assert_eq!(received, [&head[..], b"body"].concat());
    assert_eq!(back, b"HTTP/1.1 204 No Content\r\n\r\n");
    let moved = (head.len() as u64 + 4, back.len() as u64);
    assert_passed_through(&harness.entry(), &downstream, (before, after), moved);
}
