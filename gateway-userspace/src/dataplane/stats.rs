//! The kernel's counters, read: `REASON_STATS` and the per-listener,
//! per-host and per-policy counter arrays, summed over CPUs.
use std::path::Path;

use aya::maps::{MapData, PerCpuArray};
use gateway_common::{
    Counter, HostClass, MAX_HOSTS, MAX_LISTENERS, MAX_POLICIES, Reason, host_class_index, map_names,
};

use super::{Dataplane, DataplaneError, pins};

impl Dataplane {
    /// Takes the counter maps out of the object, so their reader (the admin
    /// thread) shares no lock with the rest of the daemon.
    pub fn take_stats_reader(&mut self) -> Result<StatsReader, DataplaneError> {
        let mut take =
            |name: &'static str| -> Result<PerCpuArray<MapData, Counter>, DataplaneError> {
                let raw = self
                    .ebpf
                    .take_map(name)
                    .ok_or(DataplaneError::MissingMap { name })?;
                PerCpuArray::try_from(raw).map_err(|source| DataplaneError::Map { name, source })
            };
        Ok(StatsReader {
            reasons: take(map_names::REASON_STATS)?,
            listeners: take(map_names::LISTENER_STATS)?,
            hosts: take(map_names::HOST_STATS)?,
            host_classes: take(map_names::HOST_CLASS_STATS)?,
            resets: take(map_names::HOST_RESETS)?,
            policies: Some(take(map_names::POLICY_STATS)?),
        })
    }
}

/// The per-CPU counter maps, owned.
pub struct StatsReader {
    reasons: PerCpuArray<MapData, Counter>,
    listeners: PerCpuArray<MapData, Counter>,
    hosts: PerCpuArray<MapData, Counter>,
    host_classes: PerCpuArray<MapData, Counter>,
    resets: PerCpuArray<MapData, Counter>,
    /// `None` for the pins of a build before AuthorizationPolicy counters.
    policies: Option<PerCpuArray<MapData, Counter>>,
}

impl StatsReader {
    /// The counter maps a daemon pinned in `dir` (`pins::pin_dir`), read
    /// without the daemon: `gateway stats`.
    pub fn open_pinned(dir: &Path) -> Result<Self, DataplaneError> {
        let open = |name: &'static str| -> Result<PerCpuArray<MapData, Counter>, DataplaneError> {
            let data = MapData::from_pin(pins::map_path(dir, name))
                .map_err(|source| DataplaneError::Map { name, source })?;
            PerCpuArray::try_from(aya::maps::Map::PerCpuArray(data))
                .map_err(|source| DataplaneError::Map { name, source })
        };
        Ok(Self {
            reasons: open(map_names::REASON_STATS)?,
            listeners: open(map_names::LISTENER_STATS)?,
            hosts: open(map_names::HOST_STATS)?,
            host_classes: open(map_names::HOST_CLASS_STATS)?,
            resets: open(map_names::HOST_RESETS)?,
            policies: open(map_names::POLICY_STATS).ok(),
        })
    }

    /// The policy drop counters of `slots` (`POLICY_STATS`), those not zero.
    pub fn read_policies(
        &self,
        slots: impl IntoIterator<Item = u32>,
    ) -> Result<Vec<(u32, Counter)>, DataplaneError> {
        let Some(policies) = &self.policies else {
            return Ok(Vec::new());
        };
        let mut out = Vec::new();
        for slot in slots.into_iter().filter(|slot| *slot < MAX_POLICIES) {
            let counter = sum(policies, slot, map_names::POLICY_STATS)?;
            if counter.packets != 0 {
                out.push((slot, counter));
            }
        }
        Ok(out)
    }

    /// Counters summed over CPUs: every reason code, the listeners in
    /// `listener_ids` with their host classes, and the hosts in `host_ids`
    /// (the daemon passes the plan's, not every slot, so a read costs a
    /// lookup per listener and host served).
    pub fn read(
        &self,
        listener_ids: impl IntoIterator<Item = u32>,
        host_ids: impl IntoIterator<Item = u32>,
    ) -> Result<Stats, DataplaneError> {
        let mut stats = Stats::default();
        for reason in Reason::ALL {
            stats.reasons.push((
                reason,
                sum(&self.reasons, reason as u32, map_names::REASON_STATS)?,
            ));
        }
        for id in listener_ids.into_iter().filter(|id| *id < MAX_LISTENERS) {
            let counter = sum(&self.listeners, id, map_names::LISTENER_STATS)?;
            if counter.packets != 0 {
                stats.listeners.push((id, counter));
            }
            let resets = sum(&self.resets, id, map_names::HOST_RESETS)?;
            if resets.packets != 0 {
                stats.resets.push((id, resets));
            }
            for class in HostClass::ALL {
                let index = host_class_index(id, class);
                let counter = sum(&self.host_classes, index, map_names::HOST_CLASS_STATS)?;
                if counter.packets != 0 {
                    stats.host_classes.push((id, class, counter));
                }
            }
        }
        for id in host_ids.into_iter().filter(|id| *id < MAX_HOSTS) {
            let counter = sum(&self.hosts, id, map_names::HOST_STATS)?;
            if counter.packets != 0 {
                stats.hosts.push((id, counter));
            }
        }
        Ok(stats)
    }
}

/// One counter summed over CPUs.
fn sum(
    array: &PerCpuArray<MapData, Counter>,
    index: u32,
    name: &'static str,
) -> Result<Counter, DataplaneError> {
    array
        .get(&index, 0)
        .map(|per_cpu| {
            per_cpu.iter().fold(Counter::default(), |acc, c| Counter {
                packets: acc.packets + c.packets,
                bytes: acc.bytes + c.bytes,
            })
        })
        .map_err(|source| DataplaneError::Map { name, source })
}

/// Counter snapshot, summed over CPUs.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Stats {
    /// Every reason, in code order.
    pub reasons: Vec<(Reason, Counter)>,
    /// Listeners that saw at least one packet, by id.
    pub listeners: Vec<(u32, Counter)>,
    /// Host classes of listeners' data segments (listener id, class), those seen.
    pub host_classes: Vec<(u32, HostClass, Counter)>,
    /// Known hosts (`KernelHost::id`) that saw at least one data segment.
    pub hosts: Vec<(u32, Counter)>,
    /// Listeners that reset connections for an unknown host, and how many.
    pub resets: Vec<(u32, Counter)>,
    /// SYNs dropped by AuthorizationPolicy, by `POLICY_STATS` slot (filled
    /// by [`StatsReader::read_policies`]), those seen.
    pub policies: Vec<(u32, Counter)>,
}

impl Stats {
    /// The counter of one reason.
    pub fn reason(&self, reason: Reason) -> Counter {
        self.reasons
            .iter()
            .find(|(r, _)| *r == reason)
            .map_or(Counter::default(), |(_, c)| *c)
    }
}
