use std::net::IpAddr;

use gateway_common::{ADDR_ANY, IPPROTO_TCP, ListenerKind, ipv4_mapped};

use super::*;
use crate::model::{
    Bind, Destination, EndpointAddress, ExportTo, Gateway, Instance, Model, Port, Protocol,
    Resolution, Server, ServerTls, ServiceEntry, ServicePort, TcpRoute, TlsMode, VirtualService,
    WorkloadEntry,
};
#[allow(
    unused_imports,
    reason = "one import list shared by the test cases; not every case uses every name"
)]
use crate::plan::*;

fn server(port: u16, protocol: Protocol, hosts: &[&str], redirect: bool) -> Server {
    Server {
        port: Port {
            number: port,
            name: format!("p{port}"),
            protocol,
        },
        hosts: hosts.iter().map(|h| h.to_string()).collect(),
        bind: Bind::Any,
        tls: redirect.then(|| ServerTls {
            https_redirect: true,
            mode: TlsMode::Passthrough,
            ..Default::default()
        }),
    }
}

fn gateway(name: &str, servers: Vec<Server>) -> Gateway {
    Gateway {
        defined_at: None,
        namespace: "istio-system".into(),
        name: name.into(),
        creation_timestamp: None,
        selector: Default::default(),
        servers,
    }
}

/// Compiles Gateways for the default instance. Every Gateway is bound to a
/// catch-all `tcp` route to a static backend, so TCP servers get listeners
/// and these tests stay about merging.
fn plan_of(gateways: &[Gateway], addrs: &[IpAddr]) -> Result<Plan, CompileError> {
    let model = Model {
        gateways: gateways.to_vec(),
        virtual_services: vec![VirtualService {
            namespace: "istio-system".into(),
            name: "tcp-all".into(),
            creation_timestamp: None,
            hosts: vec!["*".into()],
            gateways: gateways
                .iter()
                .map(|g| format!("{}/{}", g.namespace, g.name))
                .collect(),
            export_to: ExportTo::default(),
            http: Vec::new(),
            tls: Vec::new(),
            tcp: vec![TcpRoute {
                matches: Vec::new(),
                route: vec![Destination {
                    host: "backend.internal".into(),
                    subset: None,
                    port: None,
                    weight: 100,
                    headers: Default::default(),
                }],
            }],
        }],
        destination_rules: Vec::new(),
        service_entries: vec![ServiceEntry {
            namespace: "istio-system".into(),
            name: "backend".into(),
            hosts: vec!["backend.internal".into()],
            addresses: Vec::new(),
            ports: vec![ServicePort {
                number: 9000,
                name: "tcp".into(),
                protocol: Some("TCP".into()),
                target_port: None,
            }],
            resolution: Resolution::Static,
            endpoints: vec![WorkloadEntry {
                address: EndpointAddress::Ip("192.0.2.50".parse().unwrap()),
                ports: Default::default(),
                labels: Default::default(),
                weight: 1,
                locality: Default::default(),
            }],
            mesh_internal: false,
            export_to: ExportTo::default(),
        }],
        kubernetes: Default::default(),
        authorization_policies: Vec::new(),
        request_authentications: Vec::new(),
    };
    plan(&model, &Instance::default(), addrs)
}

fn addr(text: &str) -> IpAddr {
    text.parse().unwrap()
}

#[test]
fn http_server_becomes_a_wildcard_listener_and_a_host_table() {
    let gw = gateway(
        "web",
        vec![server(80, Protocol::Http, &["dataengine.com"], true)],
    );
    let plan = plan_of(&[gw], &[addr("192.0.2.1")]).unwrap();
    assert_eq!(plan.listeners.len(), 1);
    let key = plan.listeners[0].key();
    assert_eq!(
        (key.addr, key.port, key.protocol),
        (ADDR_ANY, 80, IPPROTO_TCP)
    );
    assert_eq!(plan.listeners[0].value().kind, ListenerKind::Http as u32);
    assert!(
        plan.http[0]
            .hosts
            .lookup("dataengine.com")
            .unwrap()
            .https_redirect
    );
    assert_eq!(plan.local_addrs, vec![addr("192.0.2.1")]);
}

#[test]
fn bind_address_keys_the_listener_by_that_address() {
    let mut s = server(8080, Protocol::Tcp, &["*"], false);
    s.bind = Bind::Ip(addr("192.0.2.7"));
    let plan = plan_of(&[gateway("tcp", vec![s])], &[]).unwrap();
    assert_eq!(plan.listeners[0].key().addr, ipv4_mapped([192, 0, 2, 7]));
    assert!(plan.http.is_empty());
}

#[test]
fn http_family_servers_on_one_port_share_a_host_table() {
    let a = gateway("a", vec![server(80, Protocol::Http, &["a.com"], true)]);
    let b = gateway("b", vec![server(80, Protocol::Grpc, &["b.com"], false)]);
    let plan = plan_of(&[a, b], &[]).unwrap();
    assert_eq!(plan.listeners.len(), 1);
    assert_eq!(plan.http[0].hosts.hosts().len(), 2);
    assert!(plan.dropped.is_empty());
}

#[test]
fn conflicting_later_server_is_dropped_and_reported() {
    let a = gateway("a", vec![server(80, Protocol::Http, &["a.com"], false)]);
    let b = gateway("b", vec![server(80, Protocol::Tcp, &["b.com"], false)]);
    let plan = plan_of(&[b, a], &[]).unwrap();
    assert_eq!(plan.listeners[0].kind, ListenerKind::Http);
    assert_eq!(plan.dropped.len(), 1);
    assert_eq!(plan.dropped[0].gateway, "istio-system/b");
}

#[test]
fn plan_is_independent_of_input_order() {
    let gws = vec![
        gateway("a", vec![server(80, Protocol::Http, &["a.com"], true)]),
        gateway(
            "b",
            vec![
                server(443, Protocol::Https, &["b.com"], false),
                server(81, Protocol::Http, &["*"], false),
            ],
        ),
        gateway("c", vec![server(80, Protocol::Http, &["*.c.com"], false)]),
    ];
    let addrs = [addr("2001:db8::1"), addr("192.0.2.1")];
    let forward = plan_of(&gws, &addrs).unwrap();
    let mut reversed_gws = gws;
    reversed_gws.reverse();
    let reversed_addrs = [addrs[1], addrs[0]];
    assert_eq!(forward, plan_of(&reversed_gws, &reversed_addrs).unwrap());
}

#[test]
fn listener_ids_are_dense_and_below_the_limit() {
    let servers = (1..=100)
        .map(|p| server(p, Protocol::Tcp, &["*"], false))
        .collect();
    let plan = plan_of(&[gateway("many", servers)], &[]).unwrap();
    let ids: Vec<u32> = plan.listeners.iter().map(|l| l.id).collect();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
}

#[test]
fn exactly_max_listeners_fit() {
    let servers = (1..=(MAX_LISTENERS as u16))
        .map(|p| server(p, Protocol::Tcp, &["*"], false))
        .collect();
    let plan = plan_of(&[gateway("many", servers)], &[]).unwrap();
    assert_eq!(plan.listeners.len(), MAX_LISTENERS as usize);
}

#[test]
fn too_many_listeners_is_an_error() {
    let servers = (1..=(MAX_LISTENERS as u16 + 1))
        .map(|p| server(p, Protocol::Tcp, &["*"], false))
        .collect();
    let err = plan_of(&[gateway("many", servers)], &[]).unwrap_err();
    assert_eq!(
        err,
        CompileError::TooManyListeners {
            count: MAX_LISTENERS as usize + 1,
            limit: MAX_LISTENERS
        }
    );
}

#[test]
fn more_hosts_than_the_kernel_table_holds_is_an_error_naming_the_port_and_gateway() {
    let names: Vec<String> = (0..=MAX_HOSTS)
        .map(|i| format!("h{i}.example.com"))
        .collect();
    let names: Vec<&str> = names.iter().map(String::as_str).collect();
    let fits = plan_of(
        &[gateway(
            "big",
            vec![server(
                80,
                Protocol::Http,
                &names[..MAX_HOSTS as usize],
                false,
            )],
        )],
        &[],
    );
    assert!(fits.is_ok(), "{fits:?}");
    let err = plan_of(
        &[gateway(
            "big",
            vec![server(80, Protocol::Http, &names, false)],
        )],
        &[],
    )
    .unwrap_err();
    assert_eq!(
        err,
        CompileError::TooManyHosts {
            count: MAX_HOSTS as usize + 1,
            limit: MAX_HOSTS,
            port: 80,
            on_port: MAX_HOSTS as usize + 1,
            gateways: "Gateway istio-system/big".into(),
        }
    );
}

// === Merge scenarios from Istio's TestMergeGateways / TestBuildGatewayListeners,
// as golden plan tables.

fn tls_server(port: u16, protocol: Protocol, hosts: &[&str], mode: TlsMode) -> Server {
    let mut s = server(port, protocol, hosts, false);
    s.tls = Some(ServerTls {
        mode,
        credential_names: vec!["cert".into()],
        ..Default::default()
    });
    s
}

fn bound(mut s: Server, ip: &str) -> Server {
    s.bind = Bind::Ip(addr(ip));
    s
}

fn golden(gateways: &[Gateway], expected: &str) {
    let plan = plan_of(gateways, &[]).unwrap();
    assert_eq!(crate::report::table(&plan), expected);
}

#[test]
fn merge_one_http_server() {
    golden(
        &[gateway(
            "gw",
            vec![server(7, Protocol::Http, &["foo.bar.com"], false)],
        )],
        "listeners:\n  *:7/tcp  http  (id 0)\n    host foo.bar.com  -> 404 (no routes)\n",
    );
}

#[test]
fn merge_two_gateways_http_same_port_share_one_listener() {
    golden(
        &[
            gateway(
                "gw1",
                vec![server(7, Protocol::Http, &["foo.bar.com"], false)],
            ),
            gateway(
                "gw2",
                vec![server(7, Protocol::Http, &["bar.foo.com"], false)],
            ),
        ],
        "listeners:\n  *:7/tcp  http  (id 0)\n    host bar.foo.com  -> 404 (no routes)\n    host foo.bar.com  -> 404 (no routes)\n",
    );
}

#[test]
fn merge_same_port_different_bind_are_separate_listeners() {
    golden(
        &[
            gateway(
                "gw1",
                vec![server(7, Protocol::Http, &["foo.bar.com"], false)],
            ),
            gateway(
                "gw2",
                vec![bound(
                    server(7, Protocol::Http, &["bar.foo.com"], false),
                    "127.0.0.1",
                )],
            ),
        ],
        "listeners:\n  *:7/tcp  http  (id 0)\n    host foo.bar.com  -> 404 (no routes)\n  127.0.0.1:7/tcp  http  (id 1)\n    host bar.foo.com  -> 404 (no routes)\n",
    );
}

#[test]
fn merge_http_and_tcp_on_different_ports() {
    golden(
        &[gateway(
            "gw",
            vec![
                server(7, Protocol::Http, &["foo.bar.com"], false),
                server(8, Protocol::Tcp, &["*"], false),
            ],
        )],
        "listeners:\n  *:7/tcp  http  (id 0)\n    host foo.bar.com  -> 404 (no routes)\n  *:8/tcp  tcp  (id 1)\n    -> outbound|9000||backend.internal (100)  [VirtualService istio-system/tcp-all spec.tcp[0]]\nclusters:\n  outbound|9000||backend.internal  192.0.2.50:9000\n",
    );
}

#[test]
fn merge_https_and_tls_passthrough_coexist_by_sni() {
    let plan = plan_of(
        &[
            gateway(
                "gw1",
                vec![tls_server(
                    443,
                    Protocol::Https,
                    &["*.example.com"],
                    TlsMode::Simple,
                )],
            ),
            gateway(
                "gw2",
                vec![tls_server(
                    443,
                    Protocol::Tls,
                    &["foo.example.com"],
                    TlsMode::Passthrough,
                )],
            ),
        ],
        &[],
    )
    .unwrap();
    assert_eq!(plan.listeners.len(), 1);
    assert_eq!(plan.listeners[0].kind, ListenerKind::Tls);
    assert!(plan.dropped.is_empty(), "{:?}", plan.dropped);
}

#[test]
fn merge_binds_split_one_port_into_listeners() {
    let gws = [gateway(
        "gw",
        vec![
            bound(
                tls_server(443, Protocol::Https, &["*"], TlsMode::Simple),
                "192.0.2.1",
            ),
            bound(server(443, Protocol::Grpc, &["*"], false), "192.0.2.2"),
            server(443, Protocol::Grpc, &["grpc.example.org"], false),
        ],
    )];
    let plan = plan_of(&gws, &[]).unwrap();
    let listeners: Vec<String> = plan
        .listeners
        .iter()
        .map(|l| {
            format!(
                "{}_{}",
                l.bind.map_or("0.0.0.0".into(), |ip| ip.to_string()),
                l.port
            )
        })
        .collect();
    assert_eq!(
        listeners,
        vec!["0.0.0.0_443", "192.0.2.1_443", "192.0.2.2_443"]
    );
}

#[test]
fn merge_tls_servers_sharing_a_host_keep_the_first() {
    let a = gateway(
        "a",
        vec![tls_server(
            443,
            Protocol::Https,
            &["*.example.com"],
            TlsMode::Simple,
        )],
    );
    let b = gateway(
        "b",
        vec![tls_server(
            443,
            Protocol::Https,
            &["*.example.com"],
            TlsMode::Simple,
        )],
    );
    let plan = plan_of(&[b, a], &[]).unwrap();
    assert_eq!(plan.dropped.len(), 1);
    assert_eq!(plan.dropped[0].gateway, "istio-system/b");
    assert_eq!(
        plan.dropped[0].reason,
        "duplicate host *.example.com on port 443: already served by Gateway istio-system/a spec.servers[0]"
    );
}

#[test]
fn merge_duplicate_hosts_collide_across_namespaces() {
    // Istio compares `default/*` and `prod/*` literally and emits two
    // identical match-all chains (bug §8.5); we keep the first and report.
    let a = gateway(
        "a",
        vec![tls_server(
            443,
            Protocol::Https,
            &["default/*"],
            TlsMode::Simple,
        )],
    );
    let b = gateway(
        "b",
        vec![tls_server(
            443,
            Protocol::Https,
            &["prod/*"],
            TlsMode::Simple,
        )],
    );
    let plan = plan_of(&[a, b], &[]).unwrap();
    assert_eq!(plan.dropped.len(), 1, "{:?}", plan.dropped);
}

#[test]
fn merge_http_redirect_servers_take_part_in_the_duplicate_host_check() {
    // An HTTP server with only `httpsRedirect` has a tls block, so Istio's
    // duplicate-host rule applies to it too.
    let a = gateway(
        "a",
        vec![server(80, Protocol::Http, &["a.example.com"], true)],
    );
    let b = gateway(
        "b",
        vec![server(80, Protocol::Http, &["a.example.com"], true)],
    );
    let plan = plan_of(&[a, b], &[]).unwrap();
    assert_eq!(plan.dropped.len(), 1);
}

#[test]
fn merge_tcp_first_then_http_keeps_tcp() {
    let alpha = gateway("alpha", vec![server(8000, Protocol::Tcp, &["*"], false)]);
    let beta = gateway("beta", vec![server(8000, Protocol::Http, &["*"], false)]);
    let plan = plan_of(&[beta, alpha], &[]).unwrap();
    assert_eq!(plan.listeners[0].kind, ListenerKind::Tcp);
    assert_eq!(plan.dropped[0].gateway, "istio-system/beta");
}

#[test]
fn merge_http_first_then_tcp_keeps_http() {
    let alpha = gateway("alpha", vec![server(8000, Protocol::Http, &["*"], false)]);
    let beta = gateway("beta", vec![server(8000, Protocol::Tcp, &["*"], false)]);
    let plan = plan_of(&[alpha, beta], &[]).unwrap();
    assert_eq!(plan.listeners[0].kind, ListenerKind::Http);
    assert_eq!(plan.dropped[0].gateway, "istio-system/beta");
}

#[test]
fn merge_tcp_with_tcp_on_one_port_keeps_the_first() {
    let a = gateway(
        "a",
        vec![server(8000, Protocol::Tcp, &["a.example.com"], false)],
    );
    let b = gateway(
        "b",
        vec![server(8000, Protocol::Tcp, &["b.example.com"], false)],
    );
    assert_eq!(plan_of(&[a, b], &[]).unwrap().dropped.len(), 1);
}

#[test]
fn merge_https_after_http_on_one_port_is_dropped() {
    let a = gateway(
        "a",
        vec![server(443, Protocol::Http, &["a.example.com"], false)],
    );
    let b = gateway(
        "b",
        vec![tls_server(
            443,
            Protocol::Https,
            &["b.example.com"],
            TlsMode::Simple,
        )],
    );
    let plan = plan_of(&[a, b], &[]).unwrap();
    assert_eq!(plan.listeners[0].kind, ListenerKind::Http);
    assert_eq!(
        plan.dropped[0].reason,
        "Https cannot share port 443 with the Http server Gateway istio-system/a spec.servers[0]"
    );
}

#[test]
fn merge_two_gateways_with_https_and_tcp_on_443_share_one_tls_listener() {
    // TestBuildGatewayListeners: gw1{HTTPS, TCP} + gw2{HTTPS, TCP} on 443 -> one listener.
    let gw1 = gateway(
        "gw1",
        vec![
            tls_server(443, Protocol::Https, &["*.1.example.com"], TlsMode::Simple),
            server(443, Protocol::Tcp, &["*.1.example.com"], false),
        ],
    );
    let gw2 = gateway(
        "gw2",
        vec![
            tls_server(443, Protocol::Https, &["*.2.example.com"], TlsMode::Simple),
            server(443, Protocol::Tcp, &["*.2.example.com"], false),
        ],
    );
    let plan = plan_of(&[gw1, gw2], &[]).unwrap();
    assert_eq!(plan.listeners.len(), 1);
    assert_eq!(plan.listeners[0].kind, ListenerKind::Tls);
    let dropped: Vec<_> = plan
        .dropped
        .iter()
        .map(|d| (d.gateway.as_str(), d.server))
        .collect();
    // gw1's TCP server joins in Istio (TLS detection); not served yet, and reported.
    assert_eq!(
        dropped,
        vec![("istio-system/gw1", 1), ("istio-system/gw2", 1)]
    );
}

#[test]
fn merge_unix_socket_servers_are_reported_not_served() {
    let mut s = server(0, Protocol::Http, &["a.example.com"], false);
    s.bind = Bind::Unix("/run/gw.sock".into());
    let plan = plan_of(&[gateway("gw", vec![s])], &[]).unwrap();
    assert!(plan.listeners.is_empty());
    assert_eq!(
        plan.dropped[0].reason,
        "unix socket bind \"/run/gw.sock\" is not served yet"
    );
}

#[test]
fn merge_takes_the_older_gateway_first_whatever_its_name() {
    let mut old = gateway("zzz", vec![server(8000, Protocol::Tcp, &["*"], false)]);
    old.creation_timestamp = Some("2024-01-01T00:00:00Z".into());
    let mut new = gateway("aaa", vec![server(8000, Protocol::Http, &["*"], false)]);
    new.creation_timestamp = Some("2025-01-01T00:00:00Z".into());
    let plan = plan_of(&[new, old], &[]).unwrap();
    assert_eq!(plan.listeners[0].kind, ListenerKind::Tcp);
    assert_eq!(plan.dropped[0].gateway, "istio-system/aaa");
}

#[test]
fn udp_servers_get_an_xdp_listener_but_no_proxy_socket_and_tcp_keeps_its_id() {
    let plan = plan_of(
        &[gateway(
            "dns",
            vec![
                server(53, Protocol::Udp, &["*"], false),
                server(53, Protocol::Tcp, &["*"], false),
            ],
        )],
        &[],
    )
    .expect("plan");
    assert_eq!(plan.listeners.len(), 2, "{:?}", plan.listeners);
    let tcp_listener = plan
        .listeners
        .iter()
        .find(|l| l.ip_protocol == IPPROTO_TCP)
        .expect("a TCP listener");
    assert_eq!(plan.tcp.len(), 1, "only TCP reaches the proxy");
    assert_eq!(plan.tcp[0].listener_id, tcp_listener.id);
    assert!(plan.dropped.is_empty(), "{:?}", plan.dropped);
    assert!(
        plan.warnings
            .iter()
            .any(|w| w.contains("UDP on port 53") && w.contains("TCP only")),
        "{:?}",
        plan.warnings
    );
}

#[test]
fn a_tls_port_gets_plaintext_virtual_hosts_only_when_plaintext_servers_share_it() {
    let https = |hosts: &[&str]| {
        let mut s = server(8443, Protocol::Https, hosts, false);
        s.tls = Some(ServerTls {
            mode: TlsMode::Simple,
            ..Default::default()
        });
        s
    };
    let tls_only = plan_of(&[gateway("a", vec![https(&["a.example.com"])])], &[]).expect("plan");
    assert_eq!(tls_only.tls.len(), 1);
    assert!(tls_only.tls[0].plaintext.is_none());
    let mixed = plan_of(
        &[gateway(
            "a",
            vec![
                https(&["a.example.com"]),
                server(8443, Protocol::Http, &["a.example.com"], false),
            ],
        )],
        &[],
    )
    .expect("plan");
    assert!(mixed.dropped.is_empty(), "{:?}", mixed.dropped);
    let plaintext = mixed.tls[0].plaintext.as_ref().expect("plaintext hosts");
    assert!(plaintext.lookup("a.example.com").is_some());
}

#[test]
fn a_gateway_past_the_host_limit_is_named_with_where_it_is_defined() {
    let hosts: Vec<String> = (0..=MAX_HOSTS)
        .map(|i| format!("h{i}.example.com"))
        .collect();
    let text = format!(
        "---\n# the only Gateway\napiVersion: networking.istio.io/v1\nkind: Gateway\nmetadata: {{name: big, namespace: istio-system}}\nspec:\n  servers:\n  - port: {{number: 80, name: http, protocol: HTTP}}\n    hosts: [{}]\n",
        hosts.join(", ")
    );
    let config = crate::config::load_sources(&[(std::path::PathBuf::from("big.yaml"), text)]);
    let err = plan(&config.model, &crate::model::Instance::default(), &[]).unwrap_err();
    assert!(
        err.to_string()
            .contains("on port 80 (16385 hosts, from Gateway istio-system/big at big.yaml:3)"),
        "{err}"
    );
}
