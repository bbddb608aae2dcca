//! The socket-lookup program (BPF_PROG_TEST_RUN): connections to a
//! listener's (address, port) are handed to the proxy's socket of their
//! address family, everything else takes the kernel's own lookup, and
//! with the proxy's socket gone a listener's connection is refused rather
//! than handed to another socket on that port.
use std::{
    net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener},
    os::fd::AsFd,
};

use gateway_common::{IPPROTO_TCP, IPPROTO_UDP, Settings, proxy_socket_slot};
use gateway_tests::{
    fixtures::hosts_plan,
    require_root,
    steer::{self, Steered},
};
use gateway_userspace::{compile, config, dataplane::Dataplane, model::Instance, plan::Plan};

const GW_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 1);
const GW2_V4: Ipv4Addr = Ipv4Addr::new(192, 0, 2, 2);
const GW_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1);
const OTHER_V4: Ipv4Addr = Ipv4Addr::new(198, 51, 100, 9);
const CLIENT_V4: Ipv4Addr = Ipv4Addr::new(203, 0, 113, 5);
const CLIENT_V6: Ipv6Addr = Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 0x99);
const SK_PASS: u32 = 1;
const SK_DROP: u32 = 0;

struct Harness {
    dataplane: Dataplane,
    /// The client-first sockets (HTTP, TLS listeners).
    v4: Option<TcpListener>,
    v6: TcpListener,
    /// The sockets of the other listeners (opaque TCP) and egress.
    v4_other: TcpListener,
    v6_other: TcpListener,
}

impl Harness {
    fn new(plan: &Plan) -> Self {
        require_root();
        let mut dataplane = Dataplane::load().expect("load programs");
        dataplane
            .apply(plan, Settings::default())
            .expect("apply plan");
        let v4 = TcpListener::bind("127.0.0.1:0").expect("v4 socket");
        let v6 = TcpListener::bind("[::1]:0").expect("v6 socket");
        let v4_other = TcpListener::bind("127.0.0.1:0").expect("v4 socket");
        let v6_other = TcpListener::bind("[::1]:0").expect("v6 socket");
        dataplane
            .set_proxy_sockets(&[
                (proxy_socket_slot(false, true), v4.as_fd()),
                (proxy_socket_slot(true, true), v6.as_fd()),
                (proxy_socket_slot(false, false), v4_other.as_fd()),
                (proxy_socket_slot(true, false), v6_other.as_fd()),
            ])
            .expect("proxy sockets");
        Self {
            dataplane,
            v4: Some(v4),
            v6,
            v4_other,
            v6_other,
        }
    }

    fn tcp(&self, local: IpAddr, port: u16) -> Steered {
        self.lookup(IPPROTO_TCP, local, port)
    }

    fn lookup(&self, protocol: u8, local: IpAddr, port: u16) -> Steered {
        let remote: IpAddr = match local {
            IpAddr::V4(_) => CLIENT_V4.into(),
            IpAddr::V6(_) => CLIENT_V6.into(),
        };
        let program = self.dataplane.steering_program().expect("program");
        steer::run(
            program,
            protocol,
            SocketAddr::new(remote, 40000),
            SocketAddr::new(local, port),
        )
        .expect("BPF_PROG_TEST_RUN")
    }

    fn to_v4(&self) -> Steered {
        let v4 = self.v4.as_ref().expect("v4 socket");
        Steered {
            verdict: SK_PASS,
            cookie: steer::cookie(v4).expect("cookie"),
        }
    }

    fn to_v6(&self) -> Steered {
        Steered {
            verdict: SK_PASS,
            cookie: steer::cookie(&self.v6).expect("cookie"),
        }
    }

    /// To the socket of `family` for listeners whose clients do not speak
    /// first.
    fn to_other(&self, ipv6: bool) -> Steered {
        let socket = if ipv6 { &self.v6_other } else { &self.v4_other };
        Steered {
            verdict: SK_PASS,
            cookie: steer::cookie(socket).expect("cookie"),
        }
    }
}

/// The kernel's own lookup: passed on, no socket chosen.
fn not_steered() -> Steered {
    Steered {
        verdict: SK_PASS,
        cookie: 0,
    }
}

#[test]
fn every_listener_reaches_the_proxy_socket_of_its_family_and_kind() {
    let h = Harness::new(&hosts_plan(&[GW_V4.into(), GW_V6.into()]));
    // HTTP and TLS: clients speak first, to the sockets that defer accept.
    for port in [80, 443] {
        assert_eq!(h.tcp(GW_V4.into(), port), h.to_v4(), "IPv4 port {port}");
        assert_eq!(h.tcp(GW_V6.into(), port), h.to_v6(), "IPv6 port {port}");
    }
    // Opaque TCP: the server may speak first.
    assert_eq!(h.tcp(GW_V4.into(), 9000), h.to_other(false), "IPv4 TCP");
    assert_eq!(h.tcp(GW_V6.into(), 9000), h.to_other(true), "IPv6 TCP");
}

#[test]
fn what_no_listener_owns_takes_the_kernels_own_lookup() {
    let h = Harness::new(&hosts_plan(&[GW_V4.into(), GW_V6.into()]));
    assert_eq!(h.tcp(GW_V4.into(), 22), not_steered(), "unlisted port");
    assert_eq!(
        h.tcp(OTHER_V4.into(), 443),
        not_steered(),
        "not a gateway address"
    );
    assert_eq!(
        h.tcp(Ipv4Addr::LOCALHOST.into(), 443),
        not_steered(),
        "loopback"
    );
    assert_eq!(
        h.lookup(IPPROTO_UDP, GW_V4.into(), 443),
        not_steered(),
        "UDP to a TCP listener's port"
    );
}

#[test]
fn with_the_proxy_socket_gone_listener_connections_are_refused() {
    let mut h = Harness::new(&hosts_plan(&[GW_V4.into(), GW_V6.into()]));
    // Closing the socket takes it out of the socket map.
    drop(h.v4.take());
    let refused = Steered {
        verdict: SK_DROP,
        cookie: 0,
    };
    assert_eq!(h.tcp(GW_V4.into(), 443), refused);
    assert_eq!(h.tcp(GW_V4.into(), 22), not_steered());
    assert_eq!(
        h.tcp(GW_V6.into(), 443),
        h.to_v6(),
        "the IPv6 socket is still there"
    );
}

#[test]
fn a_listener_bound_to_one_address_takes_only_that_address() {
    let yaml = r#"
apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: bound, namespace: istio-system}
spec:
  servers:
  - port: {number: 8443, name: http, protocol: HTTP}
    bind: 192.0.2.2
    hosts: ["*"]
"#;
    let loaded = config::load_sources(&[("bound.yaml".into(), yaml.to_string())]);
    let plan = compile::plan(
        &loaded.model,
        &Instance::default(),
        &[GW_V4.into(), GW2_V4.into()],
    )
    .expect("plan");
    assert_eq!(plan.listeners.len(), 1, "{:?}", plan.listeners);
    let h = Harness::new(&plan);
    assert_eq!(h.tcp(GW2_V4.into(), 8443), h.to_v4());
    assert_eq!(h.tcp(GW_V4.into(), 8443), not_steered());
}
