//! What a benchmark reads of the machine and of the API server: the whole
//! machine's CPU time from /proc/stat, a process's children, and sums over
//! the API server's Prometheus `/metrics` text. (A process's CPU time and memory:
//! `hostile::cpu_time` and `hostile::rss_kib`.)
use std::{collections::BTreeMap, fs};

/// Clock ticks per second of /proc's CPU times.
fn ticks_per_second() -> f64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as f64 } else { 100.0 }
}

/// CPU seconds every core has spent busy (neither idle nor waiting for
/// I/O) since boot, from the first line of /proc/stat.
pub fn machine_busy_seconds() -> Option<f64> {
    let stat = fs::read_to_string("/proc/stat").ok()?;
    let line = stat.lines().next()?.strip_prefix("cpu ")?;
    let fields: Vec<u64> = line
        .split_whitespace()
        .filter_map(|f| f.parse().ok())
        .collect();
    // user nice system idle iowait irq softirq steal ...
    let total: u64 = fields.iter().take(8).sum();
    let idle = fields.get(3)? + fields.get(4)?;
    Some(total.saturating_sub(idle) as f64 / ticks_per_second())
}

/// The processes whose parent is `parent`: what a bench started (`ip
/// netns exec` runs its command in place, so those are the servers).
pub fn children(parent: u32) -> Vec<u32> {
    let Ok(entries) = fs::read_dir("/proc") else {
        return Vec::new();
    };
    entries
        .filter_map(Result::ok)
        .filter_map(|entry| entry.file_name().to_str()?.parse::<u32>().ok())
        .filter(|pid| parent_of(*pid) == Some(parent))
        .collect()
}

/// The parent of `pid`, from the field after the state in /proc/PID/stat.
fn parent_of(pid: u32) -> Option<u32> {
    let stat = fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let (_, after_name) = stat.rsplit_once(')')?;
    after_name.split_whitespace().nth(1)?.parse().ok()
}

/// One sample of a Prometheus text exposition: its labels and value.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    pub labels: BTreeMap<String, String>,
    pub value: f64,
}

/// The samples of metric `name` in the exposition `text`.
pub fn samples(text: &str, name: &str) -> Vec<Sample> {
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(inner) => {
                    let (labels, value) = inner.rsplit_once('}')?;
                    (parse_labels(labels), value)
                }
                None if rest.starts_with(' ') => (BTreeMap::new(), rest),
                None => return None,
            };
            let value = value.split_whitespace().next()?.parse().ok()?;
            Some(Sample { labels, value })
        })
        .collect()
}

/// `k="v",k2="v2"` as a map (values with commas or quotes are not
/// expected in the API server's request and watch metrics).
fn parse_labels(text: &str) -> BTreeMap<String, String> {
    text.split(',')
        .filter_map(|pair| {
            let (key, value) = pair.split_once('=')?;
            Some((key.trim().to_string(), value.trim_matches('"').to_string()))
        })
        .collect()
}

/// The sum of `name`'s samples whose labels include every `(key, value)`
/// of `only`.
pub fn sum(text: &str, name: &str, only: &[(&str, &str)]) -> f64 {
    samples(text, name)
        .iter()
        .filter(|s| {
            only.iter()
                .all(|(k, v)| s.labels.get(*k).is_some_and(|have| have == v))
        })
        .map(|s| s.value)
        .sum()
}

/// `name`'s samples summed per value of the labels `by` (joined by a
/// space; those with `only`).
pub fn sum_by(text: &str, name: &str, by: &[&str], only: &[(&str, &str)]) -> BTreeMap<String, f64> {
    let mut out = BTreeMap::new();
    for sample in samples(text, name) {
        if only
            .iter()
            .all(|(k, v)| sample.labels.get(*k).is_some_and(|have| have == v))
        {
            let key: Vec<&str> = by
                .iter()
                .map(|label| sample.labels.get(*label).map_or("", String::as_str))
                .collect();
            let key = key.join(" ");
            *out.entry(key).or_insert(0.0) += sample.value;
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "# HELP apiserver_longrunning_gauge x
apiserver_longrunning_gauge{component=\"apiserver\",resource=\"services\",verb=\"WATCH\"} 3
apiserver_longrunning_gauge{component=\"apiserver\",resource=\"pods\",verb=\"WATCH\"} 2
apiserver_longrunning_gauge{component=\"apiserver\",resource=\"pods\",verb=\"CONNECT\"} 7
apiserver_longrunning_gauge_other 9
up 1
";

    #[test]
    fn samples_are_summed_by_name_and_label() {
        assert_eq!(
            sum(TEXT, "apiserver_longrunning_gauge", &[("verb", "WATCH")]),
            5.0
        );
        let by = sum_by(TEXT, "apiserver_longrunning_gauge", &["resource"], &[]);
        assert_eq!(by.get("pods"), Some(&9.0));
        assert_eq!(sum(TEXT, "up", &[]), 1.0);
    }

    #[test]
    fn a_spawned_process_is_a_child() {
        let mut child = std::process::Command::new("sleep")
            .arg("5")
            .spawn()
            .expect("sleep runs");
        let found = children(std::process::id()).contains(&child.id());
        let _ = child.kill();
        let _ = child.wait();
        assert!(found);
    }

    #[test]
    fn the_machine_has_been_busy() {
        assert!(machine_busy_seconds().is_some_and(|s| s > 0.0));
    }
}
