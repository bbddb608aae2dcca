//! The admin endpoint on loopback, as Envoy's admin port: `/stats` for the
//! kernel counters and `/ready` for readiness checks.
use std::{convert::Infallible, sync::Arc};

use bytes::Bytes;
use http_body_util::Full;
use hyper::{Response, StatusCode, service::service_fn};
use hyper_util::rt::TokioIo;
use tokio::{net::TcpListener, sync::watch};

/// Renders the current stats as text; called for every `/stats` request.
pub type StatsFn = Arc<dyn Fn() -> Result<String, String> + Send + Sync>;

/// Serves admin requests until `shutdown` flips.
pub async fn serve(listener: TcpListener, stats: StatsFn, mut shutdown: watch::Receiver<bool>) {
    loop {
        let stream = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok((stream, _)) => stream,
                Err(err) => {
                    log::warn!("admin accept failed: {err}");
                    continue;
                }
            },
            _ = shutdown.changed() => return,
        };
        let stats = Arc::clone(&stats);
        tokio::spawn(async move {
            let service = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                let stats = Arc::clone(&stats);
                async move { Ok::<_, Infallible>(respond(req.uri().path(), &stats)) }
            });
            let conn = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service);
            if let Err(err) = conn.await {
                log::debug!("admin connection: {err}");
            }
        });
    }
}

fn respond(path: &str, stats: &StatsFn) -> Response<Full<Bytes>> {
    let (status, body) = match path {
        "/ready" => (StatusCode::OK, "LIVE\n".to_string()),
        "/stats" => match stats() {
            Ok(text) => (StatusCode::OK, text),
            Err(err) => (StatusCode::INTERNAL_SERVER_ERROR, format!("{err}\n")),
        },
        _ => (
            StatusCode::NOT_FOUND,
            "endpoints: /stats /ready\n".to_string(),
        ),
    };
    let mut response = Response::new(Full::new(Bytes::from(body)));
    *response.status_mut() = status;
    response
}
