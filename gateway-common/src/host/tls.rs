//! The SNI host name of a TLS ClientHello, read through [`Frame`] with
//! every offset checked and every loop bounded.
use super::{Frame, HostClass, MAX_FRAME_OFFSET, MAX_HOST_LEN, MAX_TLS_EXTENSIONS, Name};

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
