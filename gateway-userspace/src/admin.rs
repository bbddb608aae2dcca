//! The admin endpoint on loopback, as Envoy's admin port: `/stats` for the
//! counters and `/ready` for readiness checks.
//!
//! It cannot hurt the data path: it runs on a thread of its own (a
//! single-threaded runtime at a lower scheduling priority, as Envoy keeps
//! admin on its main thread, away from the workers), owns the counter maps
//! outright so no lock is ever shared with the proxy, reads them at most once
//! per [`STATS_MIN_INTERVAL`] however many scrapes arrive, and holds its
//! connections to the same deadlines and cap as the proxy's.
use std::{
    cell::RefCell, convert::Infallible, io, net::SocketAddr, rc::Rc, sync::Arc, thread::JoinHandle,
    time::Duration,
};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Method, Response, StatusCode, header, service::service_fn};
use hyper_util::rt::{TokioIo, TokioTimer};
use tokio::{net::TcpListener, sync::watch, task::LocalSet, time::Instant};

use crate::connection::{Acceptor, Activity, Admitted, Gate, with_deadlines};

/// Renders the current counters as text. Called on the admin thread only.
pub type RenderFn = Box<dyn FnMut() -> Result<String, String> + Send>;

/// Shortest time between two reads of the counters: a scrape waits at most
/// this long for a snapshot taken after it arrived.
pub const STATS_MIN_INTERVAL: Duration = Duration::from_millis(250);
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
                    Ok(listener) => serve(listener, render, gate, shutdown).await,
                    Err(err) => log::error!("admin endpoint not started: {err}"),
                }
            });
        })
}

#[allow(unsafe_code)]
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
            (stream, _) = acceptor.accept(&listener, &gate.counters) => {
                if let Some((stream, admitted)) = gate.admit(stream) {
                    tokio::task::spawn_local(serve_connection(
                        stream,
                        Rc::clone(&cache),
                        Arc::clone(&gate),
                        admitted,
                    ));
                }
            }
            _ = shutdown.changed() => return,
        }
    }
}

async fn serve_connection(
    stream: tokio::net::TcpStream,
    cache: Rc<RefCell<StatsCache>>,
    gate: Arc<Gate>,
    _admitted: Admitted,
) {
    let activity = Arc::new(Activity::new());
    let service = service_fn({
        let activity = Arc::clone(&activity);
        move |req: hyper::Request<hyper::body::Incoming>| {
            let request = activity.begin();
            let cache = Rc::clone(&cache);
            let arrived = Instant::now();
            async move {
                let response = respond(req.method(), req.uri().path(), arrived, &cache).await;
                drop(request);
                Ok::<_, Infallible>(response)
            }
        }
    });
    let connection = hyper::server::conn::http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(gate.limits.request_head_timeout)
        .max_buf_size(MAX_REQUEST_HEAD)
        .serve_connection(TokioIo::new(stream), service);
    tokio::pin!(connection);
    if let Ok(Err(err)) =
        with_deadlines(connection.as_mut(), &activity, &gate.limits, &gate.counters).await
    {
        log::debug!("admin connection: {err}");
    }
}

async fn respond(
    method: &Method,
    path: &str,
    arrived: Instant,
    cache: &RefCell<StatsCache>,
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
        "/ready" => text(StatusCode::OK, Bytes::from_static(b"LIVE\n")),
        "/stats" => match StatsCache::snapshot(cache, arrived).await {
            Ok(body) => text(StatusCode::OK, body),
            Err(err) => text(
                StatusCode::INTERNAL_SERVER_ERROR,
                Bytes::from(format!("{err}\n")),
            ),
        },
        _ => text(
            StatusCode::NOT_FOUND,
            Bytes::from_static(b"endpoints: /stats /ready\n"),
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

/// The last rendering of the counters and when it was taken.
struct StatsCache {
    render: RenderFn,
    latest: Option<(Instant, Result<Bytes, String>)>,
}

impl StatsCache {
    fn new(render: RenderFn) -> Self {
        StatsCache {
            render,
            latest: None,
        }
    }

    /// A snapshot taken after `arrived`, so a scrape never sees counters
    /// older than itself; concurrent scrapes share one read, and reads are
    /// at least [`STATS_MIN_INTERVAL`] apart.
    async fn snapshot(cache: &RefCell<StatsCache>, arrived: Instant) -> Result<Bytes, String> {
        loop {
            // No borrow lives across an await: the runtime is single-threaded,
            // so between two awaits this task has the cache to itself.
            let next_read = match &cache.borrow().latest {
                Some((taken, snapshot)) if *taken >= arrived => return snapshot.clone(),
                Some((taken, _)) => *taken + STATS_MIN_INTERVAL,
                None => Instant::now(),
            };
            if Instant::now() < next_read {
                tokio::time::sleep_until(next_read).await;
                continue;
            }
            let mut cache = cache.borrow_mut();
            let taken = Instant::now();
            let snapshot = (cache.render)().map(Bytes::from);
            cache.latest = Some((taken, snapshot.clone()));
            return snapshot;
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;

    fn counting_cache() -> (Rc<RefCell<StatsCache>>, Arc<AtomicUsize>) {
        let reads = Arc::new(AtomicUsize::new(0));
        let counter = Arc::clone(&reads);
        let render: RenderFn = Box::new(move || {
            let n = counter.fetch_add(1, Ordering::SeqCst) + 1;
            Ok(format!("reads {n}\n"))
        });
        (Rc::new(RefCell::new(StatsCache::new(render))), reads)
    }

    #[tokio::test(start_paused = true)]
    async fn a_flood_of_scrapes_reads_the_counters_once_per_interval() {
        let (cache, reads) = counting_cache();
        LocalSet::new()
            .run_until(async move {
                let first = StatsCache::snapshot(&cache, Instant::now()).await;
                assert_eq!(first, Ok(Bytes::from("reads 1\n")));
                tokio::time::advance(Duration::from_millis(10)).await;
                let mut scrapes = Vec::new();
                for _ in 0..100 {
                    let cache = Rc::clone(&cache);
                    let arrived = Instant::now();
                    scrapes.push(tokio::task::spawn_local(async move {
                        StatsCache::snapshot(&cache, arrived).await
                    }));
                }
                for scrape in scrapes {
                    assert_eq!(scrape.await.unwrap(), Ok(Bytes::from("reads 2\n")));
                }
            })
            .await;
        assert_eq!(reads.load(Ordering::SeqCst), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn a_scrape_never_gets_counters_older_than_itself() {
        let (cache, _reads) = counting_cache();
        let _ = StatsCache::snapshot(&cache, Instant::now()).await;
        tokio::time::advance(Duration::from_secs(5)).await;
        let later = StatsCache::snapshot(&cache, Instant::now()).await;
        assert_eq!(later, Ok(Bytes::from("reads 2\n")));
    }

    #[tokio::test]
    async fn only_get_and_head_are_allowed() {
        let (cache, _reads) = counting_cache();
        let response = respond(&Method::POST, "/stats", Instant::now(), &cache).await;
        assert_eq!(response.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(response.headers()[header::ALLOW], "GET, HEAD");
        let response = respond(&Method::HEAD, "/ready", Instant::now(), &cache).await;
        assert_eq!(response.status(), StatusCode::OK);
    }
}
