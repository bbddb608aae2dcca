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

const _: () = assert!(core::mem::size_of::<HostKey>() == 16);
const _: () = assert!(core::mem::size_of::<HostValue>() == 8);

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
    pub const ALL: [HostClass; Self::COUNT as usize] = [
        HostClass::Known,
        HostClass::Unknown,
        HostClass::NoHost,
        HostClass::Partial,
        HostClass::Unrecognised,
    ];

    /// Stable snake_case name, used in logs and metrics labels.
    pub const fn name(self) -> &'static str {
        match self {
            HostClass::Known => "known",
            HostClass::Unknown => "unknown",
            HostClass::NoHost => "no_host",
            HostClass::Partial => "partial",
            HostClass::Unrecognised => "unrecognised",
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

/// Finds the SNI host name in a TLS record starting at `start` (the TCP
/// payload) and ending at `end`: a handshake record holding a ClientHello
/// whose extensions up to `server_name` are in this segment.
#[inline(always)]
pub fn tls_server_name<F: Frame + ?Sized>(frame: &F, start: usize, end: usize) -> Name {
    match tls_server_name_inner(frame, start, end) {
        Ok(name) => name,
        Err(class) => Name::Absent(class),
    }
}

#[inline(always)]
fn tls_server_name_inner<F: Frame + ?Sized>(
    frame: &F,
    start: usize,
    end: usize,
) -> Result<Name, HostClass> {
    use HostClass::{NoHost, Partial, Unrecognised};
    // Record header (type 22 = handshake, version 3.x), then the handshake
    // header (type 1 = ClientHello); anything else is not a connection's start.
    let content_type = frame.byte(start).ok_or(Unrecognised)?;
    let major = frame.byte(start + 1).ok_or(Unrecognised)?;
    let handshake_type = frame.byte(start + 5).ok_or(Unrecognised)?;
    if content_type != 22 || major != 3 || handshake_type != 1 {
        return Err(Unrecognised);
    }
    let record_end = start + 5 + usize::from(frame.be16(start + 3).ok_or(Unrecognised)?);
    // legacy_version (2) and random (32) follow the 4-byte handshake header.
    let session_id = start + 5 + 4 + 2 + 32;
    let mut offset = session_id + 1 + usize::from(frame.byte(session_id).ok_or(Partial)?);
    offset = bounded(offset + 2 + usize::from(frame.be16(offset).ok_or(Partial)?))?;
    offset = bounded(offset + 1 + usize::from(frame.byte(offset).ok_or(Partial)?))?;
    let extensions_len = usize::from(frame.be16(offset).ok_or(Partial)?);
    offset += 2;
    let extensions_end = offset + extensions_len;
    if extensions_end > record_end {
        return Err(Unrecognised);
    }
    for _ in 0..MAX_TLS_EXTENSIONS {
        if offset >= extensions_end {
            return Err(NoHost);
        }
        offset = bounded(offset)?;
        let kind = frame.be16(offset).ok_or(Partial)?;
        let len = usize::from(frame.be16(offset + 2).ok_or(Partial)?);
        if kind == 0 {
            // server_name: list length (2), name type (1, 0 = host_name),
            // name length (2), name.
            let name_type = frame.byte(offset + 6).ok_or(Partial)?;
            let name_len = usize::from(frame.be16(offset + 7).ok_or(Partial)?);
            let name = offset + 9;
            if name_type != 0 || name_len == 0 || name_len > MAX_HOST_LEN {
                return Err(Unrecognised);
            }
            if name + name_len > offset + 4 + len || name + name_len > extensions_end {
                return Err(Unrecognised);
            }
            if name + name_len > end {
                return Err(Partial);
            }
            return Ok(Name::At {
                offset: name,
                len: name_len,
            });
        }
        offset += 4 + len;
    }
    Err(Partial)
}

/// `offset` if it is within reach of the parser, else `Partial`: a
/// ClientHello this large continues past any single segment.
#[inline(always)]
fn bounded(offset: usize) -> Result<usize, HostClass> {
    if offset > MAX_FRAME_OFFSET {
        Err(HostClass::Partial)
    } else {
        Ok(offset)
    }
}

/// Finds the `Host` header's name (without port) in an HTTP/1 request head
/// starting at `start` and ending at `end`.
#[inline(always)]
pub fn http_host<F: Frame + ?Sized>(frame: &F, start: usize, end: usize) -> Name {
    match http_host_value_start(frame, start, end) {
        Ok(at) => host_value(frame, at, end),
        Err(class) => Name::Absent(class),
    }
}

/// Where the `Host` header's value starts (just past `host:`) in an HTTP/1
/// request head starting at `start` and ending at `end`; the first half of
/// [`http_host`], which the kernel runs as a program of its own.
#[inline(always)]
pub fn http_host_value_start<F: Frame + ?Sized>(
    frame: &F,
    start: usize,
    end: usize,
) -> Result<usize, HostClass> {
    // A request line starts with an upper-case method token; HTTP/2's
    // prior-knowledge preface (`PRI * HTTP/2.0`) carries no Host.
    match frame.byte(start) {
        Some(b'A'..=b'Z') => {}
        _ => return Err(HostClass::Unrecognised),
    }
    if matches!(frame.byte(start), Some(b'P'))
        && matches!(frame.byte(start + 1), Some(b'R'))
        && matches!(frame.byte(start + 2), Some(b'I'))
        && matches!(frame.byte(start + 3), Some(b' '))
    {
        return Err(HostClass::Unrecognised);
    }
    // Eight bytes at a time: a word with no line feed is skipped whole
    // (most of a request line and of each header line), and only after a
    // line feed are bytes read one by one, to see whether the next line is
    // empty (the head ended without a Host) or starts with `host:`. The
    // line feeds of a word are taken in order, so the first line that
    // decides wins, as in a byte-by-byte scan.
    let limit = end.min(start + MAX_HTTP_SCAN);
    for word_index in 0..MAX_HTTP_SCAN / 8 {
        let base = start + 8 * word_index;
        if base >= limit {
            return Err(HostClass::Partial);
        }
        let mut feeds = line_feeds(frame.word(base));
        // At most four line feeds of a word are followed by another line:
        // a fifth would sit right after one of them, and the line after
        // that one is then empty, which ends the scan.
        for _ in 0..4 {
            if feeds == 0 {
                break;
            }
            let newline = base + lowest_marked_byte(feeds);
            feeds &= feeds - 1;
            // A line feed at or past the limit (or past the frame, read as
            // whatever is there) ends the scan in `line_after_feed`, as
            // reaching the limit does.
            if let Some(found) = line_after_feed(frame, newline + 1, limit) {
                return found;
            }
        }
    }
    Err(HostClass::Partial)
}

/// The high bit of each byte of `word` that is a line feed, and no other
/// bit (the exact form of the zero-byte test, with no false positives).
#[inline(always)]
fn line_feeds(word: u64) -> u64 {
    const LOW7: u64 = 0x7f7f_7f7f_7f7f_7f7f;
    let x = word ^ 0x0a0a_0a0a_0a0a_0a0a;
    !(((x & LOW7).wrapping_add(LOW7)) | x | LOW7)
}

/// The index (0 to 7, first byte 0) of the lowest byte whose high bit is
/// set in `marks` (non-zero): a multiply instead of a count of trailing
/// zeros, which BPF has no instruction for.
#[inline(always)]
fn lowest_marked_byte(marks: u64) -> usize {
    let lowest = marks & marks.wrapping_neg();
    ((lowest >> 7).wrapping_mul(0x0001_0203_0405_0607) >> 56) as usize
}

/// What the line starting at `at` (just after a line feed) says: the end
/// of the head (`NoHost`), the Host value's start (just past `host:`, the
/// letters in either case), or `Partial` when it runs past `limit`; `None`
/// for any other line.
#[inline(always)]
fn line_after_feed<F: Frame + ?Sized>(
    frame: &F,
    at: usize,
    limit: usize,
) -> Option<Result<usize, HostClass>> {
    for (offset, expected) in b"host:".iter().enumerate() {
        let position = at + offset;
        if position >= limit {
            return Some(Err(HostClass::Partial));
        }
        let Some(byte) = frame.byte(position) else {
            return Some(Err(HostClass::Partial));
        };
        if offset == 0 && (byte == b'\r' || byte == b'\n') {
            return Some(Err(HostClass::NoHost));
        }
        // ASCII's case bit (0x20) folds the four letters, not the colon.
        let folded = if *expected == b':' { byte } else { byte | 0x20 };
        if folded != *expected {
            return None;
        }
    }
    Some(Ok(at + 5))
}

/// The name in a `Host` value starting at `at`: leading blanks skipped,
/// ended by a `:port`, blank or line end. An IPv6 literal keeps its
/// brackets and is matched as it is (no server host names one).
#[inline(always)]
pub fn host_value<F: Frame + ?Sized>(frame: &F, at: usize, end: usize) -> Name {
    let mut name_start = at;
    for _ in 0..MAX_LEADING_BLANKS {
        match frame.byte(name_start) {
            Some(b' ') | Some(b'\t') => name_start += 1,
            _ => break,
        }
    }
    let bracketed = match frame.byte(name_start) {
        Some(byte) => byte == b'[',
        None => return Name::Absent(HostClass::Partial),
    };
    // Only the loop index is carried, as in `http_host`.
    for len in 0..=MAX_HOST_LEN {
        let offset = name_start + len;
        if offset >= end {
            return Name::Absent(HostClass::Partial);
        }
        let Some(byte) = frame.byte(offset) else {
            return Name::Absent(HostClass::Partial);
        };
        let name_len = match byte {
            b'\r' | b'\n' | b' ' | b'\t' => len,
            b':' if !bracketed => len,
            b']' if bracketed => len + 1,
            _ => continue,
        };
        if name_len == 0 {
            return Name::Absent(HostClass::NoHost);
        }
        if name_len > MAX_HOST_LEN {
            return Name::Absent(HostClass::Unrecognised);
        }
        return Name::At {
            offset: name_start,
            len: name_len,
        };
    }
    Name::Absent(HostClass::Unrecognised)
}

/// Blanks skipped before a `Host` value.
const MAX_LEADING_BLANKS: usize = 8;

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
