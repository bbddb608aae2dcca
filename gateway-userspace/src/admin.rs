//! The admin endpoint on loopback, as Envoy's admin port: `/stats` for the
//! counters and `/ready` for readiness checks.
//!
//! It cannot hurt the data path: it runs on a thread of its own (a
//! single-threaded runtime at a lower scheduling priority, as Envoy keeps
//! admin on its main thread, away from the workers), owns the counter maps
//! outright so no lock is ever shared with the proxy, reads them at most once
//! per [`STATS_MAX_AGE`] however many scrapes arrive (a scrape gets counters
//! at most that old), and holds its connections to the same deadlines and
//! cap as the proxy's.
use std::{
    cell::RefCell, convert::Infallible, io, net::SocketAddr, rc::Rc, sync::Arc, thread::JoinHandle,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch, task::LocalSet, time::Instant};

use crate::{
    connection::{Acceptor, Activity, Admitted, Gate, Place, with_deadlines},
    readiness::Readiness,
};

/// Renders the current counters in a format. Called on the admin thread only.
pub type RenderFn = Box<dyn FnMut(StatsFormat) -> Result<String, String> + Send>;

/// The formats `/stats` serves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StatsFormat {
    /// `name value` lines (`/stats`).
    Text,
    /// Prometheus' text exposition format (`/stats/prometheus`).
    Prometheus,
}

/// Oldest counters a scrape is served: the maps are read at most once per
/// this interval, and every scrape within it shares that read.
pub const STATS_MAX_AGE: Duration = Duration::from_millis(100);
/// Largest admin request head.
const MAX_REQUEST_HEAD: usize = 16 * 1024;
/// Scheduling priority (nice) of the admin thread: under CPU contention the
/// proxy's workers run first.
const ADMIN_NICE: libc::c_int = 10;

/// Starts the admin endpoint on its own thread; it stops when `shutdown`
/// flips. `listener` must be bound already, so address errors surface before
/// anything is attached.
pub fn spawn(
    listener: std::net::TcpListener,
    render: RenderFn,
    readiness: Arc<Readiness>,
    gate: Arc<Gate>,
    shutdown: watch::Receiver<bool>,
) -> io::Result<JoinHandle<()>> {
    listener.set_nonblocking(true)?;
    std::thread::Builder::new()
        .name("admin".into())
        .spawn(move || {
            lower_priority();
            let runtime = match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(runtime) => runtime,
                Err(err) => {
                    log::error!("admin endpoint not started: {err}");
                    return;
                }
            };
            LocalSet::new().block_on(&runtime, async move {
                match TcpListener::from_std(listener) {
                    Ok(listener) => serve(listener, render, readiness, gate, shutdown).await,
                    Err(err) => log::error!("admin endpoint not started: {err}"),
                }
            });
        })
}

#[allow(
    unsafe_code,
    reason = "FFI: the SAFETY comments state each call's contract"
)]
fn lower_priority() {
    // Linux keeps a nice value per thread; PRIO_PROCESS with the thread id
    // sets this thread's alone.
    // SAFETY: gettid and setpriority take plain integers and touch no memory.
    let result = unsafe {
        let tid = libc::syscall(libc::SYS_gettid) as libc::id_t;
        libc::setpriority(libc::PRIO_PROCESS, tid, ADMIN_NICE)
    };
    if result != 0 {
        log::debug!(
            "admin thread keeps its priority: {}",
            io::Error::last_os_error()
        );
    }
}

async fn serve(
    listener: TcpListener,
    render: RenderFn,
    readiness: Arc<Readiness>,
    gate: Arc<Gate>,
    mut shutdown: watch::Receiver<bool>,
) {
    let cache = Rc::new(RefCell::new(StatsCache::new(render)));
    let addr = listener
        .local_addr()
        .map_or_else(|_| "?".to_string(), |a: SocketAddr| a.to_string());
    let mut acceptor = Acceptor::new(format!("admin {addr}"));
    loop {
        tokio::select! {
            (stream, _, admitted) = acceptor.admitted(&listener, &gate, |_| Place::ONLY) => {
                tokio::task::spawn_local(serve_connection(
                    stream,
                    Rc::clone(&cache),
                    Arc::clone(&readiness),
                    Arc::clone(&gate),
                    admitted,
                ));
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    cache: Rc<RefCell<StatsCache>>,
    readiness: Arc<Readiness>,
    gate: Arc<Gate>,
    _admitted: Admitted,
) {
    let activity = Arc::new(Activity::new());
    let service = service_fn({
        let activity = Arc::clone(&activity);
        move |req: hyper::Request<hyper::body::Incoming>| {
            let _request = activity.begin();
            let response = respond(
                req.method(),
                req.uri().path(),
                Instant::now(),
                &cache,
                &readiness,
            );
            async move { Ok::<_, Infallible>(response) }
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(gate.limits.request_head_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    if let Ok(Err(err)) = with_deadlines(connection.as_mut(), &activity, &gate).await {
        log::debug!("admin connection: {err}");
    }
}

fn respond(
    method: &Method,
    path: &str,
    now: Instant,
    cache: &RefCell<StatsCache>,
    readiness: &Readiness,
) -> Response<Full<Bytes>> {
    if method != Method::GET && method != Method::HEAD {
        let mut response = text(
            StatusCode::METHOD_NOT_ALLOWED,
            Bytes::from_static(b"admin endpoints take GET and HEAD\n"),
        );
        response
            .headers_mut()
            .insert(header::ALLOW, header::HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/ready" => match readiness.check(now.into_std()) {
            Ok(()) => text(StatusCode::OK, Bytes::from_static(b"LIVE\n")),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                Bytes::from(format!("NOT READY: {why}\n")),
            ),
        },
        "/stats" | "/stats/prometheus" => {
            let format = if path == "/stats" {
                StatsFormat::Text
            } else {
                StatsFormat::Prometheus
            };
            match cache.borrow_mut().snapshot(format, now) {
                Ok(body) if format == StatsFormat::Prometheus => {
                    let mut response = text(StatusCode::OK, body);
                    response.headers_mut().insert(
                        header::CONTENT_TYPE,
                        header::HeaderValue::from_static(
                            "text/plain; version=0.0.4; charset=utf-8",
                        ),
                    );
                    response
                }
                Ok(body) => text(StatusCode::OK, body),
                Err(err) => text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    Bytes::from(format!("{err}\n")),
                ),
            }
        }
        _ => text(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"endpoints: /stats /stats/prometheus /ready\n"),
        ),
    }
}

fn text(status: StatusCode, body: Bytes) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(body));
    *response.status_mut() = status;
    response.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

/// The last rendering of the counters in each format and when it was taken.
struct StatsCache {
    render: RenderFn,
    latest: [Option<(Instant, Result<Bytes, String>)>; 2],
}

impl StatsCache {
    fn new(render: RenderFn) -> Self {
        Self {
            render,
            latest: [None, None],
        }
    }

    /// Counters at most [`STATS_MAX_AGE`] old at `now`, read only if the
    /// last snapshot in that format is older.
    fn snapshot(&mut self, format: StatsFormat, now: Instant) -> Result<Bytes, String> {
        let slot = &mut self.latest[format as usize];
        if let Some((taken, snapshot)) = slot {
            if now.duration_since(*taken) < STATS_MAX_AGE {
                return snapshot.clone();
            }
        }
        let snapshot = (self.render)(format).map(Bytes::from);
        *slot = Some((now, snapshot.clone()));
        snapshot
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn ready() -> Readiness {
        let readiness = Readiness::default();
        readiness.beat(std::time::Instant::now());
        readiness
    }

    fn counting_cache() -> (RefCell<StatsCache>, Arc<AtomicUsize>) {
        let reads = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&reads);
        let render: RenderFn = Box::new(move |_| {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(format!("reads {n}\n"))
        });
        (RefCell::new(StatsCache::new(render)), reads)
    }

    #[test]
    fn a_flood_of_scrapes_reads_the_counters_once_per_interval() {
        let (cache, reads) = counting_cache();
        let start = Instant::now();
        for i in 0..1_000u32 {
            let now = start + STATS_MAX_AGE * i / 1_000;
            let response = respond(&Method::GET, "/stats", now, &cache, &ready());
            assert_eq!(response.status(), StatusCode::OK);
        }
        assert_eq!(reads.load(Ordering::SeqCst), 1);
        let later = cache
            .borrow_mut()
            .snapshot(StatsFormat::Text, start + STATS_MAX_AGE);
        assert_eq!(later, Ok(Bytes::from("reads 2\n")));
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[test]
    fn only_get_and_head_are_allowed() {
        let (cache, reads) = counting_cache();
        for method in [Method::POST, Method::PUT, Method::DELETE] {
            let response = respond(&method, "/stats", Instant::now(), &cache, &ready());
            assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
            assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
        }
        assert_eq!(reads.load(Ordering::SeqCst), 0);
        let response = respond(&Method::HEAD, "/ready", Instant::now(), &cache, &ready());
        assert_eq!(response.status(), StatusCode::OK);
    }

    #[test]
    fn ready_fails_while_the_instance_cannot_serve() {
        let (cache, _) = counting_cache();
        let readiness = ready();
        readiness.set_attached(false);
        let response = respond(&Method::GET, "/ready", Instant::now(), &cache, &readiness);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
        // A heartbeat that stopped (the workers are stuck).
        let stale = Readiness::default();
        let later = Instant::now() + crate::readiness::HEARTBEAT_STALE * 2;
        let response = respond(&Method::GET, "/ready", later, &cache, &stale);
        assert_eq!(response.status(), StatusCode::SERVICE_UNAVAILABLE);
    }
}
