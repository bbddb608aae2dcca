//! Accept loops that back off when the process runs out of file
//! descriptors instead of spinning, and reset the connections the gate
//! refuses.
use std::{io, net::SocketAddr, sync::atomic::Ordering, time::Duration};

// tokio's clock, so tests can pause time.
use tokio::{
    net::{TcpListener, TcpStream},
    time::Instant,
};

use super::{Admitted, Counters, Gate, Place};

/// How long an accept loop sleeps after the first resource error, and at most.
const BACKOFF_FIRST: Duration = Duration::from_millis(10);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
/// At most one log line per interval per listener for failed accepts.
const ACCEPT_LOG_INTERVAL: Duration = Duration::from_secs(10);

/// `accept` that survives running out of descriptors: on any error but the
/// ones that concern a single pending connection (EMFILE, ENFILE, ENOBUFS,
/// ENOMEM and anything unexpected) it sleeps, 10 ms doubling to 1 s, so the
/// loop never spins, and it logs failures at most once per 10 seconds with a
/// count.
#[derive(Debug)]
pub struct Acceptor {
    what: String,
    backoff: Duration,
    last_log: Option<Instant>,
    suppressed: u64,
}

impl Acceptor {
    /// `what` names the listener in log lines (`proxy 0.0.0.0:80`).
    pub fn new(what: String) -> Self {
        Self {
            what,
            backoff: BACKOFF_FIRST,
            last_log: None,
            suppressed: 0,
        }
    }

    /// The next connection; errors are counted, logged (rate-limited) and
    /// retried, never returned.
    pub async fn accept(
        &mut self,
        listener: &TcpListener,
        counters: &Counters,
    ) -> (TcpStream, SocketAddr) {
        loop {
            match listener.accept().await {
                Ok(accepted) => {
                    self.backoff = BACKOFF_FIRST;
                    return accepted;
                }
                Err(err) => {
                    counters.accept_errors.fetch_add(1, Ordering::Relaxed);
                    let transient = concerns_one_connection(&err);
                    self.log(&err, !transient);
                    if !transient {
                        tokio::time::sleep(self.backoff).await;
                        self.backoff = (self.backoff * 2).min(BACKOFF_MAX);
                    }
                }
            }
        }
    }

    /// The next connection `gate` admits, with its peer address; `place`
    /// says which listener a connection was made to. Those refused are
    /// reset (no TIME_WAIT, and the client learns at once rather than
    /// waiting for a timeout) and skipped.
    pub async fn admitted(
        &mut self,
        listener: &TcpListener,
        gate: &Gate,
        place: impl Fn(&TcpStream) -> Place,
    ) -> (TcpStream, SocketAddr, Admitted) {
        loop {
            let (stream, peer) = self.accept(listener, &gate.counters).await;
            match gate.admit(peer.ip(), place(&stream)) {
                Ok(admitted) => return (stream, peer, admitted),
                Err(_) => {
                    let _ = stream.set_zero_linger();
                }
            }
        }
    }

    fn log(&mut self, err: &io::Error, backing_off: bool) {
        let now = Instant::now();
        if self
            .last_log
            .is_some_and(|last| now.duration_since(last) < ACCEPT_LOG_INTERVAL)
        {
            self.suppressed += 1;
            return;
        }
        let more = match self.suppressed {
            0 => String::new(),
            n => format!(" ({n} more since the last report)"),
        };
        let action = if backing_off {
            "; backing off (if the process is out of descriptors: raise the open-file limit or lower --max-connections)"
        } else {
            ""
        };
        log::warn!("{}: accept failed: {err}{more}{action}", self.what);
        self.last_log = Some(now);
        self.suppressed = 0;
    }
}

/// Errors accept(2) reports for one pending connection that failed (the
/// man page says to retry them as EAGAIN); the next accept may well succeed.
fn concerns_one_connection(err: &io::Error) -> bool {
    matches!(
        err.raw_os_error(),
        Some(
            libc::ECONNABORTED
                | libc::EINTR
                | libc::EPROTO
                | libc::EPERM
                | libc::ENETDOWN
                | libc::ENOPROTOOPT
                | libc::EHOSTDOWN
                | libc::ENONET
                | libc::EHOSTUNREACH
                | libc::EOPNOTSUPP
                | libc::ENETUNREACH
        )
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::connection::{Limits, tests::LIMITS};

    #[test]
    fn only_errors_about_one_connection_are_retried_at_once() {
        for errno in [libc::ECONNABORTED, libc::EPROTO, libc::EINTR] {
            assert!(concerns_one_connection(&io::Error::from_raw_os_error(
                errno
            )));
        }
        for errno in [
            libc::EMFILE,
            libc::ENFILE,
            libc::ENOBUFS,
            libc::ENOMEM,
            libc::EINVAL,
        ] {
            assert!(!concerns_one_connection(&io::Error::from_raw_os_error(
                errno
            )));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn failed_accepts_are_logged_once_per_interval() {
        let mut acceptor = Acceptor::new("test".into());
        let err = io::Error::from_raw_os_error(libc::EMFILE);
        for _ in 0..1_000 {
            acceptor.log(&err, true);
        }
        assert_eq!(acceptor.suppressed, 999);
        tokio::time::advance(ACCEPT_LOG_INTERVAL).await;
        acceptor.log(&err, true);
        assert_eq!(acceptor.suppressed, 0);
    }

    #[tokio::test]
    async fn refused_connections_are_reset_and_skipped() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let gate = Gate::new(Limits {
            max_connections: 1,
            ..LIMITS
        });
        let _first = TcpStream::connect(addr).await.unwrap();
        let mut acceptor = Acceptor::new("test".into());
        let (_stream, _, _admitted) = acceptor.admitted(&listener, &gate, |_| Place::ONLY).await;
        let mut second = TcpStream::connect(addr).await.unwrap();
        let accept = acceptor.admitted(&listener, &gate, |_| Place::ONLY);
        assert!(
            tokio::time::timeout(Duration::from_millis(300), accept)
                .await
                .is_err(),
            "the second connection is not handed out"
        );
        let mut byte = [0u8; 1];
        let read = tokio::io::AsyncReadExt::read(&mut second, &mut byte).await;
        assert!(read.is_err(), "reset, not closed: {read:?}");
        assert_eq!(gate.counters.rejected.load(Ordering::Relaxed), 1);
    }
}
