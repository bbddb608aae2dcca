//! Why a request did not reach a backend, and Envoy's flag for each.
use std::net::SocketAddr;

/// Why a request did not reach a backend; each maps to Envoy's flag.
#[derive(Debug, thiserror::Error)]
pub enum UpstreamError {
    /// The cluster has no endpoint to try (UH).
    #[error("no healthy upstream")]
    NoEndpoint,
    /// An original-destination cluster, for a connection that has no
    /// original destination: one made to the gateway's own `local`
    /// address (UH, as Envoy's ORIGINAL_DST balancer answers).
    #[error("no original destination{}", local.map(|l| format!(": the connection was made to the gateway's own address {l}")).unwrap_or_default())]
    NoOriginalDestination { local: Option<SocketAddr> },
    /// DNS gave no address (UH).
    #[error("cannot resolve {host}: {reason}")]
    Resolve { host: String, reason: String },
    /// TCP connect failed or timed out (UF).
    #[error("upstream connect error to {addr}: {reason}")]
    Connect { addr: SocketAddr, reason: String },
    /// The TLS handshake of origination failed (UF): a 503, never plaintext.
    #[error("upstream TLS to {addr} failed: {reason}")]
    Tls { addr: SocketAddr, reason: String },
    /// The cluster's pool limits were reached (UO): `maxConnections` with
    /// `http1MaxPendingRequests` waiting, or `http2MaxRequests` in flight.
    #[error("upstream overflow: the cluster's connection pool limits are reached")]
    Overflow,
    /// The exchange failed after the connection was made: the backend
    /// broke the protocol (UPE, a 502) or the connection (UC, a 503).
    #[error("upstream {addr}: {source}")]
    Exchange {
        addr: SocketAddr,
        #[source]
        source: hyper::Error,
    },
}

/// The error of a failed exchange with `addr`, for `map_err`.
pub(super) fn exchange(addr: SocketAddr) -> impl FnOnce(hyper::Error) -> UpstreamError {
    move |source| UpstreamError::Exchange { addr, source }
}

/// How a failure looks to a retry policy (Envoy's reset reasons).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum FailureKind {
    /// No endpoint to try: never retried.
    NoHost,
    /// The pool limits were reached: never retried (Envoy's `Overflow`
    /// reset reason).
    Overflow,
    /// The connection (or its TLS handshake) could not be made.
    ConnectFailure,
    /// An HTTP/2 backend refused the stream (REFUSED_STREAM).
    RefusedStream,
    /// The connection ended before the request was written.
    ResetBeforeRequest,
    /// The connection ended, or was reset, after the request was written.
    Reset,
}

impl UpstreamError {
    /// What a retry policy sees of this failure.
    pub fn kind(&self) -> FailureKind {
        match self {
            Self::NoEndpoint | Self::NoOriginalDestination { .. } | Self::Resolve { .. } => {
                FailureKind::NoHost
            }
            Self::Overflow => FailureKind::Overflow,
            Self::Connect { .. } | Self::Tls { .. } => FailureKind::ConnectFailure,
            Self::Exchange { source, .. } if refused_stream(source) => FailureKind::RefusedStream,
            Self::Exchange { source, .. } if source.is_canceled() => {
                FailureKind::ResetBeforeRequest
            }
            Self::Exchange { .. } => FailureKind::Reset,
        }
    }

    /// Envoy's response flag for this failure.
    pub fn flag(&self) -> &'static str {
        match self {
            Self::NoEndpoint | Self::NoOriginalDestination { .. } | Self::Resolve { .. } => "UH",
            Self::Overflow => "UO",
            Self::Connect { .. } | Self::Tls { .. } => "UF",
            Self::Exchange { source, .. } if protocol_error(source) => "UPE",
            Self::Exchange { .. } => "UC",
        }
    }
}

/// Whether a failed exchange was the backend breaking HTTP (a head that
/// does not parse or is too large, both `Content-Length` and chunked, an
/// HTTP/2 protocol, flow-control, frame-size or compression error), which
/// Envoy answers 502 and flags `UPE`, rather than a connection that ended
/// (`UC`).
pub fn protocol_error(err: &hyper::Error) -> bool {
    if err.is_parse() || err.is_parse_status() || err.is_parse_too_large() {
        return true;
    }
    http2_protocol_error(std::error::Error::source(err))
}

/// Whether an HTTP/2 backend refused the stream (it never processed it).
fn refused_stream(err: &hyper::Error) -> bool {
    let mut source = std::error::Error::source(err);
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return h2.reason() == Some(h2::Reason::REFUSED_STREAM);
        }
        source = cause.source();
    }
    false
}

/// Whether an HTTP/2 error in the chain from `source` names a protocol
/// violation (as opposed to a cancel or a refused stream).
fn http2_protocol_error(mut source: Option<&(dyn std::error::Error + 'static)>) -> bool {
    while let Some(cause) = source {
        if let Some(h2) = cause.downcast_ref::<h2::Error>() {
            return matches!(
                h2.reason(),
                Some(
                    h2::Reason::PROTOCOL_ERROR
                        | h2::Reason::FLOW_CONTROL_ERROR
                        | h2::Reason::FRAME_SIZE_ERROR
                        | h2::Reason::COMPRESSION_ERROR
                )
            );
        }
        source = cause.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An error whose cause is the HTTP/2 error, as hyper's is.
    #[derive(Debug)]
    struct Caused(h2::Error);

    impl std::fmt::Display for Caused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("http2 error")
        }
    }

    impl std::error::Error for Caused {
        fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
            Some(&self.0)
        }
    }

    #[test]
    fn http2_protocol_violations_are_protocol_errors_and_resets_are_not() {
        for reason in [
            h2::Reason::PROTOCOL_ERROR,
            h2::Reason::FLOW_CONTROL_ERROR,
            h2::Reason::FRAME_SIZE_ERROR,
            h2::Reason::COMPRESSION_ERROR,
        ] {
            let err = h2::Error::from(reason);
            assert!(http2_protocol_error(Some(&err)), "{reason:?}");
            // Found as the cause of another error too (hyper's).
            let wrapped = Caused(err);
            assert!(http2_protocol_error(Some(&wrapped)), "{reason:?} wrapped");
        }
        for reason in [
            h2::Reason::CANCEL,
            h2::Reason::REFUSED_STREAM,
            h2::Reason::NO_ERROR,
        ] {
            assert!(
                !http2_protocol_error(Some(&h2::Error::from(reason))),
                "{reason:?}"
            );
        }
        assert!(!http2_protocol_error(Some(&std::io::Error::other("reset"))));
        assert!(!http2_protocol_error(None));
    }

    /// The error hyper's HTTP/1.1 client gives when the backend reads the
    /// request, writes `answer` and closes (in memory, no socket).
    async fn exchange_error(answer: &'static [u8]) -> hyper::Error {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        let (client, mut backend) = tokio::io::duplex(1 << 16);
        tokio::spawn(async move {
            let mut request = [0u8; 1024];
            let _ = backend.read(&mut request).await;
            let _ = backend.write_all(answer).await;
        });
        let (mut sender, connection) =
            hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(client))
                .await
                .expect("an in-memory handshake");
        tokio::spawn(connection);
        let request = hyper::Request::new(http_body_util::Empty::<bytes::Bytes>::new());
        let answered = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            sender.send_request(request),
        )
        .await
        .expect("the exchange ends in time");
        answered.expect_err("the backend gave no valid response")
    }

    fn exchange_flag(source: hyper::Error) -> &'static str {
        let addr = SocketAddr::from(([192, 0, 2, 1], 80));
        UpstreamError::Exchange { addr, source }.flag()
    }

    #[tokio::test]
    async fn a_backend_breaking_http1_is_a_protocol_error_flagged_upe() {
        // A header line that is no header (a parse error of no other kind).
        let err = exchange_error(b"HTTP/1.1 200 OK\r\nnot a header\r\n\r\n").await;
        assert!(err.is_parse() && !err.is_parse_status() && !err.is_parse_too_large());
        assert!(protocol_error(&err), "{err}");
        assert_eq!(exchange_flag(err), "UPE");
        // A status that is no number.
        let err = exchange_error(b"HTTP/1.1 2x0 OK\r\n\r\n").await;
        assert!(protocol_error(&err), "{err}");
        assert_eq!(exchange_flag(err), "UPE");
    }

    #[tokio::test]
    async fn a_backend_closing_before_its_answer_is_a_connection_termination_flagged_uc() {
        let err = exchange_error(b"").await;
        assert!(err.is_incomplete_message(), "{err}");
        assert!(!protocol_error(&err), "{err}");
        assert_eq!(exchange_flag(err), "UC");
    }

    #[test]
    fn flags_name_the_failure() {
        assert_eq!(UpstreamError::NoEndpoint.flag(), "UH");
        let addr = SocketAddr::from(([192, 0, 2, 1], 80));
        assert_eq!(
            UpstreamError::Connect {
                addr,
                reason: String::new()
            }
            .flag(),
            "UF"
        );
    }
}
