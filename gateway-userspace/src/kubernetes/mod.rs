//! Kubernetes mode (`gateway run --kubernetes`): the Istio objects of a
//! cluster, listed and watched through the API server, in place of files.
//!
//! Each kind is watched at the newest version the server serves (v1, then
//! v1beta1, then v1alpha3: Istio's CRDs serve all three) by kube-rs's
//! watcher into a reflector store. A store swaps in a relist only once it
//! is complete (kube-rs buffers `InitApply` until `InitDone`), so a watch
//! that restarts (410 Gone, an API server restart) keeps the last complete
//! set, and with it the plan, until the new one is whole. Every change
//! bumps one counter the daemon waits on; it then decodes a snapshot of
//! the stores through the same loader as files ([`sources`]).
//!
//! The Kubernetes Services routes name are watched beside them
//! ([`services`]): their ports go into the model, their endpoints to the
//! proxy through [`Discovery`].
pub mod endpoints;
pub mod gateway_service;
pub mod lease;
pub mod secrets;
pub mod services;
pub mod sources;
pub mod status;
pub mod status_writer;

use std::{
    collections::{BTreeMap, HashMap},
    path::PathBuf,
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use futures_util::StreamExt as _;
use kube::{
    Client, Config,
    api::{Api, ApiResource, DynamicObject},
    config::{KubeConfigOptions, Kubeconfig},
    discovery,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        utils::Backoff,
        watcher,
    },
};
use tokio::sync::watch;

use self::{
    gateway_service::WorkloadServices,
    secrets::{SecretFiles, SecretWatch},
    services::ServiceWatches,
    sources::Object,
    status::ResourceKey,
    status_writer::{CurrentStatus, StatusWriter},
};
use crate::{
    compile::references,
    config::Diagnostic,
    discovery::Discovery,
    model::{Model, ServiceKey},
    plan::Plan,
};

/// The API group of the routing kinds, which must be served.
const GROUP: &str = "networking.istio.io";
/// The kinds read, by their `kind`.
const KINDS: &[&str] = &[
    "Gateway",
    "VirtualService",
    "DestinationRule",
    "ServiceEntry",
];
/// The security kinds' group. A cluster without its CRDs can hold no
/// policy, so it may be absent; when served, its kinds are watched like
/// the routing kinds, and the gateway serves nothing before their first
/// complete list (a policy the gateway cannot read is never skipped).
const SECURITY_GROUP: &str = "security.istio.io";
/// The security kinds read.
const SECURITY_KINDS: &[&str] = &["AuthorizationPolicy", "RequestAuthentication"];
/// The versions the security CRDs serve, the preferred first.
const SECURITY_VERSIONS: &[&str] = &["v1", "v1beta1"];
/// How long a reload waits for the first list of a newly routed
/// Service's watches before it compiles without them (the route then
/// answers 503 until they arrive and start another reload).
const SERVICE_LIST_WAIT: Duration = Duration::from_secs(5);

/// The versions Istio's CRDs serve, the preferred first.
const VERSIONS: &[&str] = &["v1", "v1beta1", "v1alpha3"];

/// A change is applied once no other came for this long, as istiod
/// debounces (`PILOT_DEBOUNCE_AFTER`): a `kubectl apply` of many objects
/// is one reload. Objects are written whole, so no longer wait is needed.
pub const DEBOUNCE_AFTER: Duration = Duration::from_millis(100);
/// ... but never later than this after the first change
/// (`PILOT_DEBOUNCE_MAX`), however often the objects change.
pub const DEBOUNCE_MAX: Duration = Duration::from_secs(10);

/// The first wait before a failed watch is tried again; it doubles up to
/// [`RETRY_MAX`], and a watch that works again starts over. client-go's
/// reflector waits up to 30 s, which leaves a gateway blind to changes for
/// that long after an API server restart; a list or watch request every
/// 5 s per kind while the server is away costs it nothing.
const RETRY_FIRST: Duration = Duration::from_millis(250);
/// The longest wait between two tries of a failed watch.
const RETRY_MAX: Duration = Duration::from_secs(5);

/// The back-off of a failed watch.
#[derive(Debug)]
struct Retry {
    next: Duration,
}

impl Default for Retry {
    fn default() -> Self {
        Self { next: RETRY_FIRST }
    }
}

impl Iterator for Retry {
    type Item = Duration;

    fn next(&mut self) -> Option<Duration> {
        let wait = self.next;
        self.next = (self.next * 2).min(RETRY_MAX);
        Some(wait)
    }
}

impl Backoff for Retry {
    fn reset(&mut self) {
        self.next = RETRY_FIRST;
    }
}

/// Where the objects are read from (`gateway run` flags).
#[derive(Clone, Debug, Default)]
pub struct Options {
    /// `--kubeconfig`; without it `KUBECONFIG`, then the pod's service account.
    pub kubeconfig: Option<PathBuf>,
    /// `--watch-namespace`; empty: every namespace.
    pub namespaces: Vec<String>,
    /// `--cluster-domain`: `name.namespace.svc.<domain>`.
    pub cluster_domain: String,
    /// The gateway's namespace (`--namespace`), whose Secrets
    /// `credentialName` reads.
    pub namespace: String,
    /// `--service`: the gateway's own Service; without it, the Services of
    /// `namespace` that select the gateway's labels.
    pub service: Option<ServiceKey>,
}

/// Why the objects cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum KubeError {
    #[error("cannot read the kubeconfig {path}: {message}")]
    Kubeconfig { path: PathBuf, message: String },
    #[error("no Kubernetes client configuration: {0}")]
    Config(String),
    #[error(
        "the API server does not serve {GROUP}: {0} (install Istio's CRDs, or deploy/kubernetes/crds.yaml)"
    )]
    NoIstioGroup(String),
    #[error("the API server serves no {kind} in {GROUP} at {VERSIONS:?}")]
    NoVersion { kind: &'static str },
}

/// The Istio objects of the cluster, kept current by one watch per kind
/// and namespace.
#[derive(Clone)]
pub struct IstioObjects {
    stores: Vec<(ApiResource, Store<DynamicObject>)>,
    changes: watch::Receiver<u64>,
    /// Each Istio kind's watch's first complete list, counted.
    first_lists: Vec<FirstList>,
    services: Arc<ServiceWatches>,
    secrets: SecretWatch,
    workload: WorkloadServices,
    gateway_service: Option<ServiceKey>,
    cluster_domain: String,
    /// The generation of each object the last snapshot read.
    read: Arc<Mutex<BTreeMap<ResourceKey, Option<i64>>>>,
    status: StatusWriter,
}

impl std::fmt::Debug for IstioObjects {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IstioObjects")
            .field("watches", &self.stores.len())
            .finish_non_exhaustive()
    }
}

impl IstioObjects {
    /// Connects, finds the version of each kind, and starts the watches
    /// on the current runtime; routed Services' endpoints are published
    /// to `discovery`.
    pub async fn start(options: &Options, discovery: Arc<Discovery>) -> Result<Self, KubeError> {
        let client = client(options).await?;
        let group = discovery::group(&client, GROUP)
            .await
            .map_err(|err| KubeError::NoIstioGroup(err.to_string()))?;
        let (changed, changes) = watch::channel(0);
        let changed = Arc::new(changed);
        let mut stores = Vec::new();
        let mut first_lists = Vec::new();
        let mut resources = Vec::new();
        for kind in KINDS {
            let resource =
                served_resource(&group, kind, VERSIONS).ok_or(KubeError::NoVersion { kind })?;
            resources.push((*kind, resource));
        }
        match discovery::group(&client, SECURITY_GROUP).await {
            Ok(security) => {
                for kind in SECURITY_KINDS {
                    match served_resource(&security, kind, SECURITY_VERSIONS) {
                        Some(resource) => resources.push((*kind, resource)),
                        None => log::info!(
                            "{SECURITY_GROUP} serves no {kind} at {SECURITY_VERSIONS:?}: there are none to enforce"
                        ),
                    }
                }
            }
            Err(err) => log::info!(
                "the API server does not serve {SECURITY_GROUP} ({err}): no AuthorizationPolicy or RequestAuthentication can exist, none is enforced"
            ),
        }
        for (kind, resource) in resources {
            log::info!(
                "watching {kind} at {} in {}",
                resource.api_version,
                namespaces_text(&options.namespaces)
            );
            let apis: Vec<Api<DynamicObject>> = if options.namespaces.is_empty() {
                vec![Api::all_with(client.clone(), &resource)]
            } else {
                options
                    .namespaces
                    .iter()
                    .map(|ns| Api::namespaced_with(client.clone(), ns, &resource))
                    .collect()
            };
            for api in apis {
                let first = FirstList::default();
                let store = spawn_watch(api, resource.clone(), Arc::clone(&changed), first.clone());
                first_lists.push(first);
                stores.push((resource.clone(), store));
            }
        }
        let secrets = SecretWatch::start(client.clone(), &options.namespace, Arc::clone(&changed));
        let workload_namespace = options
            .service
            .as_ref()
            .map_or(options.namespace.as_str(), |s| s.namespace.as_str());
        let workload =
            WorkloadServices::start(client.clone(), workload_namespace, Arc::clone(&changed));
        let leader = lease::elect(client.clone(), &options.namespace, lease::identity());
        let resources: BTreeMap<String, ApiResource> = stores
            .iter()
            .map(|(resource, _)| (resource.kind.clone(), resource.clone()))
            .collect();
        let status = StatusWriter::start(
            client.clone(),
            resources,
            current_status(stores.clone()),
            leader,
        );
        let services = ServiceWatches::new(client, discovery, changed).await;
        Ok(Self {
            stores,
            first_lists,
            changes,
            services: Arc::new(services),
            secrets,
            workload,
            gateway_service: options.service.clone(),
            cluster_domain: options.cluster_domain.clone(),
            read: Arc::default(),
            status,
        })
    }

    /// Adds to `model` the Kubernetes Services its routes name (and notes
    /// the Secrets its credentials read, whose changes reload), watching
    /// them from now on (and no longer those no route names). Waits, up to
    /// [`SERVICE_LIST_WAIT`], for a newly routed Service's first list, so
    /// a route to it is served from the first plan that has it. Call it
    /// from a thread outside the runtime.
    pub fn add_services(&self, model: &mut Model) {
        model.kubernetes.read = true;
        model.kubernetes.domain = self.cluster_domain.clone();
        let started = self
            .services
            .set_interest(references::kubernetes_services(model));
        if !self.services.ready_blocking(&started, SERVICE_LIST_WAIT) {
            log::warn!(
                "the routed Services and their endpoints are not all listed after {} s; routes to those missing answer 503 until they are",
                SERVICE_LIST_WAIT.as_secs()
            );
        }
        model.kubernetes.services = self.services.services();
        model.kubernetes.workload_services = self.workload.services();
        model.kubernetes.gateway_service = self.gateway_service.clone();
        self.secrets.follow(model);
    }

    /// Waits until every watch has its first complete list.
    /// Each watch counts its first list as a change before this returns,
    /// so [`IstioObjects::mark_read`] after it marks those read too.
    pub async fn ready(&self) {
        for first in &self.first_lists {
            first.wait().await;
        }
        self.secrets.ready().await;
        self.workload.ready().await;
    }

    /// The gateway namespace's Secrets as the files credentials name.
    pub fn secret_files(&self) -> SecretFiles {
        self.secrets.files()
    }

    /// A counter bumped on every change (and every complete relist),
    /// with the changes before [`IstioObjects::mark_read`] seen.
    pub fn changes(&self) -> watch::Receiver<u64> {
        self.changes.clone()
    }

    /// Marks every change so far as read: call it before taking the
    /// snapshot the first plan is built from, so the first lists do not
    /// start a reload of what that plan already has.
    pub fn mark_read(&mut self) {
        self.changes.borrow_and_update();
    }

    /// Has each object of the last snapshot told, in its `status`, what
    /// the load said about it (`diagnostics`) and what the plan left out
    /// of it (`plan`); written by the replica holding the status Lease.
    pub fn report(&self, diagnostics: &[Diagnostic], plan: Option<&Plan>) {
        let read = self
            .read
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .clone();
        self.status
            .publish(status::reports(&read, diagnostics, plan));
    }

    /// Every object the watches hold now (remembered, with its generation,
    /// for [`IstioObjects::report`]).
    pub fn snapshot(&self) -> Vec<Object> {
        let mut objects = Vec::new();
        let mut read = BTreeMap::new();
        for (resource, store) in &self.stores {
            for object in store.state() {
                read.insert(
                    ResourceKey {
                        kind: resource.kind.clone(),
                        namespace: object.metadata.namespace.clone().unwrap_or_default(),
                        name: object.metadata.name.clone().unwrap_or_default(),
                    },
                    object.metadata.generation,
                );
                objects.push(Object {
                    api_version: resource.api_version.clone(),
                    kind: resource.kind.clone(),
                    namespace: object.metadata.namespace.clone().unwrap_or_default(),
                    name: object.metadata.name.clone().unwrap_or_default(),
                    metadata: serde_json::to_value(&object.metadata).unwrap_or_default(),
                    spec: object.data.get("spec").cloned().unwrap_or_default(),
                });
            }
        }
        *self.read.lock().unwrap_or_else(PoisonError::into_inner) = read;
        objects
    }
}

/// The `status` each object has in the watches' stores.
fn current_status(stores: Vec<(ApiResource, Store<DynamicObject>)>) -> CurrentStatus {
    Arc::new(move |key: &ResourceKey| {
        stores
            .iter()
            .filter(|(resource, _)| resource.kind == key.kind)
            .find_map(|(resource, store)| {
                let at = reflector::ObjectRef::new_with(&key.name, resource.clone())
                    .within(&key.namespace);
                store.get(&at)
            })
            .and_then(|object| object.data.get("status").cloned())
    })
}

/// Whether a watch has taken its first complete list, and counted it as a
/// change: set after the count, so a wait for it sees the count too (a
/// store's own readiness comes before its watch's loop counts the list).
#[derive(Clone, Debug, Default)]
pub(crate) struct FirstList(Arc<std::sync::atomic::AtomicBool>);

impl FirstList {
    pub(crate) fn done(&self) {
        self.0.store(true, std::sync::atomic::Ordering::Release);
    }

    /// Waits for it; a watch that never lists keeps the start waiting, as
    /// a first plan without the cluster's resources would be wrong.
    pub(crate) async fn wait(&self) {
        while !self.0.load(std::sync::atomic::Ordering::Acquire) {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// Drops what the server keeps for its own bookkeeping before an object
/// is stored (managed fields, kubectl's whole last-applied copy): they are
/// most of a small object's size, and nothing here reads them.
pub(crate) fn trim<K: kube::ResourceExt>(object: &mut K) {
    object.managed_fields_mut().clear();
    object.annotations_mut().remove(sources::LAST_APPLIED);
}

/// Where a pod's service account names the pod's namespace.
const POD_NAMESPACE_FILE: &str = "/var/run/secrets/kubernetes.io/serviceaccount/namespace";

/// The namespace of the pod this runs in, if it runs in one.
pub fn pod_namespace() -> Option<String> {
    let text = std::fs::read_to_string(POD_NAMESPACE_FILE).ok()?;
    let namespace = text.trim();
    (!namespace.is_empty()).then(|| namespace.to_string())
}

/// `--kubeconfig`, else kube-rs's inference: `KUBECONFIG` (or
/// `~/.kube/config`), then the in-cluster service account.
async fn client(options: &Options) -> Result<Client, KubeError> {
    let config = match &options.kubeconfig {
        Some(path) => {
            let kubeconfig = Kubeconfig::read_from(path).map_err(|err| KubeError::Kubeconfig {
                path: path.clone(),
                message: err.to_string(),
            })?;
            Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
                .await
                .map_err(|err| KubeError::Kubeconfig {
                    path: path.clone(),
                    message: err.to_string(),
                })?
        }
        None => Config::infer()
            .await
            .map_err(|err| KubeError::Config(err.to_string()))?,
    };
    Client::try_from(config).map_err(|err| KubeError::Config(err.to_string()))
}

/// One watch into a store of its own, retried after [`Retry`]'s back-off
/// for as long as the process runs.
fn spawn_watch(
    api: Api<DynamicObject>,
    resource: ApiResource,
    changed: Arc<watch::Sender<u64>>,
    listed: FirstList,
) -> Store<DynamicObject> {
    let writer = reflector::store::Writer::new(resource.clone());
    let store = writer.as_reader();
    tokio::spawn(async move {
        let watch = watcher(api, watcher::Config::default()).modify(trim);
        let stream = reflector::reflector(writer, watch).backoff(Retry::default());
        let mut stream = std::pin::pin!(stream);
        // The generation each object had when last applied: a change that
        // leaves it (our own status writes, label edits) is not a change
        // of configuration, and must not start a reload.
        let mut generations: HashMap<(String, String), Option<i64>> = HashMap::new();
        while let Some(event) = stream.next().await {
            match event {
                Ok(watcher::Event::Apply(object)) => {
                    let key = (
                        object.metadata.namespace.clone().unwrap_or_default(),
                        object.metadata.name.clone().unwrap_or_default(),
                    );
                    let generation = object.metadata.generation;
                    let known = generations.insert(key, generation);
                    if generation.is_none() || known != Some(generation) {
                        changed.send_modify(|count| *count += 1);
                    }
                }
                Ok(watcher::Event::InitApply(object)) => {
                    let key = (
                        object.metadata.namespace.clone().unwrap_or_default(),
                        object.metadata.name.clone().unwrap_or_default(),
                    );
                    generations.insert(key, object.metadata.generation);
                }
                Ok(watcher::Event::Delete(object)) => {
                    generations.remove(&(
                        object.metadata.namespace.clone().unwrap_or_default(),
                        object.metadata.name.clone().unwrap_or_default(),
                    ));
                    changed.send_modify(|count| *count += 1);
                }
                Ok(watcher::Event::InitDone) => {
                    changed.send_modify(|count| *count += 1);
                    listed.done();
                }
                Ok(watcher::Event::Init) => {}
                Err(err) => log::warn!(
                    "watch of {} failed: {err}; retrying (the last complete list stays served)",
                    resource.kind
                ),
            }
        }
    });
    store
}

/// The resource of `kind` at the first of `versions` the group serves.
fn served_resource(
    group: &discovery::ApiGroup,
    kind: &str,
    versions: &[&str],
) -> Option<ApiResource> {
    versions
        .iter()
        .filter(|version| group.versions().any(|served| served == **version))
        .find_map(|version| {
            group
                .versioned_resources(version)
                .into_iter()
                .find(|(resource, _)| resource.kind == kind)
        })
        .map(|(resource, _)| resource)
}

fn namespaces_text(namespaces: &[String]) -> String {
    if namespaces.is_empty() {
        "every namespace".to_string()
    } else {
        format!("namespaces {}", namespaces.join(", "))
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use kube::runtime::utils::Backoff as _;

    use super::Retry;

    #[test]
    fn a_stored_object_keeps_its_own_fields_but_not_the_servers_bookkeeping() {
        let mut object: kube::api::DynamicObject = serde_json::from_value(serde_json::json!({
            "apiVersion": "networking.istio.io/v1", "kind": "Gateway",
            "metadata": {
                "name": "gw", "namespace": "istio-system", "generation": 3,
                "annotations": {
                    "kubectl.kubernetes.io/last-applied-configuration": "{...}",
                    "team": "edge"
                },
                "managedFields": [{"manager": "kubectl", "operation": "Update"}]
            },
            "spec": {"servers": []}
        }))
        .expect("an object");
        super::trim(&mut object);
        assert!(
            object
                .metadata
                .managed_fields
                .as_deref()
                .unwrap_or_default()
                .is_empty()
        );
        let annotations = object.metadata.annotations.clone().unwrap_or_default();
        assert_eq!(annotations.keys().collect::<Vec<_>>(), ["team"]);
        assert_eq!(object.metadata.generation, Some(3));
        assert!(object.data.get("spec").is_some());
    }

    #[test]
    fn a_failed_watch_waits_twice_as_long_each_time_up_to_five_seconds_and_starts_over() {
        let mut retry = Retry::default();
        let waits: Vec<Duration> = retry.by_ref().take(7).collect();
        assert_eq!(
            waits,
            [250, 500, 1000, 2000, 4000, 5000, 5000].map(Duration::from_millis)
        );
        retry.reset();
        assert_eq!(retry.next(), Some(Duration::from_millis(250)));
    }
}
