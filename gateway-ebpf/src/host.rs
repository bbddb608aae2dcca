//! Host classification of a listener's data segments: the shared
//! classifier (`gateway_common::classify_host`) run over packet memory and
//! the `HOSTS` map.
use aya_ebpf::{
    helpers::{bpf_xdp_adjust_tail, bpf_xdp_load_bytes, bpf_xdp_store_bytes},
    programs::XdpContext,
};
use gateway_common::{
    BucketLookup, Frame, HostClass, HostKey, HostTable, HostValue, ListenerKind, MAX_PAYLOAD_SCAN,
    MAX_RESET_HEADERS, Name, ResetHeaders, host_bucket, host_value, http_host_value_start,
    make_reset, match_host, reset_flow, tls_server_name,
};

use crate::classify::ListenerData;
use crate::maps::{
    FORGET, HOST_BUCKETS, HOST_PROGRAMS, HOSTS, RESET_FLOWS, SCRATCH, SEGMENT, Segment,
};

/// The start of a segment's payload, copied out of the packet.
///
/// Verifier rule: a packet pointer with a variable offset is readable only
/// through the very register that was compared with `data_end`, and LLVM
/// recomputes pointers (and turns `p + 1 > end` into `p >= end`, which
/// proves nothing), so byte-wise parsing straight from the packet does not
/// verify. One `bpf_xdp_load_bytes` copy into a per-CPU buffer, read with a
/// masked index, does, and costs one memcpy.
struct Scratch {
    buf: *const [u8; MAX_PAYLOAD_SCAN],
    len: usize,
}

impl Scratch {
    /// A frame over the first `len` bytes of `buf`.
    #[inline(always)]
    fn new(buf: *const [u8; MAX_PAYLOAD_SCAN], len: usize) -> Self {
        Self { buf, len }
    }
}

impl Frame for Scratch {
    #[inline(always)]
    fn byte(&self, offset: usize) -> Option<u8> {
        // SAFETY: the buffer is a live per-CPU map value of
        // MAX_PAYLOAD_SCAN bytes (a power of two), and the mask keeps the
        // index inside it. Verifier rule: the byte is read before the
        // length check, so it is defined on both paths; LLVM compares an
        // `Option<u8>` by its payload even when it is `None`, and the
        // verifier refuses a register that was never written.
        let byte = unsafe { (*self.buf)[offset & (MAX_PAYLOAD_SCAN - 1)] };
        (offset < self.len).then_some(byte)
    }

    #[inline(always)]
    fn word(&self, offset: usize) -> u64 {
        if offset & 7 != 0 {
            // Never taken: the copy starts at 0 and the scan reads whole
            // words from there. Byte by byte, as the default does.
            let mut word = 0u64;
            for index in 0..8 {
                word |= u64::from(self.byte_within(offset + index)) << (8 * index);
            }
            return word;
        }
        let words: *const [u64; MAX_PAYLOAD_SCAN / 8] = self.buf.cast();
        // SAFETY: the buffer is MAX_PAYLOAD_SCAN bytes of 8-aligned map
        // memory and the mask keeps the index inside it. Words past `len`
        // hold whatever an earlier segment left, which the caller allows.
        u64::from_le(unsafe { (*words)[(offset >> 3) & (MAX_PAYLOAD_SCAN / 8 - 1)] })
    }

    #[inline(always)]
    fn byte_within(&self, offset: usize) -> u8 {
        // SAFETY: as above; the caller has checked `offset < len`.
        unsafe { (*self.buf)[offset & (MAX_PAYLOAD_SCAN - 1)] }
    }
}

/// `value`, read back from map memory so the verifier knows nothing of it.
///
/// Verifier rule: the helper's size argument must be provably non-zero,
/// and the bound learnt from `payload < payload_end` does not survive the
/// subtraction; re-checking an unknown scalar gives the verifier the
/// range it needs. Volatile, so LLVM neither forwards the stored value nor
/// drops the checks made after it.
#[inline(always)]
fn forget(value: usize) -> usize {
    let Some(slot) = FORGET.get_ptr_mut(0) else {
        // Unreachable (index 0 of a one-slot array); a constant keeps this
        // branch to a single state too.
        return 0;
    };
    // SAFETY: a live per-CPU map value only this CPU touches.
    unsafe {
        core::ptr::write_volatile(slot, value as u64);
        core::ptr::read_volatile(slot) as usize
    }
}

/// The `HOSTS` map, behind `HOST_BUCKETS` (see gateway-common's
/// `host_buckets.rs`): the hash map is read only for a key its bucket
/// does not hold while the bucket overflows.
struct Hosts;

impl HostTable for Hosts {
    #[inline(always)]
    fn host(&self, key: &HostKey) -> Option<HostValue> {
        if let Some(bucket) = HOST_BUCKETS.get(host_bucket(key)) {
            match bucket.find(key) {
                BucketLookup::Found(value) => return Some(value),
                BucketLookup::Absent => return None,
                BucketLookup::Overflow => {}
            }
        }
        // SAFETY: copied out at once; userspace replaces entries whole.
        unsafe { HOSTS.get(key) }.copied()
    }
}

/// Slots of `HOST_PROGRAMS` (the loader fills them in this order).
const FIND_NAME_PROGRAM: u32 = 0;
const HOST_VALUE_PROGRAM: u32 = 1;
const MATCH_PROGRAM: u32 = 2;
const RESET_PROGRAM: u32 = 3;

/// Leaves the segment `xdp_ingress` found for `xdp_host` and tail-calls
/// it. Returns only when the call fails (no program in the slot: the
/// daemon has not finished loading), and then the segment simply goes
/// unclassified.
///
/// Verifier rule: a program is verified once per distinct state at each
/// instruction. The payload offsets differ on every parse path (VLAN tags,
/// IPv4 options, IPv6 extension headers, exact or wildcard listener), and
/// a parser step reached from each iteration of a scan loop carries that
/// iteration's offset, so inlined parsers were walked hundreds of times,
/// past the 1M instruction limit. Split into programs reached by tail call
/// (Cilium's pattern), each step starts from offsets read back from the
/// `SEGMENT` map, unknown scalars, and is verified once.
///
/// Only the fields known here are written; each later one is written by
/// the step that finds it, before any step reads it. (Zeroing them here
/// became a call to the object's byte-at-a-time `memset`, about 20 ns.)
#[inline(always)]
pub(crate) fn hand_over(ctx: &XdpContext, data: &ListenerData, frame_len: u64) {
    let Some(slot) = SEGMENT.get_ptr_mut(0) else {
        return;
    };
    // SAFETY: a live per-CPU map value; XDP runs with preemption off, so
    // nothing else on this CPU touches it before `xdp_host` reads it.
    unsafe {
        (*slot).listener = data.listener.id;
        (*slot).kind = data.listener.kind;
        (*slot).payload = data.payload as u32;
        (*slot).payload_end = data.payload_end as u32;
        (*slot).frame_len = frame_len;
        (*slot).ip = data.ip as u32;
        (*slot).tcp = data.tcp as u32;
        (*slot).ipv6 = u32::from(data.ipv6);
        (*slot).flags = data.listener.flags;
        HOST_PROGRAMS.tail_call(ctx, FIND_NAME_PROGRAM);
    }
}

/// `xdp_host`: copies the payload and finds the TLS server name (then
/// tail-calls `xdp_host_match`) or the start of the HTTP `Host` value
/// (then tail-calls `xdp_host_value`). Returns the segment and its class
/// when there is nothing further to do (or a tail call failed); `None` for
/// listeners that carry no host (TCP). A TLS listener that also serves
/// plaintext HTTP sees requests too: a segment that does not start a TLS
/// record is read as HTTP.
#[inline(always)]
pub(crate) fn find_segment_name(ctx: &XdpContext) -> Option<(Segment, HostClass)> {
    let slot = SEGMENT.get_ptr_mut(0)?;
    // SAFETY: a live per-CPU map value, copied out at once.
    let segment = unsafe { *slot };
    let tls = if segment.kind == ListenerKind::Tls as u32 {
        true
    } else if segment.kind == ListenerKind::Http as u32 {
        false
    } else {
        return None;
    };
    let (payload, payload_end) = (segment.payload as usize, segment.payload_end as usize);
    if payload >= payload_end {
        return None;
    }
    let len = forget((payload_end - payload).min(MAX_PAYLOAD_SCAN));
    if len == 0 || len > MAX_PAYLOAD_SCAN {
        return None;
    }
    let buf = SCRATCH.get_ptr_mut(0)?;
    // SAFETY: `buf` is MAX_PAYLOAD_SCAN bytes and `len` (1 to that) fits;
    // the helper checks `payload + len` against the frame.
    let copied = unsafe { bpf_xdp_load_bytes(ctx.ctx, payload as u32, buf.cast(), len as u32) };
    if copied != 0 {
        return None;
    }
    let frame = Scratch::new(buf, len);
    // SAFETY (both blocks below): as above; the next program reads the slot.
    unsafe { (*slot).scratch_len = len as u32 };
    if tls && matches!(frame.byte(0), Some(22)) {
        return match tls_server_name(&frame, 0, len) {
            Name::Absent(class) => Some((segment, class)),
            Name::At { offset, len } => Some((segment, hand_name(ctx, slot, offset, len))),
        };
    }
    match http_host_value_start(&frame, 0, len) {
        Err(class) => Some((segment, class)),
        Ok(at) => {
            unsafe {
                (*slot).value_start = at as u32;
                HOST_PROGRAMS.tail_call(ctx, HOST_VALUE_PROGRAM);
            }
            // The tail call failed: the header was found but not read.
            Some((segment, HostClass::Partial))
        }
    }
}

/// `xdp_host_value`: reads the HTTP `Host` value whose start `xdp_host`
/// found, then tail-calls `xdp_host_match`. Returns the segment and its
/// class when there is no name to match (or the tail call failed).
#[inline(always)]
pub(crate) fn read_host_value(ctx: &XdpContext) -> Option<(Segment, HostClass)> {
    let slot = SEGMENT.get_ptr_mut(0)?;
    // SAFETY: a live per-CPU map value, copied out at once.
    let segment = unsafe { *slot };
    let frame = Scratch::new(SCRATCH.get_ptr(0)?, segment.scratch_len as usize);
    match host_value(&frame, segment.value_start as usize, frame.len) {
        Name::Absent(class) => Some((segment, class)),
        Name::At { offset, len } => Some((segment, hand_name(ctx, slot, offset, len))),
    }
}

/// Leaves the name's place in `slot` and tail-calls `xdp_host_match`.
/// Returns only when the call fails: the name was found but not matched.
#[inline(always)]
fn hand_name(ctx: &XdpContext, slot: *mut Segment, offset: usize, len: usize) -> HostClass {
    // SAFETY: `slot` is the live per-CPU `SEGMENT` value the caller read.
    unsafe {
        (*slot).name_offset = offset as u32;
        (*slot).name_len = len as u32;
        HOST_PROGRAMS.tail_call(ctx, MATCH_PROGRAM);
    }
    HostClass::Partial
}

/// Tail-calls `xdp_host_reset` for the segment `xdp_host_match` matched.
/// Returns only when the call fails, and then the segment passes as it is.
///
/// Verifier rule: as a program of its own, the reset is verified once
/// from a clean state instead of after each of the match's exits.
#[inline(always)]
pub(crate) fn hand_reset(ctx: &XdpContext) {
    // SAFETY: the slot holds a program of this object (the loader's).
    unsafe { HOST_PROGRAMS.tail_call(ctx, RESET_PROGRAM) };
}

/// The segment the previous program left, copied out.
#[inline(always)]
pub(crate) fn segment() -> Option<Segment> {
    let slot = SEGMENT.get_ptr(0)?;
    // SAFETY: a live per-CPU map value, copied out at once.
    Some(unsafe { *slot })
}

/// Turns the segment into a bare RST|ACK for the local stack (see
/// gateway-common's `reset.rs`): headers copied out, rewritten, copied
/// back, and the payload cut off. Returns whether it did; the segment is
/// passed unchanged when it cannot be (headers too long, a helper failed).
#[inline(always)]
pub(crate) fn reset_segment(ctx: &XdpContext, segment: &Segment) -> bool {
    let (ip, tcp, payload) = (
        segment.ip as usize,
        segment.tcp as usize,
        segment.payload as usize,
    );
    if ip >= tcp || tcp >= payload {
        return false;
    }
    // Verifier rule: helper sizes must be provably in range, and the
    // range learnt from the comparisons above does not survive the
    // subtraction; re-checking an unknown scalar gives it one.
    let len = forget(payload - ip);
    if !(40..=MAX_RESET_HEADERS).contains(&len) {
        return false;
    }
    let Some(scratch) = SCRATCH.get_ptr_mut(0) else {
        return false;
    };
    let buf: *mut [u8; MAX_RESET_HEADERS] = scratch.cast();
    // The frame is unchanged since `xdp_ingress` measured it. Verifier
    // rule: no arithmetic on `data_end`, which measuring again here led
    // LLVM to (it folded the subtraction into `payload - frame_len`).
    let frame_len = segment.frame_len as usize;
    // SAFETY: the scratch buffer is MAX_PAYLOAD_SCAN >= MAX_RESET_HEADERS
    // bytes of per-CPU map memory only this program touches now; the
    // helpers check `ip + len` against the frame.
    unsafe {
        if bpf_xdp_load_bytes(ctx.ctx, ip as u32, buf.cast(), len as u32) != 0 {
            return false;
        }
        let headers = ResetHeaders {
            ipv6: segment.ipv6 != 0,
            tcp: tcp - ip,
            len,
        };
        // The client's retransmission of a segment already turned into a
        // reset: let it meet the closed socket, whose stack resets it.
        let flow = reset_flow(&*buf, headers);
        if RESET_FLOWS.get(flow).is_some() {
            let _ = RESET_FLOWS.remove(flow);
            return false;
        }
        if RESET_FLOWS.insert(flow, 1, 0).is_err() {
            return false;
        }
        make_reset(&mut *buf, headers);
        if bpf_xdp_store_bytes(ctx.ctx, ip as u32, buf.cast(), len as u32) != 0 {
            return false;
        }
        // Cut the payload and any Ethernet padding after it.
        bpf_xdp_adjust_tail(ctx.ctx, payload as i32 - frame_len as i32) == 0
    }
}

/// `xdp_host_match`: matches the name found before against the
/// listener's hosts. Returns the segment, its class and the known host's id.
#[inline(always)]
pub(crate) fn match_segment_name() -> Option<(Segment, HostClass, Option<u32>)> {
    let slot = SEGMENT.get_ptr(0)?;
    // SAFETY: a live per-CPU map value, copied out at once.
    let segment = unsafe { *slot };
    let frame = Scratch::new(SCRATCH.get_ptr(0)?, segment.scratch_len as usize);
    let (class, host) = match_host(
        &frame,
        segment.name_offset as usize,
        segment.name_len as usize,
        segment.listener,
        &Hosts,
    );
    Some((segment, class, host))
}
