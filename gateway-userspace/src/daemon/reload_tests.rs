//! Reloads against in-memory maps: no root, no kernel.
use std::{fs, path::Path, sync::atomic::Ordering};

use gateway_common::{ListenerKey, ListenerValue, map_names};

use super::*;
use crate::{
    daemon::ConfigSource,
    dataplane::{
        Synced,
        fake::{FakeMaps, Op},
        sync,
    },
    model::Instance,
};

/// The in-memory kernel, which notes what the proxy served at each write.
struct FakeKernel {
    maps: FakeMaps,
    synced: Synced,
    served: watch::Receiver<Arc<proxy::Served>>,
    /// The proxy's `Served` at the start of each `apply`.
    served_at_apply: Vec<Arc<proxy::Served>>,
}

impl Kernel for FakeKernel {
    fn apply(&mut self, plan: &Plan, settings: Settings) -> Result<(), DataplaneError> {
        self.served_at_apply.push(Arc::clone(&self.served.borrow()));
        sync::apply(&mut self.maps, &mut self.synced, plan, settings)
    }
}

/// A Gateway with one HTTP server per `(port, host)`.
fn gateway(servers: &[(u16, &str)]) -> String {
    let mut yaml = String::from(
        "apiVersion: networking.istio.io/v1
kind: Gateway
metadata: {name: gw, namespace: istio-system}
spec:
  selector: {istio: ingressgateway}
  servers:
",
    );
    for (i, (port, host)) in servers.iter().enumerate() {
        yaml.push_str(&format!(
            "  - port: {{number: {port}, name: http-{i}, protocol: HTTP}}\n    hosts: [\"{host}\"]\n"
        ));
    }
    yaml
}

/// A daemon's state after a start on `yaml`, written to `dir`.
struct Daemon {
    inputs: Arc<Inputs>,
    plan: Arc<Plan>,
    kernel: FakeKernel,
    served_tx: watch::Sender<Arc<proxy::Served>>,
    counters: stats::ReloadCounters,
}

impl Daemon {
    fn start(dir: &Path, yaml: &str) -> Self {
        let path = dir.join("gw.yaml");
        fs::write(&path, yaml).unwrap();
        let inputs = Arc::new(Inputs {
            source: ConfigSource {
                paths: vec![path],
                credentials_dir: None,
                max_config_bytes: 1 << 20,
                ignore_kind: Vec::new(),
                kubernetes: None,
            },
            instance: Instance {
                labels: [("istio".to_string(), "ingressgateway".to_string())].into(),
                namespace: "istio-system".to_string(),
                locality: Default::default(),
                trusted_proxies: 0,
            },
            reset_unknown_hosts: Vec::new(),
            addresses: vec!["192.0.2.1".parse().unwrap()],
            proxy: proxy::Options {
                trusted_proxies: 0,
                access_log: proxy::access_log::Format::Off,
                egress: None,
                tcp_idle_timeout: std::time::Duration::from_secs(60),
                jwks_refresh: proxy::jwks::DEFAULT_REFRESH,
                discovery: Default::default(),
                files: Arc::new(crate::files::Disk),
            },
        });
        let built = inputs
            .read_and_build(None)
            .expect("the first configuration");
        let (served_tx, served) = watch::channel(Arc::new(built.served));
        let mut kernel = FakeKernel {
            maps: FakeMaps::default(),
            synced: Synced::default(),
            served,
            served_at_apply: Vec::new(),
        };
        kernel.apply(&built.plan, ephemeral_range()).unwrap();
        kernel.served_at_apply.clear();
        kernel.maps.writes.clear();
        Self {
            inputs,
            plan: Arc::new(built.plan),
            kernel,
            served_tx,
            counters: stats::ReloadCounters::default(),
        }
    }

    /// Reloads `yaml` (SIGHUP).
    async fn reload(&mut self, yaml: &str) -> Option<Plan> {
        fs::write(&self.inputs.source.paths[0], yaml).unwrap();
        let reload = Reload {
            inputs: Arc::clone(&self.inputs),
            counters: &self.counters,
            registry: None,
        };
        let reloaded = reload
            .run(
                Trigger::Asked,
                &self.plan,
                &mut self.kernel,
                &self.served_tx,
            )
            .await;
        reloaded.map(|(plan, _)| plan)
    }

    fn serving(&self) -> Arc<proxy::Served> {
        Arc::clone(&self.served_tx.borrow())
    }

    fn listeners(&self) -> BTreeMap<ListenerKey, ListenerValue> {
        self.kernel.maps.contents(map_names::LISTENERS)
    }
}

use std::collections::BTreeMap;

fn listeners_of(plan: &Plan) -> BTreeMap<ListenerKey, ListenerValue> {
    plan.listeners
        .iter()
        .map(|l| (l.key(), l.value()))
        .collect()
}

#[tokio::test]
async fn a_bad_configuration_keeps_the_old_plan_and_touches_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &gateway(&[(8080, "a.example")]));
    let before = daemon.serving();
    let broken = gateway(&[(8080, "a.example")]).replace("protocol: HTTP", "protocol: [");
    assert!(daemon.reload(&broken).await.is_none());
    assert!(
        Arc::ptr_eq(&daemon.serving(), &before),
        "the proxy switched"
    );
    assert!(
        daemon.kernel.maps.writes.is_empty(),
        "the maps were written"
    );
    assert!(daemon.kernel.served_at_apply.is_empty());
    assert_eq!(daemon.counters.failed.load(Ordering::Relaxed), 1);
    assert_eq!(daemon.counters.applied.load(Ordering::Relaxed), 0);
}

#[tokio::test]
async fn listener_and_host_ids_are_kept_across_reloads() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &gateway(&[(8080, "b.example")]));
    let old = Arc::clone(&daemon.plan);
    // A listener and a host that sort first arrive.
    let next = daemon
        .reload(&gateway(&[
            (80, "a.example"),
            (8080, "a.example"),
            (8080, "b.example"),
        ]))
        .await
        .expect("reloads");
    let id = |plan: &Plan, port| plan.listeners.iter().find(|l| l.port == port).unwrap().id;
    assert_eq!(id(&next, 8080), id(&old, 8080), "{:?}", next.listeners);
    let host = |plan: &Plan, name: &str| {
        let listener = id(plan, 8080);
        plan.kernel_hosts()
            .into_iter()
            .find(|h| h.listener_id == listener && format!("{:?}", h.pattern).contains(name))
            .unwrap()
            .id
    };
    assert_eq!(host(&next, "b.example"), host(&old, "b.example"));
    assert_eq!(daemon.counters.applied.load(Ordering::Relaxed), 1);
}

#[tokio::test]
async fn the_proxy_serves_the_new_plan_before_the_maps_are_written() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &gateway(&[(8080, "a.example")]));
    let before = daemon.serving();
    let next = daemon
        .reload(&gateway(&[(8080, "a.example"), (9090, "a.example")]))
        .await
        .expect("reloads");
    let after = daemon.serving();
    assert!(!Arc::ptr_eq(&after, &before));
    assert_eq!(daemon.kernel.served_at_apply.len(), 1);
    assert!(
        Arc::ptr_eq(&daemon.kernel.served_at_apply[0], &after),
        "the maps were written while the proxy still served the old plan"
    );
    assert_eq!(daemon.listeners(), listeners_of(&next));
}

#[tokio::test]
async fn a_failed_map_write_puts_the_proxy_and_the_maps_back() {
    let dir = tempfile::tempdir().unwrap();
    let mut daemon = Daemon::start(dir.path(), &gateway(&[(8080, "a.example")]));
    let before = daemon.serving();
    let old_listeners = daemon.listeners();
    // The second write of the new plan fails: the first (a listener) is in.
    daemon.kernel.maps.fail_write = Some(1);
    let next = gateway(&[
        (8080, "a.example"),
        (9090, "b.example"),
        (9091, "c.example"),
    ]);
    assert!(daemon.reload(&next).await.is_none());
    assert!(
        daemon.kernel.maps.writes[0]
            == crate::dataplane::fake::Write {
                map: map_names::LISTENERS,
                op: Op::Upsert
            },
        "{:?}",
        daemon.kernel.maps.writes
    );
    assert!(
        Arc::ptr_eq(&daemon.serving(), &before),
        "the proxy stayed on the new plan"
    );
    assert_eq!(
        daemon.listeners(),
        old_listeners,
        "the maps kept part of the new plan"
    );
    assert_eq!(daemon.counters.failed.load(Ordering::Relaxed), 1);
}
