//! The `Host` header of an HTTP/1 request head, read through [`Frame`]
//! with every offset checked and every loop bounded: where its value
//! starts, then the name in it.
use super::{Frame, HostClass, MAX_HOST_LEN, MAX_HTTP_SCAN, Name};

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
