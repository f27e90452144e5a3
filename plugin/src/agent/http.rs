//! The agent's HTTP endpoints, on a thread of their own: `/metrics` (Prometheus text
//! format, built at each scrape), `/healthz` (reconcile passes keep finishing) and `/readyz`
//! (the first pass has finished).
use std::{
    net::SocketAddr,
    sync::{Arc, atomic::Ordering},
    thread::JoinHandle,
};

use anyhow::Context;

use super::{Shared, metrics};

pub struct Server {
    server: Arc<tiny_http::Server>,
    thread: Option<JoinHandle<()>>,
    address: SocketAddr,
}

impl Server {
    pub fn start(address: SocketAddr, shared: Arc<Shared>) -> anyhow::Result<Self> {
        let server = Arc::new(tiny_http::Server::http(address).map_err(|error| anyhow::anyhow!("{error}"))?);
        let address = server
            .server_addr()
            .to_ip()
            .context("the metrics server has no IP address")?;
        let serving = server.clone();
        let thread = std::thread::Builder::new()
            .name("metrics".into())
            .spawn(move || {
                for request in serving.incoming_requests() {
                    respond(request, &shared);
                }
            })
            .context("failed to start the metrics thread")?;
        Ok(Self {
            server,
            thread: Some(thread),
            address,
        })
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Stops serving and waits for the thread.
    pub fn stop(mut self) {
        self.server.unblock();
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

/// Whether the scraper asked for OpenMetrics (Prometheus does, in its Accept header).
fn wants_openmetrics(request: &tiny_http::Request) -> bool {
    request.headers().iter().any(|header| {
        header.field.equiv("Accept") && header.value.as_str().contains("application/openmetrics-text")
    })
}

fn respond(request: tiny_http::Request, shared: &Shared) {
    let text = |status: u16, body: String, content_type: &str| {
        let header = tiny_http::Header::from_bytes("Content-Type", content_type).expect("a valid header");
        tiny_http::Response::from_string(body)
            .with_status_code(status)
            .with_header(header)
    };
    let plain = "text/plain; charset=utf-8";
    let path = request.url().split('?').next().unwrap_or_default().to_owned();
    let response = match (request.method(), path.as_str()) {
        (tiny_http::Method::Get, "/metrics") => match metrics::scrape(shared) {
            Ok(body) if wants_openmetrics(&request) => text(200, body, metrics::OPENMETRICS),
            Ok(body) => text(200, metrics::classic(&body), metrics::CLASSIC),
            Err(error) => text(500, format!("{error:#}\n"), plain),
        },
        (tiny_http::Method::Get, "/healthz") if shared.healthy() => text(200, "ok\n".into(), plain),
        (tiny_http::Method::Get, "/healthz") => {
            text(503, "reconcile passes stopped finishing\n".into(), plain)
        }
        (tiny_http::Method::Get, "/readyz") if shared.ready.load(Ordering::Relaxed) => {
            text(200, "ok\n".into(), plain)
        }
        (tiny_http::Method::Get, "/readyz") => {
            text(503, "the first reconcile pass has not finished\n".into(), plain)
        }
        _ => text(404, "try /metrics, /healthz or /readyz\n".into(), plain),
    };
    if let Err(error) = request.respond(response) {
        log::debug!("metrics: responding failed: {error}");
    }
}
