//! `flatbridge monitor`: the datapath's counters per second, redrawn in the terminal every
//! interval — the operator's `top` for the fast path. Each frame is built from the node's
//! typed report ([`crate::report`]), so it shows what `status` and the metrics show.
use std::{
    collections::HashMap,
    io::{IsTerminal, Write},
    path::Path,
    time::{Duration, Instant},
};

use crate::report::{NodeReport, VerdictKind};

/// Runs until interrupted, or for `count` frames.
pub fn run(
    bpf_root: &Path,
    ipam_data_dir: &Path,
    interval: Duration,
    count: Option<u64>,
) -> anyhow::Result<()> {
    let mut previous: Option<(NodeReport, Instant)> = None;
    let mut frames = 0;
    let clear = std::io::stdout().is_terminal();
    loop {
        let report = super::status::report(bpf_root, ipam_data_dir, None)?;
        let now = Instant::now();
        if let Some((before, then)) = &previous {
            let frame = render(before, &report, now.duration_since(*then));
            let mut out = std::io::stdout().lock();
            if clear {
                // Home and clear, as top does.
                write!(out, "\x1b[H\x1b[2J")?;
            }
            write!(out, "{frame}")?;
            out.flush()?;
            frames += 1;
            if count.is_some_and(|count| frames >= count) {
                return Ok(());
            }
        }
        previous = Some((report, now));
        std::thread::sleep(interval);
    }
}

/// `12.3k`, `4.56M`: a rate for a narrow column.
fn human(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{:.2}G", v / 1e9),
        v if v >= 1e6 => format!("{:.2}M", v / 1e6),
        v if v >= 1e3 => format!("{:.1}k", v / 1e3),
        v => format!("{v:.0}"),
    }
}

/// One frame: per network, each verdict that moved, with packets and bits per second over
/// `elapsed`, then endpoints and flows.
pub fn render(before: &NodeReport, now: &NodeReport, elapsed: Duration) -> String {
    let seconds = elapsed.as_secs_f64().max(1e-3);
    let mut out = format!(
        "flatbridge monitor — kernel {}, every {:.1} s (Ctrl-C to stop)\n",
        now.kernel.release, seconds
    );
    for network in &now.networks {
        let earlier: HashMap<&str, (u64, u64)> = before
            .networks
            .iter()
            .find(|old| old.network == network.network)
            .map(|old| {
                old.counters
                    .iter()
                    .map(|counter| (counter.verdict.as_str(), (counter.packets, counter.bytes)))
                    .collect()
            })
            .unwrap_or_default();
        out.push_str(&format!(
            "\nnetwork {}: {} pods, {} flow directions tracked, {} offloaded\n",
            network.network,
            network.endpoints.len(),
            network.flows.len(),
            network.flows.iter().filter(|flow| flow.offloaded).count()
        ));
        out.push_str(&format!(
            "  {:<22} {:>8} {:>10} {:>10}\n",
            "VERDICT", "KIND", "PKTS/S", "BITS/S"
        ));
        let mut quiet = true;
        for counter in &network.counters {
            let (packets, bytes) = earlier.get(counter.verdict.as_str()).copied().unwrap_or_default();
            let packet_rate = counter.packets.saturating_sub(packets) as f64 / seconds;
            let bit_rate = counter.bytes.saturating_sub(bytes) as f64 * 8.0 / seconds;
            if packet_rate == 0.0 {
                continue;
            }
            quiet = false;
            let kind = match counter.kind {
                VerdictKind::Forward => "forward",
                VerdictKind::Answer => "answer",
                VerdictKind::Flow => "flow",
                VerdictKind::Drop => "DROP",
                VerdictKind::Conflict => "CONFLICT",
            };
            out.push_str(&format!(
                "  {:<22} {:>8} {:>10} {:>10}\n",
                counter.verdict,
                kind,
                human(packet_rate),
                human(bit_rate)
            ));
        }
        if quiet {
            out.push_str("  (nothing moved)\n");
        }
    }
    if now.networks.is_empty() {
        out.push_str("no flatbridge datapath on this node\n");
    }
    out
}
