//! What the kernel charges a set of BPF maps, and sizes for people.
use std::{io, os::fd::AsRawFd, path::Path};

use super::object_get;

/// The locked kernel memory of a set of BPF maps: what the kernel
/// charges them (`memlock` in their descriptors' fdinfo: the maps' own
/// memory, per-CPU ones once per possible CPU), which no process's RSS
/// shows. Read again at each [`Memlock::bytes`], since maps that allocate
/// per element (the LPM tries, for one) grow with their contents.
pub struct Memlock {
    /// Built by [`Memlock::of_pins`] or `HeldPins::memlock`.
    pub(super) maps: Vec<std::os::fd::OwnedFd>,
}

impl Memlock {
    /// Opens every map pinned in the pin directory `dir`.
    pub fn of_pins(dir: &Path) -> io::Result<Self> {
        let mut maps = Vec::new();
        for entry in std::fs::read_dir(dir)? {
            let entry = entry?;
            if entry.file_name().to_string_lossy().starts_with("map_") {
                maps.push(object_get(&entry.path())?);
            }
        }
        Ok(Self { maps })
    }

    /// The maps' locked kernel memory now, in bytes.
    pub fn bytes(&self) -> io::Result<u64> {
        let mut total = 0;
        for map in &self.maps {
            let fdinfo = std::fs::read_to_string(format!("/proc/self/fdinfo/{}", map.as_raw_fd()))?;
            total += memlock_of_fdinfo(&fdinfo).ok_or_else(|| {
                io::Error::new(
                    io::ErrorKind::InvalidData,
                    "no memlock line in a map's fdinfo",
                )
            })?;
        }
        Ok(total)
    }
}

/// The `memlock:` figure of a BPF map's `/proc/<pid>/fdinfo/<fd>`.
fn memlock_of_fdinfo(fdinfo: &str) -> Option<u64> {
    fdinfo
        .lines()
        .find_map(|line| line.strip_prefix("memlock:"))
        .and_then(|value| value.trim().parse().ok())
}

/// `bytes` for people: `6.4 MiB`, `52.0 KiB`, `0 B`.
pub fn human_bytes(bytes: u64) -> String {
    const KIB: f64 = 1024.0;
    let value = bytes as f64;
    if value >= KIB * KIB {
        format!("{:.1} MiB", value / (KIB * KIB))
    } else if value >= KIB {
        format!("{:.1} KiB", value / KIB)
    } else {
        format!("{bytes} B")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_maps_memlock_is_read_from_its_fdinfo() {
        let fdinfo = "pos:\t0\nflags:\t02000002\nmnt_id:\t15\nino:\t1057\nmap_type:\t6\n\
                      key_size:\t4\nvalue_size:\t16\nmax_entries:\t1024\nmap_flags:\t0x0\n\
                      map_extra:\t0x0\nmemlock:\t41272\nmap_id:\t12\nfrozen:\t0\n";
        assert_eq!(memlock_of_fdinfo(fdinfo), Some(41272));
        // A link's fdinfo has none.
        assert_eq!(memlock_of_fdinfo("link_type:\txdp\nlink_id:\t3\n"), None);
    }

    #[test]
    fn sizes_are_said_in_binary_units() {
        assert_eq!(human_bytes(6_659_304), "6.4 MiB");
        assert_eq!(human_bytes(41_272), "40.3 KiB");
        assert_eq!(human_bytes(320), "320 B");
    }
}
