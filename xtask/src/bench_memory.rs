//! A contender's memory as the kernel accounts it. PSS splits each shared
//! page among the processes that map it, so a server of many processes is
//! not charged once per process for its shared libraries and copy-on-write
//! pages (which summed RSS does). BPF maps are kernel memory that no
//! process's PSS shows; their `memlock` is added for the contender holding them.
use std::{collections::BTreeMap, fs};

/// (PSS, BPF maps' `memlock`) of `pids`, in MiB.
pub(crate) fn memory_mib(pids: &[u32]) -> (f64, f64) {
    (
        pss_kib(pids) as f64 / 1024.0,
        bpf_map_memlock_bytes(pids) as f64 / f64::from(1 << 20),
    )
}

/// Summed `Pss` of `pids` (/proc/PID/smaps_rollup), in KiB.
pub(crate) fn pss_kib(pids: &[u32]) -> u64 {
    pids.iter()
        .filter_map(|pid| fs::read_to_string(format!("/proc/{pid}/smaps_rollup")).ok())
        .filter_map(|text| rollup_pss_kib(&text))
        .sum()
}

/// The `Pss:` line of one smaps_rollup, in KiB.
fn rollup_pss_kib(text: &str) -> Option<u64> {
    let value = text.lines().find_map(|l| l.strip_prefix("Pss:"))?;
    value.trim().trim_end_matches("kB").trim().parse().ok()
}

/// `memlock` of every BPF map that `pids` hold a descriptor of, each map
/// counted once however many descriptors name it, in bytes.
pub(crate) fn bpf_map_memlock_bytes(pids: &[u32]) -> u64 {
    let mut maps = BTreeMap::new();
    for pid in pids {
        let Ok(fds) = fs::read_dir(format!("/proc/{pid}/fdinfo")) else {
            continue;
        };
        for fd in fds.flatten() {
            if let Some((id, bytes)) = fs::read_to_string(fd.path())
                .ok()
                .and_then(|text| map_fdinfo(&text))
            {
                maps.insert(id, bytes);
            }
        }
    }
    maps.values().sum()
}

/// (`map_id`, `memlock`) of a BPF map descriptor's fdinfo; `None` for any
/// other descriptor (programs have a `memlock` too, but no `map_id`).
fn map_fdinfo(text: &str) -> Option<(u64, u64)> {
    let field = |name: &str| -> Option<u64> {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .and_then(|v| v.trim().parse().ok())
    };
    Some((field("map_id:")?, field("memlock:")?))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pss_is_read_from_the_rollup() {
        let text = "55d0c0000000-7ffd00000000 ---p 00000000 00:00 0 [rollup]\n\
                    Rss:               10240 kB\nPss:                4321 kB\nPss_Anon: 1000 kB\n";
        assert_eq!(rollup_pss_kib(text), Some(4321));
        assert_eq!(rollup_pss_kib("Rss: 1 kB\n"), None);
    }

    #[test]
    fn only_map_descriptors_count_and_by_their_id() {
        let map = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t1\n\
                   key_size:\t4\nvalue_size:\t8\nmax_entries:\t64\nmap_flags:\t0x0\n\
                   map_extra:\t0x0\nmemlock:\t4352\nmap_id:\t42\nfrozen:\t0\n";
        assert_eq!(map_fdinfo(map), Some((42, 4352)));
        let prog = "pos:\t0\nflags:\t02000002\nprog_type:\t6\nprog_jited:\t1\n\
                    memlock:\t4096\nprog_id:\t7\n";
        assert_eq!(map_fdinfo(prog), None);
        assert_eq!(map_fdinfo("pos:\t0\nflags:\t02\n"), None);
    }
}
