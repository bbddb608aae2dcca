use std::net::IpAddr;

use gateway_common::{ADDR_ANY, IPPROTO_TCP, ListenerKind, ipv4_mapped};

use super::*;
use crate::model::{Bind, Gateway, Port, Protocol, Server, ServerTls, TlsMode};

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
        namespace: "istio-system".into(),
        name: name.into(),
        creation_timestamp: None,
        selector: Default::default(),
        servers,
    }
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
    let plan = plan(&[gw], &[addr("192.0.2.1")]).unwrap();
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
    let plan = plan(&[gateway("tcp", vec![s])], &[]).unwrap();
    assert_eq!(plan.listeners[0].key().addr, ipv4_mapped([192, 0, 2, 7]));
    assert!(plan.http.is_empty());
}

#[test]
fn http_family_servers_on_one_port_share_a_host_table() {
    let a = gateway("a", vec![server(80, Protocol::Http, &["a.com"], true)]);
    let b = gateway("b", vec![server(80, Protocol::Grpc, &["b.com"], false)]);
    let plan = plan(&[a, b], &[]).unwrap();
    assert_eq!(plan.listeners.len(), 1);
    assert_eq!(plan.http[0].hosts.hosts().len(), 2);
    assert!(plan.dropped.is_empty());
}

#[test]
fn conflicting_later_server_is_dropped_and_reported() {
    let a = gateway("a", vec![server(80, Protocol::Http, &["a.com"], false)]);
    let b = gateway("b", vec![server(80, Protocol::Tcp, &["b.com"], false)]);
    let plan = plan(&[b.clone(), a.clone()], &[]).unwrap();
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
    let forward = plan(&gws, &addrs).unwrap();
    let mut reversed_gws = gws.clone();
    reversed_gws.reverse();
    let reversed_addrs = [addrs[1], addrs[0]];
    assert_eq!(forward, plan(&reversed_gws, &reversed_addrs).unwrap());
}

#[test]
fn listener_ids_are_dense_and_below_the_limit() {
    let servers = (1..=100)
        .map(|p| server(p, Protocol::Tcp, &["*"], false))
        .collect();
    let plan = plan(&[gateway("many", servers)], &[]).unwrap();
    let ids: Vec<u32> = plan.listeners.iter().map(|l| l.id).collect();
    assert_eq!(ids, (0..100).collect::<Vec<_>>());
}

#[test]
fn too_many_listeners_is_an_error() {
    let servers = (1..=(MAX_LISTENERS as u16 + 1))
        .map(|p| server(p, Protocol::Tcp, &["*"], false))
        .collect();
    let err = plan(&[gateway("many", servers)], &[]).unwrap_err();
    assert_eq!(
        err,
        CompileError::TooManyListeners {
            count: MAX_LISTENERS as usize + 1,
            limit: MAX_LISTENERS
        }
    );
}
