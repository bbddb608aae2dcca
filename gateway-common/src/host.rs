//! Host classification of a connection's first data segment: the TLS
//! ClientHello's SNI or the HTTP request's `Host`, matched against the
//! listener's server hosts as Envoy matches virtual hosts (exact, then the
//! longest `*.suffix`, then `*`).
//!
//! The same code runs in the XDP program (over packet memory) and on the
//! host (over a byte slice, as the reference classifier tests compare the
//! kernel with): it reads bytes only through [`Frame`] and looks hosts up
//! only through [`HostTable`]. Every loop has a constant bound, as the
//! verifier requires, and every offset is checked before use.
//!
//! A name is reduced to a 64-bit FNV-1a hash of its lower-cased bytes taken
//! from the last to the first, so one backwards pass yields the hash of the
//! whole name and of every `.suffix` of it, each one map lookup. A hash
//! collision can only make an unknown name look known, never the reverse:
//! the kernel's verdict is a hint and the proxy stays authoritative.
//!
//! The names are read from the frame in `tls` (SNI) and `http` (`Host`).
mod http;
mod tls;

pub use self::{
    http::{host_value, http_host, http_host_value_start},
    tls::tls_server_name,
};

/// Longest DNS name (RFC 1035: 255 octets on the wire, 253 as text).
pub const MAX_HOST_LEN: usize = 255;
/// TLS extensions walked before giving up; browsers send about 20, in a
/// random order (Chrome), so the SNI can be anywhere among them.
pub const MAX_TLS_EXTENSIONS: usize = 32;
/// Bytes of an HTTP request head searched for the `Host` header.
pub const MAX_HTTP_SCAN: usize = 256;
/// Bytes of a segment's payload the classifier looks at (the kernel copies
/// them out of the packet first): a whole 1500-byte-MTU segment. A power
/// of two, so the kernel can mask indexes into its copy.
pub const MAX_PAYLOAD_SCAN: usize = 2048;
/// No byte of a frame beyond this offset is read (a 9000-byte jumbo frame
/// ends below it); the kernel's bounds proofs rely on it, and the reference
/// keeps the same limit so both agree.
pub const MAX_FRAME_OFFSET: usize = 0x3fff;

/// `HostKey::kind` of an exact server host (`example.com`).
pub const HOST_EXACT: u32 = 1;
/// `HostKey::kind` of a wildcard server host (`*.example.com`), hashed as `.example.com`.
pub const HOST_SUFFIX: u32 = 2;
/// `HostKey::kind` of the catch-all server host `*` (hash 0).
pub const HOST_ANY: u32 = 3;

/// Envoy's host precedence, the one rule every host match follows (HTTP
/// `Host` routing, TLS SNI selection, and the order [`match_host`] looks
/// hosts up in, which a test holds to it): an exact name, then the longest
/// `*.suffix`, then `*`. The smaller rank wins. `kind` is [`HOST_EXACT`],
/// [`HOST_SUFFIX`] or [`HOST_ANY`]; `suffix_len` (of `.suffix`) counts for
/// a wildcard only.
#[inline(always)]
pub const fn host_rank(kind: u32, suffix_len: usize) -> HostRank {
    HostRank {
        kind,
        shorter: if kind == HOST_SUFFIX {
            usize::MAX - suffix_len
        } else {
            0
        },
    }
}

/// A host pattern's place in Envoy's precedence ([`host_rank`]); ordered,
/// the smaller first.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct HostRank {
    kind: u32,
    /// For a wildcard, how much shorter than the longest possible suffix.
    shorter: usize,
}

const FNV_OFFSET: u64 = 0xcbf2_9ce4_8422_2325;
const FNV_PRIME: u64 = 0x0000_0100_0000_01b3;

/// Key of the `HOSTS` map: one server host of one listener.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HostKey {
    /// The listener's id (`ListenerValue::id`).
    pub listener: u32,
    /// `HOST_EXACT`, `HOST_SUFFIX` or `HOST_ANY`.
    pub kind: u32,
    /// [`host_hash`] of the name (exact) or of `.suffix` (wildcard); 0 for `*`.
    pub hash: u64,
}

/// Value of the `HOSTS` map.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct HostValue {
    /// Index into `HOST_STATS`, below `MAX_HOSTS`.
    pub id: u32,
    /// Always zero.
    pub pad: u32,
}

const _: () = assert!(size_of::<HostKey>() == 16);
const _: () = assert!(size_of::<HostValue>() == 8);

/// What the first data segment said about the host; the index (with the
/// listener) of the per-listener host-class counters.
///
/// Codes are part of the userspace ABI: never renumber or reuse one.
#[repr(u32)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum HostClass {
    /// The name matched a server host of the listener.
    Known = 0,
    /// A complete name that no server host of the listener accepts.
    Unknown = 1,
    /// A complete ClientHello without SNI, or a complete request head without `Host`.
    NoHost = 2,
    /// The name is not in this segment (a ClientHello or request head that
    /// continues in later segments): no verdict, the proxy decides.
    Partial = 3,
    /// Neither a ClientHello nor an HTTP/1 request head (a later segment,
    /// HTTP/2 prior knowledge, garbage): no verdict.
    Unrecognised = 4,
}

impl HostClass {
    /// Number of classes; the stride of the per-listener class counters.
    pub const COUNT: u32 = 5;

    /// Every class, in code order.
    pub const ALL: [Self; Self::COUNT as usize] = [
        Self::Known,
        Self::Unknown,
        Self::NoHost,
        Self::Partial,
        Self::Unrecognised,
    ];

    /// Stable snake_case name, used in logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            Self::Known => "known",
            Self::Unknown => "unknown",
            Self::NoHost => "no_host",
            Self::Partial => "partial",
            Self::Unrecognised => "unrecognised",
        }
    }
}

/// Index of (`listener`, `class`) in the `HOST_CLASS_STATS` array.
#[inline(always)]
pub fn host_class_index(listener: u32, class: HostClass) -> u32 {
    listener * HostClass::COUNT + class as u32
}

/// Read access to the bytes of one segment, from wherever they live.
pub trait Frame {
    /// The byte at `offset` from the start of the frame, if inside it.
    fn byte(&self, offset: usize) -> Option<u8>;

    /// The byte at `offset`, which the caller has checked is inside the
    /// frame (by reading the last byte of a run with [`Frame::byte`]).
    /// Lets a loop over a run read without a check per byte; outside the
    /// frame the value is unspecified but the read stays in bounds.
    #[inline(always)]
    fn byte_within(&self, offset: usize) -> u8 {
        self.byte(offset).unwrap_or(0)
    }

    /// The eight bytes at `offset`, the first in the lowest bits; bytes
    /// past the frame read as zero here, and as anything (but stay in
    /// bounds) where an implementation says so. Lets a scan skip eight
    /// bytes with one read.
    #[inline(always)]
    fn word(&self, offset: usize) -> u64 {
        let mut word = 0u64;
        for index in 0..8 {
            word |= u64::from(self.byte(offset + index).unwrap_or(0)) << (8 * index);
        }
        word
    }

    /// Big-endian u16 at `offset`.
    #[inline(always)]
    fn be16(&self, offset: usize) -> Option<u16> {
        Some(u16::from_be_bytes([
            self.byte(offset)?,
            self.byte(offset + 1)?,
        ]))
    }
}

impl Frame for [u8] {
    fn byte(&self, offset: usize) -> Option<u8> {
        if offset > MAX_FRAME_OFFSET {
            return None;
        }
        self.get(offset).copied()
    }
}

/// The server hosts of every listener (the `HOSTS` map, or a copy of its contents).
pub trait HostTable {
    /// The entry for `key`.
    fn host(&self, key: &HostKey) -> Option<HostValue>;
}

/// Where a name lies in the segment, or why there is none.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Name {
    /// `len` bytes (1 to `MAX_HOST_LEN`) at `offset`.
    At { offset: usize, len: usize },
    /// No name; the class says why.
    Absent(HostClass),
}

/// FNV-1a step on `byte` with its case bit (0x20) set. That folds ASCII
/// upper case into lower case in one instruction (a full
/// `to_ascii_lowercase` is eight here, per byte of every name), and it
/// also folds a few pairs of non-letters (`_` and DEL, `[` and `{`, ...).
/// Folding only ever makes two names hash alike, never apart, so a name
/// the proxy accepts is always found; a name that is not a valid host
/// name may be taken for one, which the proxy, authoritative, then refuses.
#[inline(always)]
fn step(hash: u64, byte: u8) -> u64 {
    (hash ^ u64::from(byte | 0x20)).wrapping_mul(FNV_PRIME)
}

/// The hash a name is stored under: FNV-1a over its lower-cased bytes,
/// last byte first. Userspace hashes `example.com` for an exact host and
/// `.example.com` for `*.example.com`.
pub fn host_hash(name: &[u8]) -> u64 {
    name.iter()
        .rev()
        .fold(FNV_OFFSET, |hash, byte| step(hash, *byte))
}

/// Wildcard suffixes of a name looked up, the longest first. A name with
/// more dots than this gets no wildcard verdict unless one of its longest
/// suffixes matches (then it is the longest match, as it should be).
pub const MAX_WILDCARD_DEPTH: usize = 8;

/// Slots of `match_host`'s ring of suffix hashes.
const RING_SLOTS: usize = 2 * MAX_WILDCARD_DEPTH;

/// Matches the name at `offset` (`len` bytes) against `listener`'s hosts
/// in `table`: exact, then the longest wildcard, then `*`. Returns the
/// class and, when known, the host's id.
///
/// One pass right to left hashes the name and notes the hash at each dot
/// (the hash of `.suffix`); lookups come after it, so every step of the
/// pass takes the same path and the verifier walks it once.
#[inline(always)]
pub fn match_host<F: Frame + ?Sized, T: HostTable + ?Sized>(
    frame: &F,
    offset: usize,
    len: usize,
    listener: u32,
    table: &T,
) -> (HostClass, Option<u32>) {
    // A wildcard needs at least one byte before its suffix: `*.example.com`
    // matches `a.example.com`, never `example.com` or `.example.com`.
    let Some(first) = frame.byte(offset) else {
        return (HostClass::Partial, None);
    };
    let wildcards_apply = first != b'.';
    let mut hash = FNV_OFFSET;
    // The hash at each dot, in a ring of twice MAX_WILDCARD_DEPTH slots.
    // Every step writes the running hash into the slot after the last dot
    // and moves past it only at a dot: no branch (BPF has no conditional
    // move), one path per step, so the verifier walks the pass once; a
    // branch per dot made the dot count part of its state, and it walked
    // the rest of the pass once per count. The slot written is the 16th
    // last dot's, never one of the 8 read afterwards. `dots` is masked so
    // its range is the same after every step and the lookups after the
    // pass are verified once, not once per name length (a name has fewer
    // than 256 bytes, so the mask never changes its value).
    //
    // Filled with a value that is not one repeated byte: a zero-filled
    // array becomes a call to the BPF object's `memset`, one byte per
    // step (128 steps, half of this function's cost). Every slot read
    // below was written by the pass, so the fill value is never used.
    let mut suffixes = [FNV_OFFSET; RING_SLOTS];
    let mut dots = 0usize;
    // Every byte of the name is inside the frame when its last one is
    // (a frame is contiguous), so the pass reads without a check per byte.
    let last = offset + len.saturating_sub(1);
    if len == 0 || frame.byte(last).is_none() {
        return (HostClass::Partial, None);
    }
    for i in 0..MAX_HOST_LEN {
        if i >= len {
            break;
        }
        let byte = frame.byte_within(last - i);
        hash = step(hash, byte);
        suffixes[dots & (RING_SLOTS - 1)] = hash;
        // 1 at a dot, else 0: `byte ^ b'.'` is 0 only at a dot, and only
        // 0 - 1 sets the top bit.
        let dot = (u64::from(byte ^ b'.').wrapping_sub(1) >> 63) as usize;
        dots = (dots + dot) & 0xff;
    }
    // Suffixes looked up, the longest first; more dots than that means
    // shorter suffixes went unread.
    let seen = dots.min(MAX_WILDCARD_DEPTH + 1);
    if let Some(value) = table.host(&HostKey {
        listener,
        kind: HOST_EXACT,
        hash,
    }) {
        return (HostClass::Known, Some(value.id));
    }
    if wildcards_apply {
        for back in 1..=MAX_WILDCARD_DEPTH {
            if back > seen {
                break;
            }
            let key = HostKey {
                listener,
                kind: HOST_SUFFIX,
                hash: suffixes[dots.wrapping_sub(back) & (RING_SLOTS - 1)],
            };
            if let Some(value) = table.host(&key) {
                return (HostClass::Known, Some(value.id));
            }
        }
    }
    let any = HostKey {
        listener,
        kind: HOST_ANY,
        hash: 0,
    };
    match table.host(&any) {
        Some(value) => (HostClass::Known, Some(value.id)),
        // Shorter suffixes of a deeper name were never looked up.
        None if wildcards_apply && seen > MAX_WILDCARD_DEPTH => (HostClass::Unrecognised, None),
        None => (HostClass::Unknown, None),
    }
}

/// Where the name lies in a data segment of a TLS (`tls`) or HTTP
/// listener, looking at the first `MAX_PAYLOAD_SCAN` bytes of the payload.
#[inline(always)]
pub fn find_name<F: Frame + ?Sized>(
    frame: &F,
    payload: usize,
    payload_end: usize,
    tls: bool,
) -> Name {
    let payload_end = payload_end.min(payload + MAX_PAYLOAD_SCAN);
    if tls {
        tls_server_name(frame, payload, payload_end)
    } else {
        http_host(frame, payload, payload_end)
    }
}

/// The whole decision for a data segment: find the name, then match it.
/// The kernel runs the two halves as separate programs (see gateway-ebpf's
/// `host.rs`); this is the reference it is tested against.
#[inline(always)]
pub fn classify_host<F: Frame + ?Sized, T: HostTable + ?Sized>(
    frame: &F,
    payload: usize,
    payload_end: usize,
    tls: bool,
    listener: u32,
    table: &T,
) -> (HostClass, Option<u32>) {
    match find_name(frame, payload, payload_end, tls) {
        Name::At { offset, len } => match_host(frame, offset, len, listener, table),
        Name::Absent(class) => (class, None),
    }
}

#[cfg(test)]
mod tests;
