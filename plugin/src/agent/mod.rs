//! `flatbridge agent`: the long-running node agent (one per node, run by the DaemonSet; the
//! CNI binary itself stays daemonless). It runs in the node's network namespace, finds every
//! flatbridge network there from its pins, and every reconcile period
//! - loads its own build of the programs over the pinned maps where another build runs (a
//!   DaemonSet update), switching every attachment atomically,
//! - attaches again the programs another tool removed from a pod's host veth or the uplink,
//! - sweeps the endpoints whose host veth vanished (under the lock ADD takes),
//! - frees the leases whose host veth has been gone longer than a grace period (a GC that
//!   needs no runtime: a flatbridge veth lives exactly as long as its pod's network
//!   namespace; containerd never calls GC),
//! - follows `nf_conntrack_tcp_be_liberal` into the node's settings (ADD reads it only when a
//!   pod is added),
//! - with a node map (`--nodes`), installs the binary and this node's conflist into the
//!   host's CNI directories whenever either differs from what is there; a node missing from
//!   the map gets nothing, never another node's range.
//!
//! Each step is logged and counted. It serves Prometheus metrics, `/healthz` and `/readyz`
//! on `--metrics-addr` (see [`metrics`], [`http`]) and exits cleanly on SIGTERM or SIGINT.
mod http;
pub mod metrics;
mod reconcile;

pub(crate) use reconcile::leases_without_veth;

use std::{
    collections::BTreeMap,
    net::SocketAddr,
    path::PathBuf,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context;

/// What the agent is told.
#[derive(Clone, Debug)]
pub struct Options {
    /// With a node map: install the binary and this node's conflist (see
    /// [`crate::operator::install`]).
    pub install: Option<crate::operator::install::InstallTarget>,
    pub bpf_root: PathBuf,
    pub ipam_data_dir: PathBuf,
    pub metrics_addr: SocketAddr,
    pub period: Duration,
    /// How long a lease's host veth must be gone before the lease is freed: longer than any
    /// ADD takes between leasing the address and making the veth.
    pub lease_grace: Duration,
}

/// The agent's own counts, read by the metrics.
#[derive(Debug, Default)]
pub struct AgentStats {
    /// Reconcile actions by name (`reattach_pod`, `reattach_uplink`, `free_lease`, ...).
    pub actions: Mutex<BTreeMap<&'static str, u64>>,
    pub errors: AtomicU64,
    pub passes: AtomicU64,
    /// Whether this node is in the node map: `None` without one.
    pub in_node_map: Mutex<Option<bool>>,
    /// The last pass's duration, in microseconds.
    pub last_pass_us: AtomicU64,
    /// The plugin's CNI calls, as taken from each network's datapath.
    pub cni: Mutex<CniStats>,
}

/// The upper bounds of the CNI call latency histogram's buckets, in seconds (one more, +Inf,
/// follows).
pub const CALL_BUCKETS: [f64; 12] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// Per network and verb: calls by result code, and their latency.
#[derive(Debug, Default)]
pub struct CniStats {
    pub calls: BTreeMap<(String, &'static str, u32), u64>,
    pub latency: BTreeMap<(String, &'static str), Latency>,
}

/// A latency histogram: per bucket of [`CALL_BUCKETS`] and one beyond, the calls in it.
#[derive(Clone, Debug, Default)]
pub struct Latency {
    pub buckets: [u64; CALL_BUCKETS.len() + 1],
    pub sum_seconds: f64,
    pub count: u64,
}

impl CniStats {
    pub fn add(&mut self, network: &str, call: &flatbridge_common::CniCall) {
        let verb = flatbridge_common::cni_verb::name(call.verb);
        *self
            .calls
            .entry((network.to_owned(), verb, call.code))
            .or_default() += 1;
        let seconds = f64::from(call.micros) / 1e6;
        let latency = self.latency.entry((network.to_owned(), verb)).or_default();
        let bucket = CALL_BUCKETS
            .iter()
            .position(|bound| seconds <= *bound)
            .unwrap_or(CALL_BUCKETS.len());
        latency.buckets[bucket] += 1;
        latency.sum_seconds += seconds;
        latency.count += 1;
    }
}

impl AgentStats {
    pub fn count(&self, action: &'static str) {
        self.count_n(action, 1);
    }

    pub fn count_n(&self, action: &'static str, n: u64) {
        if let Ok(mut actions) = self.actions.lock() {
            *actions.entry(action).or_default() += n;
        }
    }
}

/// What the HTTP endpoints read.
#[derive(Debug)]
pub struct Shared {
    pub options: Options,
    pub stats: AgentStats,
    /// True once the first reconcile pass finished.
    pub ready: AtomicBool,
    /// When the last pass finished.
    pub last_pass: Mutex<Option<Instant>>,
    pub started: Instant,
}

impl Shared {
    /// Healthy while passes keep finishing: the last one ended within three periods (and
    /// half a minute, for a slow pass on a busy node).
    pub fn healthy(&self) -> bool {
        let allowed = self.options.period * 3 + Duration::from_secs(30);
        match *self
            .last_pass
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
        {
            Some(last) => last.elapsed() <= allowed,
            None => self.started.elapsed() <= allowed,
        }
    }
}

/// Runs the agent until SIGTERM or SIGINT.
pub fn run(options: Options) -> anyhow::Result<()> {
    crate::logging::init_stderr(log::LevelFilter::Info, "agent -".into());
    let shared = Arc::new(Shared {
        options: options.clone(),
        stats: AgentStats::default(),
        ready: AtomicBool::new(false),
        last_pass: Mutex::new(None),
        started: Instant::now(),
    });
    let server = http::Server::start(options.metrics_addr, shared.clone())
        .with_context(|| format!("failed to serve metrics on {}", options.metrics_addr))?;
    log::info!(
        "agent: reconciling every {} ms, metrics on http://{}/metrics",
        options.period.as_millis(),
        server.address()
    );
    let runtime = crate::netlink::runtime().context("failed to start the async runtime")?;
    let outcome = runtime.block_on(async {
        use tokio::signal::unix::{SignalKind, signal};
        let mut terminate = signal(SignalKind::terminate()).context("failed to catch SIGTERM")?;
        let mut interrupt = signal(SignalKind::interrupt()).context("failed to catch SIGINT")?;
        let mut reconciler = reconcile::Reconciler::new(shared.clone());
        loop {
            let started = Instant::now();
            reconciler.pass().await;
            shared.stats.last_pass_us.store(
                u64::try_from(started.elapsed().as_micros()).unwrap_or(u64::MAX),
                Ordering::Relaxed,
            );
            shared.stats.passes.fetch_add(1, Ordering::Relaxed);
            *shared
                .last_pass
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()) = Some(Instant::now());
            shared.ready.store(true, Ordering::Relaxed);
            tokio::select! {
                _ = terminate.recv() => break,
                _ = interrupt.recv() => break,
                () = tokio::time::sleep(options.period) => {}
            }
        }
        anyhow::Ok(())
    });
    log::info!("agent: stopping");
    server.stop();
    outcome
}
