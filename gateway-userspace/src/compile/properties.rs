//! Property tests over generated models: the plan is deterministic,
//! independent of input order, and every route's destination is either a
//! cluster in the plan or flagged with a warning.
use proptest::{prelude::*, sample::subsequence};

use super::*;
use crate::model::{
    Bind, Destination, DestinationRule, EndpointAddress, ExportTo, Gateway, HttpAction, HttpMatch,
    HttpRoute, Port, Resolution, Server, ServerTls, ServiceEntry, ServicePort, StringMatch,
    TcpRoute, TlsMatch, TlsMode, TlsRoute, VirtualService, WorkloadEntry,
};
#[allow(
    unused_imports,
    reason = "one import list shared by the test cases; not every case uses every name"
)]
use crate::plan::*;

const HOSTS: &[&str] = &[
    "a.example.com",
    "*.example.com",
    "b.example.org",
    "*",
    "istio-system/c.example.com",
];
const VS_HOSTS: &[&str] = &[
    "a.example.com",
    "b.example.com",
    "*.example.com",
    "b.example.org",
    "c.example.com",
];
const NAMESPACES: &[&str] = &["istio-system", "apps"];
const DESTINATIONS: &[&str] = &["web", "web.apps.svc.cluster.local", "missing.example.org"];

fn protocol() -> impl Strategy<Value = Protocol> {
    prop::sample::select(vec![
        Protocol::Http,
        Protocol::Https,
        Protocol::Tls,
        Protocol::Tcp,
        Protocol::Grpc,
    ])
}

fn server() -> impl Strategy<Value = Server> {
    (
        prop::sample::select(vec![80u16, 443, 8080, 9000]),
        protocol(),
        subsequence(HOSTS, 1..3),
        any::<bool>(),
        prop::option::of(prop::sample::select(vec!["192.0.2.1", "192.0.2.2"])),
    )
        .prop_map(|(port, protocol, hosts, flag, bind)| Server {
            port: Port {
                number: port,
                name: format!("p{port}"),
                protocol,
            },
            hosts: hosts.iter().map(|h| h.to_string()).collect(),
            bind: bind.map_or(Bind::Any, |ip| Bind::Ip(ip.parse().unwrap())),
            tls: match protocol {
                Protocol::Https | Protocol::Tls => Some(ServerTls {
                    mode: if flag {
                        TlsMode::Simple
                    } else {
                        TlsMode::Passthrough
                    },
                    credential_names: vec!["cert".into()],
                    ..Default::default()
                }),
                _ => flag.then(|| ServerTls {
                    https_redirect: true,
                    ..Default::default()
                }),
            },
        })
}

fn destination() -> impl Strategy<Value = Destination> {
    (
        prop::sample::select(DESTINATIONS),
        prop::option::of(prop::sample::select(vec!["v1", "v9"])),
        0u32..3,
    )
        .prop_map(|(host, subset, weight)| Destination {
            host: host.to_string(),
            subset: subset.map(str::to_string),
            port: None,
            weight,
            headers: Default::default(),
        })
}

fn http_route() -> impl Strategy<Value = HttpRoute> {
    (
        prop::option::of(prop::sample::select(vec!["/", "/api", "/x"])),
        prop::collection::vec(destination(), 1..3),
    )
        .prop_map(|(prefix, destinations)| HttpRoute {
            name: None,
            matches: prefix
                .map(|p| {
                    vec![HttpMatch {
                        uri: Some(StringMatch::Prefix(p.to_string())),
                        ..Default::default()
                    }]
                })
                .unwrap_or_default(),
            action: HttpAction::Route(destinations),
            rewrite_uri: None,
            rewrite_uri_regex: None,
            rewrite_authority: None,
            timeout: None,
            retries: None,
            request_headers: Default::default(),
            response_headers: Default::default(),
            written: Default::default(),
            fault: None,
            mirrors: Vec::new(),
            cors: None,
        })
}

fn virtual_service(index: usize, gateways: Vec<String>) -> impl Strategy<Value = VirtualService> {
    let most = gateways.len().min(2);
    (
        prop::sample::select(NAMESPACES),
        subsequence(VS_HOSTS, 1..3),
        subsequence(gateways, 0..=most),
        prop::collection::vec(http_route(), 0..3),
        prop::collection::vec(destination(), 0..2),
        any::<bool>(),
    )
        .prop_map(
            move |(namespace, hosts, gateways, http, tcp, with_tls)| VirtualService {
                namespace: namespace.to_string(),
                name: format!("vs{index}"),
                creation_timestamp: None,
                hosts: hosts.iter().map(|h| h.to_string()).collect(),
                gateways,
                export_to: ExportTo::default(),
                http,
                tls: if with_tls {
                    vec![TlsRoute {
                        matches: vec![TlsMatch {
                            sni_hosts: vec![hosts[0].to_string()],
                            port: None,
                            gateways: Vec::new(),
                            destination_subnets: Vec::new(),
                        }],
                        route: vec![Destination {
                            host: "web".into(),
                            subset: None,
                            port: None,
                            weight: 100,
                            headers: Default::default(),
                        }],
                    }]
                } else {
                    Vec::new()
                },
                tcp: if tcp.is_empty() {
                    Vec::new()
                } else {
                    vec![TcpRoute {
                        matches: Vec::new(),
                        route: tcp,
                    }]
                },
            },
        )
}

fn model() -> impl Strategy<Value = Model> {
    prop::collection::vec(
        (
            prop::sample::select(NAMESPACES),
            prop::collection::vec(server(), 1..4),
        ),
        1..4,
    )
    .prop_flat_map(|gateways| {
        let gateways: Vec<Gateway> = gateways
            .into_iter()
            .enumerate()
            .map(|(i, (namespace, servers))| Gateway {
                defined_at: None,
                namespace: namespace.to_string(),
                name: format!("gw{i}"),
                creation_timestamp: Some(format!("2024-01-0{}T00:00:00Z", 1 + i % 3)),
                selector: Default::default(),
                servers,
            })
            .collect();
        let refs: Vec<String> = gateways
            .iter()
            .map(|g| format!("{}/{}", g.namespace, g.name))
            .collect();
        let services: Vec<_> = (0..4).map(|i| virtual_service(i, refs.clone())).collect();
        (Just(gateways), services)
    })
    .prop_map(|(gateways, virtual_services)| Model {
        gateways,
        virtual_services,
        destination_rules: vec![DestinationRule {
            namespace: "apps".into(),
            name: "web".into(),
            host: "web".into(),
            traffic_policy: Default::default(),
            subsets: vec![crate::model::Subset {
                name: "v1".into(),
                labels: [("version".to_string(), "v1".to_string())].into(),
                traffic_policy: None,
            }],
            export_to: ExportTo::default(),
            workload_selector: None,
        }],
        service_entries: vec![ServiceEntry {
            namespace: "apps".into(),
            name: "web".into(),
            hosts: vec!["web.apps.svc.cluster.local".into()],
            addresses: Vec::new(),
            ports: vec![ServicePort {
                number: 8080,
                name: "http".into(),
                protocol: None,
                target_port: None,
            }],
            resolution: Resolution::Static,
            endpoints: vec![WorkloadEntry {
                address: EndpointAddress::Ip("192.0.2.10".parse().unwrap()),
                ports: Default::default(),
                labels: [("version".to_string(), "v1".to_string())].into(),
                weight: 1,
                locality: Default::default(),
            }],
            mesh_internal: false,
            export_to: ExportTo::default(),
        }],
        kubernetes: Default::default(),
        authorization_policies: Vec::new(),
        request_authentications: Vec::new(),
    })
}

fn host_backends<'a>(hosts: &'a HostTable, out: &mut Vec<&'a Backend>) {
    for vhost in hosts.hosts() {
        for route in &vhost.routes {
            if let RouteAction::Forward { backends, .. } = &route.action {
                out.extend(backends.0.iter());
            }
        }
    }
}

/// Every backend of every route.
fn backends(plan: &Plan) -> Vec<&Backend> {
    let mut out = Vec::new();
    for http in &plan.http {
        host_backends(&http.hosts, &mut out);
    }
    for tls in &plan.tls {
        for server in &tls.servers {
            match &server.kind {
                TlsServerKind::TerminateHttp { hosts, .. } => host_backends(hosts, &mut out),
                TlsServerKind::TerminateTcp {
                    route: Some((forward, _)),
                    ..
                } => out.extend(forward.0.iter()),
                TlsServerKind::Passthrough { routes } => {
                    out.extend(routes.iter().flat_map(|r| r.forward.0.iter()))
                }
                _ => {}
            }
        }
    }
    for tcp in &plan.tcp {
        out.extend(tcp.route.0.iter());
    }
    out
}

fn reversed(model: &Model) -> Model {
    let mut m = model.clone();
    m.gateways.reverse();
    m.virtual_services.reverse();
    m.destination_rules.reverse();
    m.service_entries.reverse();
    m
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 256, ..ProptestConfig::default() })]

    #[test]
    fn plan_is_deterministic(model in model()) {
        let instance = Instance::default();
        prop_assert_eq!(plan(&model, &instance, &[]), plan(&model, &instance, &[]));
    }

    #[test]
    fn plan_does_not_depend_on_input_order(model in model()) {
        let instance = Instance::default();
        prop_assert_eq!(plan(&model, &instance, &[]), plan(&reversed(&model), &instance, &[]));
    }

    #[test]
    fn every_destination_is_a_cluster_or_flagged(model in model()) {
        let plan = plan(&model, &Instance::default(), &[]).unwrap();
        for backend in backends(&plan) {
            match &backend.target {
                Ok(id) => prop_assert!(plan.cluster(*id).is_some(), "missing cluster {:?}", id),
                Err(reason) => prop_assert!(plan.warnings.iter().any(|w| w.contains(&reason.to_string())), "unflagged: {}", reason),
            }
        }
    }

    #[test]
    fn listener_ids_are_dense_and_every_table_points_at_a_listener(model in model()) {
        let plan = plan(&model, &Instance::default(), &[]).unwrap();
        for (i, listener) in plan.listeners.iter().enumerate() {
            prop_assert_eq!(listener.id as usize, i);
        }
        let ids: Vec<u32> = plan.http.iter().map(|h| h.listener_id)
            .chain(plan.tls.iter().map(|t| t.listener_id))
            .chain(plan.tcp.iter().map(|t| t.listener_id))
            .collect();
        prop_assert_eq!(ids.len(), plan.listeners.len());
        for id in ids {
            prop_assert!((id as usize) < plan.listeners.len());
        }
    }
}
