use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use http_body_util::Full;
use hyper::body::{Bytes, Incoming};
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use super::registry::{Check, HealthRegistry};
use super::report::Status;
use crate::metrics::{Metrics, OPENMETRICS_CONTENT_TYPE};

/// The health port, bound but not yet served.
///
/// Bound before any connector starts, so a port in use fails the start before a consumer joins
/// its group (a crash-looping pod would otherwise make the whole group rebalance each time).
pub(crate) struct HealthPort {
    listener: TcpListener,
    address: SocketAddr,
}

impl HealthPort {
    pub(crate) async fn bind(port: u16) -> std::io::Result<Self> {
        let listener = TcpListener::bind(("0.0.0.0", port)).await?;
        let address = listener.local_addr()?;
        Ok(Self { listener, address })
    }
}

/// The HTTP server behind `/health`, `/health/live`, `/health/ready`, `/health/started`, and
/// the Prometheus metrics at `/metrics`: one port for an orchestrator's probes and a scraper.
pub(crate) struct HealthServer {
    address: SocketAddr,
    stop: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl HealthServer {
    pub(crate) fn serve(port: HealthPort, registry: HealthRegistry, metrics: Arc<Metrics>) -> Self {
        let HealthPort { listener, address } = port;
        let (stop, mut stopped) = watch::channel(false);
        let task = tokio::spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    _ = stopped.changed() => return,
                    accepted = listener.accept() => match accepted {
                        Ok(accepted) => accepted,
                        Err(error) => {
                            tracing::warn!(%error, "health server could not accept a connection");
                            continue;
                        }
                    },
                };
                let (registry, metrics) = (registry.clone(), metrics.clone());
                let service = hyper::service::service_fn(move |request| {
                    let response = respond(&registry, &metrics, &request);
                    async move { Ok::<_, Infallible>(response) }
                });
                tokio::spawn(async move {
                    if let Err(error) = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(stream), service)
                        .await
                    {
                        tracing::debug!(%error, "health connection ended with an error");
                    }
                });
            }
        });
        tracing::info!(%address, "health endpoints at /health, /health/live, /health/ready, /health/started; metrics at /metrics");
        Self {
            address,
            stop,
            task,
        }
    }

    pub(crate) fn address(&self) -> SocketAddr {
        self.address
    }

    pub(crate) async fn stop(self) {
        let _ = self.stop.send(true);
        let _ = self.task.await;
    }
}

fn respond(
    registry: &HealthRegistry,
    metrics: &Metrics,
    request: &Request<Incoming>,
) -> Response<Full<Bytes>> {
    let checks: &[Check] = match request.uri().path().trim_end_matches('/') {
        "/metrics" => {
            return Response::builder()
                .header("content-type", OPENMETRICS_CONTENT_TYPE)
                .body(Full::new(Bytes::from(metrics.encode())))
                .expect("valid response")
        }
        "/health" => &[Check::Liveness, Check::Readiness, Check::Startup],
        "/health/live" => &[Check::Liveness],
        "/health/ready" => &[Check::Readiness],
        "/health/started" => &[Check::Startup],
        _ => {
            return Response::builder()
                .status(StatusCode::NOT_FOUND)
                .body(Full::new(Bytes::from_static(
                    b"not found; try /health, /health/live, /health/ready, /health/started or /metrics",
                )))
                .expect("static response");
        }
    };
    let report = registry.report(checks);
    let status = if report.status == Status::Up {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    Response::builder()
        .status(status)
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(report.to_json())))
        .expect("valid response")
}
