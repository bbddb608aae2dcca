//! `gateway stats`: the kernel's counters of the daemon on an interface,
//! read from its pinned maps (summed over CPUs), without talking to it, so
//! they can be read while the daemon is busy, stopped with
//! `--keep-attached`, or gone after `kill -9`.
use std::{
    collections::{BTreeMap, BTreeSet},
    thread,
    time::Duration,
};

use anyhow::{Context as _, bail};
use gateway_userspace::{
    dataplane::{StatsReader, Workload, Workloads, pins},
    stats::{self, Layout},
};

use crate::cli::StatsArgs;

/// Prints the counters once, or every `--watch` seconds with rates.
pub(crate) fn stats(args: &StatsArgs) -> anyhow::Result<()> {
    if let Some(interval) = args.watch.filter(|i| !(*i > 0.0 && i.is_finite())) {
        bail!("--watch takes a number of seconds above 0, not {interval}");
    }
    let Some(dir) = pins::existing_pin_dir(&args.interface) else {
        bail!(
            "no gateway has pinned maps for interface {} in this network namespace",
            args.interface
        );
    };
    let reader = StatsReader::open_pinned(&dir)
        .with_context(|| format!("cannot open the pinned counter maps in {}", dir.display()))?;
    let layout = pins::layout_path(&args.interface)
        .and_then(|path| std::fs::read_to_string(path).ok())
        .and_then(|text| Layout::from_json(&text))
        .unwrap_or_default();
    // The egress guard's per-workload counters (empty on an ingress instance).
    let workloads = Workloads::open_pinned(&dir).ok();
    // The maps' kernel memory, beside the counters.
    let memlock = pins::Memlock::of_pins(&dir)
        .with_context(|| format!("cannot open the pinned maps in {}", dir.display()))?;
    let read = || -> anyhow::Result<Vec<stats::Sample>> {
        let mut snapshot = reader.read(
            layout.listeners.iter().map(|l| l.id),
            layout.hosts.iter().map(|h| h.id),
        )?;
        snapshot.policies = reader.read_policies(layout.policies.iter().map(|(slot, _)| *slot))?;
        let mut samples = stats::kernel_samples(&snapshot, &layout);
        if let Some(workloads) = &workloads {
            let all = workloads.all();
            samples.extend(stats::workload_samples(&all, &interface_names(&all)));
        }
        let bytes = memlock
            .bytes()
            .context("cannot read the maps' kernel memory (memlock)")?;
        samples.push(stats::memlock_sample(bytes));
        Ok(samples)
    };
    let first = read()?;
    let gauges: BTreeSet<String> = first
        .iter()
        .filter(|s| stats::is_gauge(s.family))
        .map(|s| s.name.clone())
        .collect();
    let values = |samples: Vec<stats::Sample>| -> BTreeMap<String, u64> {
        samples.into_iter().map(|s| (s.name, s.value)).collect()
    };
    let Some(interval) = args.watch else {
        print(&values(first), None, &gauges, args.json);
        return Ok(());
    };
    let interval = Duration::from_secs_f64(interval);
    let mut previous = values(first);
    let mut reports = 0u64;
    loop {
        thread::sleep(interval);
        let current = values(read()?);
        print(&current, Some((&previous, interval)), &gauges, args.json);
        previous = current;
        reports += 1;
        if args.count.is_some_and(|count| reports >= count) {
            return Ok(());
        }
    }
}

/// The names of the interfaces the workloads were seen on.
fn interface_names(workloads: &[Workload]) -> BTreeMap<u32, String> {
    workloads
        .iter()
        .filter_map(|w| {
            let name = nix::net::if_::if_indextoname(w.ifindex).ok()?;
            Some((w.ifindex, name.to_string_lossy().into_owned()))
        })
        .collect()
}

/// One report: `name value` lines (with `rate/s` under `--watch`, for
/// counters, not `gauges`), or one JSON object per report.
fn print(
    current: &BTreeMap<String, u64>,
    previous: Option<(&BTreeMap<String, u64>, Duration)>,
    gauges: &BTreeSet<String>,
    json: bool,
) {
    let rate = |name: &str, value: u64| {
        let previous = previous.filter(|_| !gauges.contains(name));
        previous.map(|(before, interval)| {
            let delta = value.saturating_sub(before.get(name).copied().unwrap_or(0));
            delta as f64 / interval.as_secs_f64()
        })
    };
    if json {
        let object: serde_json::Map<String, serde_json::Value> = current
            .iter()
            .map(|(name, value)| {
                let value = match rate(name, *value) {
                    Some(rate) => serde_json::json!({"value": value, "rate": rate}),
                    None => serde_json::json!(value),
                };
                (name.clone(), value)
            })
            .collect();
        println!("{}", serde_json::Value::Object(object));
        return;
    }
    for (name, value) in current {
        match rate(name, *value) {
            Some(rate) => println!("{name} {value} {rate:.1}/s"),
            None => println!("{name} {value}"),
        }
    }
    if previous.is_some() {
        println!();
    }
}
