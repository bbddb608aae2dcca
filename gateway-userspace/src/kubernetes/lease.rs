//! One status writer among the gateway's replicas (one per node): a
//! `coordination.k8s.io/v1` Lease in the gateway's namespace, held by the
//! replica that writes status, as client-go's leader election does it.
//!
//! - the holder renews every [`RENEW`]; a Lease not renewed for
//!   [`LEASE_DURATION`] may be taken by another replica;
//! - "not renewed" is judged by when this replica last saw the Lease
//!   change (client-go's observed time), never by the holder's clock;
//! - every write carries the `resourceVersion` read, so of two replicas
//!   taking an expired Lease at once only one succeeds;
//! - a holder that cannot renew stops writing once its Lease could have
//!   expired for the others.
use std::time::Duration;

use k8s_openapi::{
    api::coordination::v1::{Lease, LeaseSpec},
    apimachinery::pkg::apis::meta::v1::MicroTime,
    chrono::Utc,
};
use kube::{
    Client,
    api::{Api, ObjectMeta, PostParams},
};
use tokio::{sync::watch, time::Instant};

/// The Lease's name.
pub const LEASE_NAME: &str = "xdp-gateway-status";
/// How long a Lease holds without renewal (client-go's default).
pub const LEASE_DURATION: Duration = Duration::from_secs(15);
/// How often the holder renews, and the others look again.
pub const RENEW: Duration = Duration::from_secs(5);

/// What this replica knows of the Lease between two looks.
#[derive(Debug, Default)]
struct Seen {
    /// The Lease's resourceVersion and when this replica saw it change.
    version: Option<(String, Instant)>,
    /// When this replica last renewed it successfully.
    renewed: Option<Instant>,
}

/// Whether this replica holds the Lease, kept current in the background.
pub fn elect(client: Client, namespace: &str, identity: String) -> watch::Receiver<bool> {
    let (leader_tx, leader) = watch::channel(false);
    let api: Api<Lease> = Api::namespaced(client, namespace);
    let namespace = namespace.to_string();
    tokio::spawn(async move {
        let mut seen = Seen::default();
        loop {
            let holds = try_hold(&api, &identity, &mut seen).await;
            let holds = match holds {
                Ok(holds) => holds,
                Err(err) => {
                    log::warn!("the status Lease {namespace}/{LEASE_NAME}: {err}");
                    // Keep writing only while the Lease cannot have expired.
                    seen.renewed
                        .is_some_and(|at| at.elapsed() < LEASE_DURATION - RENEW)
                }
            };
            if *leader_tx.borrow() != holds {
                log::info!(
                    "{} the status writer ({identity})",
                    if holds { "now" } else { "no longer" }
                );
            }
            if leader_tx.send(holds).is_err() {
                return;
            }
            tokio::time::sleep(RENEW).await;
        }
    });
    leader
}

/// One look at the Lease: take it if it is free or expired, renew it if
/// it is ours. Returns whether this replica holds it now.
async fn try_hold(api: &Api<Lease>, identity: &str, seen: &mut Seen) -> Result<bool, kube::Error> {
    let Some(current) = api.get_opt(LEASE_NAME).await? else {
        return write(api, identity, None, seen).await;
    };
    let version = current
        .metadata
        .resource_version
        .clone()
        .unwrap_or_default();
    let now = Instant::now();
    let changed_at = match &seen.version {
        Some((known, at)) if *known == version => *at,
        _ => now,
    };
    seen.version = Some((version, changed_at));
    let spec = current.spec.clone().unwrap_or_default();
    let ours = spec.holder_identity.as_deref() == Some(identity);
    let duration = spec
        .lease_duration_seconds
        .and_then(|s| u64::try_from(s).ok())
        .map_or(LEASE_DURATION, Duration::from_secs);
    let expired = now.duration_since(changed_at) >= duration;
    if ours || expired || spec.holder_identity.is_none() {
        return write(api, identity, Some(current), seen).await;
    }
    Ok(false)
}

/// Creates the Lease, or replaces `current` (with its resourceVersion),
/// held by `identity`. A conflict means another replica won.
async fn write(
    api: &Api<Lease>,
    identity: &str,
    current: Option<Lease>,
    seen: &mut Seen,
) -> Result<bool, kube::Error> {
    let now = MicroTime(Utc::now());
    let taken_over = current
        .as_ref()
        .and_then(|l| l.spec.as_ref())
        .is_none_or(|s| s.holder_identity.as_deref() != Some(identity));
    let previous = current
        .as_ref()
        .and_then(|l| l.spec.clone())
        .unwrap_or_default();
    let spec = LeaseSpec {
        holder_identity: Some(identity.to_string()),
        lease_duration_seconds: i32::try_from(LEASE_DURATION.as_secs()).ok(),
        acquire_time: if taken_over {
            Some(now.clone())
        } else {
            previous.acquire_time.clone()
        },
        renew_time: Some(now),
        lease_transitions: Some(
            previous.lease_transitions.unwrap_or(0) + i32::from(taken_over && current.is_some()),
        ),
    };
    let written = match current {
        None => {
            let lease = Lease {
                metadata: ObjectMeta {
                    name: Some(LEASE_NAME.to_string()),
                    ..ObjectMeta::default()
                },
                spec: Some(spec),
            };
            api.create(&PostParams::default(), &lease).await
        }
        Some(mut lease) => {
            lease.spec = Some(spec);
            api.replace(LEASE_NAME, &PostParams::default(), &lease)
                .await
        }
    };
    match written {
        Ok(lease) => {
            let version = lease.metadata.resource_version.unwrap_or_default();
            seen.version = Some((version, Instant::now()));
            seen.renewed = Some(Instant::now());
            Ok(true)
        }
        Err(kube::Error::Api(status)) if status.code == 409 => Ok(false),
        Err(err) => Err(err),
    }
}

/// Who this replica is: the node (`NODE_NAME`, from the DaemonSet's
/// downward API), else the host name, with the process id.
pub fn identity() -> String {
    let node = std::env::var("NODE_NAME")
        .ok()
        .filter(|n| !n.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/proc/sys/kernel/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "gateway".to_string());
    format!("{node}/{}", std::process::id())
}
