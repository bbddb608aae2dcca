//! The Kubernetes Services routes name, and their endpoints, watched only
//! in the namespaces routes reach and only for the Services they name.
//!
//! Per namespace with a routed Service: one watch of its Services (a field
//! selector names one object only, so a namespace's Services are listed
//! and the others ignored: they are few and small), one of its
//! EndpointSlices selected by label (`kubernetes.io/service-name in
//! (...)`: the objects that change with every Pod cross the wire only for
//! routed Services), and, when a route names a subset of one of them, one
//! metadata-only watch of its Pods for their labels. A Service's change
//! starts a reload (its ports are in the plan); an endpoint's change is
//! published to [`Discovery`] and reaches the proxy without one.
use std::{
    collections::{BTreeMap, BTreeSet, HashMap},
    fmt::Debug,
    hash::Hash,
    sync::{
        Arc, Mutex, PoisonError,
        atomic::{AtomicBool, Ordering},
    },
    time::Duration,
};

use futures_util::{Stream, StreamExt as _};
use k8s_openapi::api::core::v1::{Pod, Service};
use kube::{
    Client,
    api::{Api, ApiResource, DynamicObject, PartialObjectMeta},
    core::GroupVersionKind,
    discovery::{self, Scope},
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Lookup, ObjectRef, Store},
        watcher,
    },
};
use tokio::{runtime::Handle, sync::watch, task::AbortHandle};

use super::{
    Retry,
    endpoints::{self, PodLabels, SERVICE_NAME_LABEL},
    trim,
};
use crate::{
    discovery::Discovery,
    model::{DiscoveredEndpoint, KubeService, ServiceKey},
};

/// Where endpoints are read: EndpointSlices at the newest version served
/// (`discovery.k8s.io/v1`, or `v1beta1` on Kubernetes before 1.21), else
/// core `v1` Endpoints.
#[derive(Clone, Debug)]
enum EndpointKind {
    Slices(ApiResource),
    Endpoints(ApiResource),
}

/// The routed Services and their endpoints, kept current.
pub struct ServiceWatches {
    client: Client,
    runtime: Handle,
    kind: EndpointKind,
    discovery: Arc<Discovery>,
    changed: Arc<watch::Sender<u64>>,
    shared: Arc<Mutex<Shared>>,
}

impl Debug for ServiceWatches {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceWatches")
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

#[derive(Default)]
struct Shared {
    /// Whether a load is waiting for new watches' first lists (it then
    /// reads them itself, so they need not start a reload).
    awaited: Arc<AtomicBool>,
    /// Each routed Service, with whether a route names a subset of it.
    interest: BTreeMap<ServiceKey, bool>,
    namespaces: BTreeMap<String, Namespace>,
}

/// The watches of one namespace.
struct Namespace {
    services: Running<Service>,
    endpoints: Running<DynamicObject>,
    pods: Option<Running<PartialObjectMeta<Pod>>>,
}

/// One watch into its store; stopped when dropped.
struct Running<K: Lookup + Clone + 'static>
where
    K::DynamicType: Eq + Hash + Clone,
{
    store: Store<K>,
    /// Its label selector, if any: a new one means a new watch.
    selector: String,
    /// Set once its first complete list is in the store.
    listed: Arc<AtomicBool>,
    /// Set once that first list has been acted on (published, or counted
    /// as a change): what a load waiting for the watch waits for.
    judged: Arc<AtomicBool>,
    task: AbortHandle,
}

impl<K: Lookup + Clone + 'static> Drop for Running<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl<K: Lookup + Clone + 'static> Running<K>
where
    K::DynamicType: Eq + Hash + Clone,
{
    fn listed(&self) -> bool {
        self.listed.load(Ordering::Acquire)
    }
}

/// The first-list flags of the watches one [`ServiceWatches::set_interest`]
/// started.
#[derive(Debug, Default)]
pub struct Started(Vec<Arc<AtomicBool>>);

impl Started {
    /// Notes the watches of `namespace` not listed yet.
    fn note(&mut self, namespace: &Namespace) {
        let flags = [
            Some(&namespace.services.judged),
            Some(&namespace.endpoints.judged),
            namespace.pods.as_ref().map(|p| &p.judged),
        ];
        for flag in flags.into_iter().flatten() {
            if !flag.load(Ordering::Acquire) {
                self.0.push(Arc::clone(flag));
            }
        }
    }
}

/// Which change a watch saw.
enum Seen<'a, K> {
    Object(&'a K),
    /// A complete list; `first` for the watch's first one.
    Relisted {
        first: bool,
    },
}

impl ServiceWatches {
    /// Finds where endpoints are served; no watch runs until
    /// [`ServiceWatches::set_interest`] names Services.
    pub async fn new(
        client: Client,
        discovery: Arc<Discovery>,
        changed: Arc<watch::Sender<u64>>,
    ) -> Self {
        let kind = endpoint_kind(&client).await;
        match &kind {
            EndpointKind::Slices(resource) => {
                log::info!("reading endpoints from {}", resource.api_version)
            }
            EndpointKind::Endpoints(_) => {
                log::warn!("the API server serves no EndpointSlices: reading core v1 Endpoints")
            }
        }
        Self {
            client,
            runtime: Handle::current(),
            kind,
            discovery,
            changed,
            shared: Arc::default(),
        }
    }

    /// Watches what `interest` names (Service to "a route names a subset
    /// of it") and stops watching the rest. The endpoints of a Service
    /// that stays routed stay published while a watch is replaced.
    /// Returns the watches it started, for [`ServiceWatches::ready`].
    pub fn set_interest(&self, interest: BTreeMap<ServiceKey, bool>) -> Started {
        let mut shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        if shared.interest == interest {
            return Started::default();
        }
        let keep: BTreeSet<ServiceKey> = interest.keys().cloned().collect();
        shared.interest = interest;
        let mut wanted: BTreeMap<String, (Vec<String>, bool)> = BTreeMap::new();
        for (key, labelled) in &shared.interest {
            let entry = wanted.entry(key.namespace.clone()).or_default();
            entry.0.push(key.name.clone());
            entry.1 |= labelled;
        }
        shared.namespaces.retain(|ns, _| wanted.contains_key(ns));
        let mut started = Started::default();
        for (ns, (names, labelled)) in wanted {
            let selector = self.endpoint_selector(&names);
            let current = shared.namespaces.remove(&ns);
            let namespace = match current {
                Some(mut namespace) => {
                    if namespace.endpoints.selector != selector {
                        namespace.endpoints = self.watch_endpoints(&ns, selector);
                    }
                    match (labelled, namespace.pods.is_some()) {
                        (true, false) => namespace.pods = Some(self.watch_pods(&ns)),
                        (false, true) => namespace.pods = None,
                        _ => {}
                    }
                    namespace
                }
                None => Namespace {
                    services: self.watch_services(&ns),
                    endpoints: self.watch_endpoints(&ns, selector),
                    pods: labelled.then(|| self.watch_pods(&ns)),
                },
            };
            started.note(&namespace);
            shared.namespaces.insert(ns.clone(), namespace);
            publish(&shared, &ns, None, &self.kind, &self.discovery);
        }
        self.discovery.retain(&keep);
        started
    }

    /// Waits, at most `within`, until the watches `started` have their
    /// first list (a watch that cannot list, a 403 say, delays only the
    /// load that started it); returns whether all have.
    pub async fn ready(&self, started: &Started, within: Duration) -> bool {
        let listed = &started.0;
        if listed.is_empty() {
            return true;
        }
        let awaited = {
            let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
            Arc::clone(&shared.awaited)
        };
        awaited.store(true, Ordering::Release);
        let all = async {
            while !listed.iter().all(|l| l.load(Ordering::Acquire)) {
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
        };
        let ready = tokio::time::timeout(within, all).await.is_ok();
        // A list that comes after this starts a reload of its own.
        awaited.store(false, Ordering::Release);
        ready
    }

    /// [`ServiceWatches::ready`] from a thread outside the runtime (the
    /// reload's compile thread).
    pub fn ready_blocking(&self, started: &Started, within: Duration) -> bool {
        self.runtime.block_on(self.ready(started, within))
    }

    /// The routed Services the API server has, as the model holds them.
    pub fn services(&self) -> Vec<KubeService> {
        let shared = self.shared.lock().unwrap_or_else(PoisonError::into_inner);
        shared
            .interest
            .keys()
            .filter_map(|key| {
                let namespace = shared.namespaces.get(&key.namespace)?;
                let found = namespace
                    .services
                    .store
                    .get(&ObjectRef::new(&key.name).within(&key.namespace))?;
                endpoints::service(&found)
            })
            .collect()
    }

    /// The label selector of a namespace's endpoint watch.
    fn endpoint_selector(&self, names: &[String]) -> String {
        match self.kind {
            EndpointKind::Slices(_) => format!("{SERVICE_NAME_LABEL} in ({})", names.join(",")),
            // Endpoints carry no label naming their Service: their name is its name.
            EndpointKind::Endpoints(_) => String::new(),
        }
    }

    fn watch_services(&self, ns: &str) -> Running<Service> {
        let api: Api<Service> = Api::namespaced(self.client.clone(), ns);
        let shared = Arc::clone(&self.shared);
        let changed = Arc::clone(&self.changed);
        self.spawn(
            watcher(api, watcher::Config::default()).modify(trim),
            (),
            String::new(),
            format!("Services in {ns}"),
            move |seen| {
                let shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
                let routed = match seen {
                    // The first list of a watch a load waits for is read
                    // by that load; a relist after a restart is news.
                    Seen::Relisted { first } => !(first && shared.awaited.load(Ordering::Acquire)),
                    Seen::Object(service) => service_key(&service.metadata)
                        .is_some_and(|key| shared.interest.contains_key(&key)),
                };
                if routed {
                    changed.send_modify(|count| *count += 1);
                }
            },
        )
    }

    fn watch_endpoints(&self, ns: &str, selector: String) -> Running<DynamicObject> {
        let resource = match &self.kind {
            EndpointKind::Slices(resource) | EndpointKind::Endpoints(resource) => resource.clone(),
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), ns, &resource);
        let mut config = watcher::Config::default();
        if !selector.is_empty() {
            config = config.labels(&selector);
        }
        let (shared, discovery, kind) = (
            Arc::clone(&self.shared),
            Arc::clone(&self.discovery),
            self.kind.clone(),
        );
        let namespace = ns.to_string();
        self.spawn(
            watcher(api, config).modify(trim),
            resource,
            selector,
            format!("endpoints in {ns}"),
            move |seen| {
                let only = match seen {
                    Seen::Relisted { .. } => None,
                    Seen::Object(object) => Some(owning_service(object, &kind)),
                };
                let shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
                publish(&shared, &namespace, only.as_deref(), &kind, &discovery);
            },
        )
    }

    fn watch_pods(&self, ns: &str) -> Running<PartialObjectMeta<Pod>> {
        let api: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let (shared, discovery, kind) = (
            Arc::clone(&self.shared),
            Arc::clone(&self.discovery),
            self.kind.clone(),
        );
        let namespace = ns.to_string();
        self.spawn(
            watcher::metadata_watcher(api, watcher::Config::default()).modify(trim),
            (),
            String::new(),
            format!("Pod labels in {ns}"),
            move |_| {
                let shared = shared.lock().unwrap_or_else(PoisonError::into_inner);
                publish(&shared, &namespace, None, &kind, &discovery);
            },
        )
    }

    /// Runs `stream` into a store of its own, retried after [`Retry`]'s
    /// back-off, calling `seen` after each change the store has taken.
    fn spawn<K, S>(
        &self,
        stream: S,
        dyntype: K::DynamicType,
        selector: String,
        what: String,
        seen: impl Fn(Seen<'_, K>) + Send + 'static,
    ) -> Running<K>
    where
        K: Lookup + Clone + Send + Sync + 'static,
        K::DynamicType: Eq + Hash + Clone + Send + Sync,
        S: Stream<Item = watcher::Result<watcher::Event<K>>> + Send + 'static,
    {
        let writer = reflector::store::Writer::new(dyntype);
        let store = writer.as_reader();
        let listed = Arc::new(AtomicBool::new(false));
        let judged = Arc::new(AtomicBool::new(false));
        let (done, acted) = (Arc::clone(&listed), Arc::clone(&judged));
        let task = self.runtime.spawn(async move {
            let stream = reflector::reflector(writer, stream).backoff(Retry::default());
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(object) | watcher::Event::Delete(object)) => {
                        seen(Seen::Object(&object))
                    }
                    Ok(watcher::Event::InitDone) => {
                        let first = !done.swap(true, Ordering::AcqRel);
                        seen(Seen::Relisted { first });
                        // Only now: a load waiting for this list must see
                        // what `seen` did with it (published, not counted).
                        acted.store(true, Ordering::Release);
                    }
                    Ok(watcher::Event::Init | watcher::Event::InitApply(_)) => {}
                    Err(err) => log::warn!(
                        "watch of {what} failed: {err}; retrying (the last complete list stays served)"
                    ),
                }
            }
        });
        Running {
            store,
            selector,
            listed,
            judged,
            task: task.abort_handle(),
        }
    }
}

/// The Service an endpoint object belongs to: a slice's label, an
/// Endpoints object's name.
fn owning_service(object: &DynamicObject, kind: &EndpointKind) -> String {
    match kind {
        EndpointKind::Slices(_) => object
            .metadata
            .labels
            .as_ref()
            .and_then(|labels| labels.get(SERVICE_NAME_LABEL))
            .cloned()
            .unwrap_or_default(),
        EndpointKind::Endpoints(_) => object.metadata.name.clone().unwrap_or_default(),
    }
}

fn service_key(metadata: &kube::api::ObjectMeta) -> Option<ServiceKey> {
    Some(ServiceKey {
        namespace: metadata.namespace.clone()?,
        name: metadata.name.clone()?,
    })
}

/// Publishes the endpoints of the routed Services of `ns` (only `only`'s
/// when given) once its watches have their first lists: until then the
/// last published lists stay, so a replaced watch fails no request.
fn publish(
    shared: &Shared,
    ns: &str,
    only: Option<&str>,
    kind: &EndpointKind,
    discovery: &Discovery,
) {
    let Some(namespace) = shared.namespaces.get(ns) else {
        return;
    };
    if !namespace.endpoints.listed() || namespace.pods.as_ref().is_some_and(|p| !p.listed()) {
        return;
    }
    let pods: PodLabels = namespace
        .pods
        .as_ref()
        .map(|pods| {
            pods.store
                .state()
                .iter()
                .filter_map(|pod| {
                    let name = pod.metadata.name.clone()?;
                    Some((name, pod.metadata.labels.clone().unwrap_or_default()))
                })
                .collect()
        })
        .unwrap_or_default();
    let mut by_service: HashMap<String, Vec<DiscoveredEndpoint>> = HashMap::new();
    for object in namespace.endpoints.store.state() {
        let service = owning_service(&object, kind);
        if only.is_some_and(|only| only != service) {
            continue;
        }
        let found = match kind {
            EndpointKind::Slices(_) => endpoints::slice_endpoints(&object.data, &pods),
            EndpointKind::Endpoints(_) => endpoints::endpoints_object(&object.data, &pods),
        };
        by_service.entry(service).or_default().extend(found);
    }
    for key in shared.interest.keys().filter(|key| key.namespace == ns) {
        if only.is_some_and(|only| only != key.name) {
            continue;
        }
        let found = by_service.remove(&key.name).unwrap_or_default();
        discovery.publish(key, found);
    }
}

/// EndpointSlices at `discovery.k8s.io/v1`, else `v1beta1`, else core v1
/// Endpoints.
async fn endpoint_kind(client: &Client) -> EndpointKind {
    if let Ok(group) = discovery::group(client, "discovery.k8s.io").await {
        for version in ["v1", "v1beta1"] {
            let found = group
                .versioned_resources(version)
                .into_iter()
                .find(|(resource, caps)| {
                    resource.kind == "EndpointSlice" && caps.scope == Scope::Namespaced
                });
            if let Some((resource, _)) = found {
                return EndpointKind::Slices(resource);
            }
        }
    }
    EndpointKind::Endpoints(ApiResource::from_gvk(&GroupVersionKind::gvk(
        "",
        "v1",
        "Endpoints",
    )))
}
