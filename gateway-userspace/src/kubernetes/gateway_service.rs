//! The Services that may front the gateway workload itself, for Istio's
//! port translation: every Service of the gateway's namespace (compile
//! keeps those whose selector picks the workload), or of the namespace of
//! the one `--service` names. A change to one starts a reload.
use futures_util::StreamExt as _;
use k8s_openapi::api::core::v1::Service;
use kube::{
    Client,
    api::Api,
    runtime::{
        WatchStreamExt as _,
        reflector::{self, Store},
        watcher,
    },
};
use std::sync::Arc;
use tokio::sync::watch;

use super::{FirstList, Retry, endpoints, trim};
use crate::model::KubeService;

/// The Services of one namespace, watched.
#[derive(Clone)]
pub struct WorkloadServices {
    store: Store<Service>,
    first_list: FirstList,
}

impl std::fmt::Debug for WorkloadServices {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WorkloadServices").finish_non_exhaustive()
    }
}

impl WorkloadServices {
    /// Starts the watch of `namespace`'s Services on the current runtime.
    pub fn start(client: Client, namespace: &str, changed: Arc<watch::Sender<u64>>) -> Self {
        let api: Api<Service> = Api::namespaced(client, namespace);
        let writer = reflector::store::Writer::default();
        let store = writer.as_reader();
        let what = format!("Services in {namespace}");
        let first_list = FirstList::default();
        let listed = first_list.clone();
        tokio::spawn(async move {
            let watch = watcher(api, watcher::Config::default()).modify(trim);
            let stream = reflector::reflector(writer, watch).backoff(Retry::default());
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_)) => {
                        changed.send_modify(|count| *count += 1)
                    }
                    Ok(watcher::Event::InitDone) => {
                        changed.send_modify(|count| *count += 1);
                        listed.done();
                    }
                    Ok(_) => {}
                    Err(err) => {
                        log::warn!("watch of {what} (the gateway's own) failed: {err}; retrying")
                    }
                }
            }
        });
        Self { store, first_list }
    }

    /// Waits for the first complete list (counted as a change).
    pub async fn ready(&self) {
        self.first_list.wait().await;
    }

    /// The namespace's Services as the model holds them.
    pub fn services(&self) -> Vec<KubeService> {
        self.store
            .state()
            .iter()
            .filter_map(|service| endpoints::service(service))
            .collect()
    }
}
