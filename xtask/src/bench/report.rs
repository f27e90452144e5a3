//! The bench's output: a table for the terminal, the raw samples as JSON in
//! bench/results/<date>.json (with the commit measured and whether the tree was clean), and
//! an SVG chart for the README (bench/results/latest.svg); `--quick` writes them under
//! target/bench instead, so that a smoke check never replaces published figures.
use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
    process::Command,
};

use serde_json::{Value, json};

use super::{Plan, Samples, cni::CniCost};

/// A chart panel: its title and the figure it plots per path.
type Panel = (&'static str, fn(&Samples) -> f64);

pub struct Report {
    /// (key, label) per path, in order.
    pub labels: Vec<(String, String)>,
    pub samples: Vec<Samples>,
    pub cni: CniCost,
    pub plan: Plan,
    pub elapsed_s: f64,
}

fn sorted(values: &[f64]) -> Vec<f64> {
    let mut values = values.to_vec();
    values.sort_by(f64::total_cmp);
    values
}

/// The value below which `fraction` of the samples lie (nearest rank).
pub fn percentile(values: &[f64], fraction: f64) -> f64 {
    let values = sorted(values);
    if values.is_empty() {
        return f64::NAN;
    }
    let rank = ((fraction * values.len() as f64).ceil() as usize).clamp(1, values.len());
    values[rank - 1]
}

/// The p50 of the first ten and of the last ten samples.
fn first_and_last_ten(samples: &[f64]) -> (f64, f64) {
    (
        median(&samples[..samples.len().min(10)]),
        median(&samples[samples.len().saturating_sub(10)..]),
    )
}

pub fn median(values: &[f64]) -> f64 {
    let values = sorted(values);
    match values.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => values[n / 2],
        n => (values[n / 2 - 1] + values[n / 2]) / 2.0,
    }
}

/// The median of per-round ratios a/b and their range.
fn ratio(a: &[f64], b: &[f64]) -> (f64, f64, f64) {
    let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
    let values = sorted(&ratios);
    (
        median(&ratios),
        values.first().copied().unwrap_or(f64::NAN),
        values.last().copied().unwrap_or(f64::NAN),
    )
}

fn format_ratio((median, low, high): (f64, f64, f64)) -> String {
    if (high - low).abs() < 0.005 {
        format!("{median:.2}")
    } else {
        format!("{median:.2} [{low:.2}-{high:.2}]")
    }
}

fn shell(argv: &[&str]) -> String {
    Command::new(argv[0])
        .args(&argv[1..])
        .output()
        .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
        .unwrap_or_default()
}

/// The commit measured and whether the tree was clean: only a clean tree's figures are
/// the commit's.
pub fn source() -> Value {
    let git = |args: &[&str]| {
        Command::new("git")
            .arg("-C")
            .arg(env!("CARGO_MANIFEST_DIR"))
            .args(args)
            .output()
            .ok()
            .filter(|output| output.status.success())
            .map(|output| String::from_utf8_lossy(&output.stdout).trim().to_owned())
    };
    let commit = git(&["rev-parse", "HEAD"]);
    let changes = git(&["status", "--porcelain", "--untracked-files=no"]);
    json!({
        "commit": commit,
        "clean": changes.as_deref().map(str::is_empty),
    })
}

fn millis(calls: &[super::cni::Call]) -> Vec<f64> {
    calls.iter().map(|call| call.millis).collect()
}

fn max_rss_mib(calls: &[super::cni::Call]) -> f64 {
    calls.iter().map(|call| call.max_rss_kib).max().unwrap_or(0) as f64 / 1024.0
}

impl Report {
    fn index(&self, key: &str) -> Option<usize> {
        self.labels.iter().position(|(k, _)| k == key)
    }

    fn samples_of(&self, key: &str) -> Option<&Samples> {
        self.index(key).map(|i| &self.samples[i])
    }

    pub fn table(&self) -> String {
        let mut out = String::new();
        // IPv6 paths against the IPv6 baselines (their RTT is the bench's own ping-pong).
        let baselines = |key: &str| {
            let suffix = if key.ends_with("_v6") { "_v6" } else { "" };
            (
                self.samples_of(&format!("veth{suffix}"))
                    .cloned()
                    .unwrap_or_default(),
                self.samples_of(&format!("bridge_nf{suffix}"))
                    .cloned()
                    .unwrap_or_default(),
            )
        };
        let _ = writeln!(
            out,
            "\nDATAPATH — {} round(s) of {} s, both ends of a sample on CPU 1, TSO/GSO/GRO off; figures are medians, \
             ratios the median of per-round ratios [range]",
            self.plan.rounds, self.plan.seconds
        );
        let _ = writeln!(
            out,
            "{:<44} {:>9} {:>18} {:>18} | {:>9} {:>18} {:>18} | {:>8} {:>18} | {:>9} | {:>9}",
            "path",
            "RTT µs",
            "x veth",
            "x bridge+nf",
            "TCP Gb/s",
            "x veth",
            "x bridge+nf",
            "UDP Mpps",
            "x veth",
            "classic",
            "offloaded"
        );
        for (i, (key, label)) in self.labels.iter().enumerate() {
            let s = &self.samples[i];
            let (veth, bridge_nf) = baselines(key);
            let total = s.netfilter_bytes + s.fast_path_bytes;
            let offloaded = if total == 0 || key.starts_with("veth") {
                "-".to_owned()
            } else {
                format!("{:.1} %", 100.0 * s.fast_path_bytes as f64 / total as f64)
            };
            let _ = writeln!(
                out,
                "{:<44} {:>9.2} {:>18} {:>18} | {:>9.2} {:>18} {:>18} | {:>8.3} {:>18} | {:>9.2} | {:>9}",
                label,
                median(&s.rtt_us),
                format_ratio(ratio(&s.rtt_us, &veth.rtt_us)),
                format_ratio(ratio(&s.rtt_us, &bridge_nf.rtt_us)),
                median(&s.tcp_gbits),
                format_ratio(ratio(&s.tcp_gbits, &veth.tcp_gbits)),
                format_ratio(ratio(&s.tcp_gbits, &bridge_nf.tcp_gbits)),
                median(&s.udp_mpps),
                format_ratio(ratio(&s.udp_mpps, &veth.udp_mpps)),
                median(&s.classic_gbits),
                offloaded
            );
        }
        let cni = &self.cni;
        let _ = writeln!(
            out,
            "\nCNI COST — {} ADD/DEL pairs each, timed from spawn to exit in the node's namespace",
            cni.flatbridge_add.len()
        );
        let _ = writeln!(
            out,
            "{:<44} {:>9} {:>9} {:>9} {:>9} {:>12}",
            "", "ADD p50", "ADD p95", "DEL p50", "DEL p95", "peak RSS"
        );
        let mut rows = vec![(
            "flatbridge (fast path on)",
            &cni.flatbridge_add,
            &cni.flatbridge_del,
        )];
        if !cni.reference_add.is_empty() {
            rows.push((
                "reference bridge + host-local",
                &cni.reference_add,
                &cni.reference_del,
            ));
        }
        rows.push((
            "flatbridge on a wire (uplink, probes on)",
            &cni.wire_flatbridge_add,
            &cni.wire_flatbridge_del,
        ));
        if !cni.wire_reference_add.is_empty() {
            rows.push((
                "reference on a wire (uplink, no probes)",
                &cni.wire_reference_add,
                &cni.wire_reference_del,
            ));
        }
        for (name, add_calls, del_calls) in rows {
            let (add, del_ms) = (millis(add_calls), millis(del_calls));
            let _ = writeln!(
                out,
                "{:<44} {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>8.2}ms {:>9.1} MiB",
                name,
                median(&add),
                percentile(&add, 0.95),
                median(&del_ms),
                percentile(&del_ms, 0.95),
                max_rss_mib(add_calls).max(max_rss_mib(del_calls))
            );
        }
        let _ = writeln!(
            out,
            "{:<44} {:>9} {:>9} {:>8.2}ms {:>8.2}ms",
            "kernel veth deletion (`ip link del`)",
            "",
            "",
            median(&cni.kernel_del_ms),
            percentile(&cni.kernel_del_ms, 0.95)
        );
        for (who, samples) in [
            ("flatbridge", &cni.scaling_add_ms),
            ("reference", &cni.reference_scaling_add_ms),
        ] {
            if samples.is_empty() {
                continue;
            }
            let (first, last) = first_and_last_ten(samples);
            let _ = writeln!(
                out,
                "ADD while a node fills up, {who:<10}: p50 of pods 1-10 {first:.2} ms, of pods {}-{} {last:.2} ms ({:.2}x)",
                samples.len().saturating_sub(9),
                samples.len(),
                last / first
            );
        }
        for agent in &cni.agent {
            let _ = writeln!(
                out,
                "flatbridge agent with {:>3} pods: RSS {:.1} MiB, CPU {:.2} % of one core over {:.0} s (reconcile every {:.0} s)",
                agent.pods,
                agent.rss_kib as f64 / 1024.0,
                agent.cpu_percent,
                agent.seconds,
                agent.period_s
            );
        }
        out.push_str(&self.targets());
        let _ = writeln!(out, "(bench took {:.0} s)", self.elapsed_s);
        out
    }

    /// The targets of the bench issue, each with its figure and whether it is met.
    fn targets(&self) -> String {
        let mut out = String::from("\nTARGETS\n");
        let mut info = String::new();
        let mut line = |what: &str, value: f64, limit: f64, lower_is_better: bool| {
            let met = if lower_is_better {
                value <= limit
            } else {
                value >= limit
            };
            let _ = writeln!(
                out,
                "  [{}] {what}: {value:.2} (target {} {limit:.2})",
                if met { "met" } else { "MISSED" },
                if lower_is_better { "<=" } else { ">=" }
            );
        };
        if let (Some(fast), Some(veth), Some(bridge_nf)) = (
            self.samples_of("fastpath"),
            self.samples_of("veth"),
            self.samples_of("bridge_nf"),
        ) {
            line(
                "fast path RTT p50 / bare veth",
                ratio(&fast.rtt_us, &veth.rtt_us).0,
                1.05,
                true,
            );
            line(
                "fast path RTT p50 / bridge + netfilter",
                ratio(&fast.rtt_us, &bridge_nf.rtt_us).0,
                0.75,
                true,
            );
            line(
                "fast path no-GSO throughput / bare veth",
                ratio(&fast.tcp_gbits, &veth.tcp_gbits).0,
                0.90,
                false,
            );
            line(
                "fast path no-GSO throughput / bridge + netfilter",
                ratio(&fast.tcp_gbits, &bridge_nf.tcp_gbits).0,
                2.0,
                false,
            );
            if let Some(always) = self.samples_of("fastpath_always") {
                line(
                    "checked fast path RTT p50 / \"always\" mode (cost of the check)",
                    ratio(&fast.rtt_us, &always.rtt_us).0,
                    1.05,
                    true,
                );
            }
        }
        if let (Some(fast), Some(veth), Some(bridge_nf)) = (
            self.samples_of("fastpath_v6"),
            self.samples_of("veth_v6"),
            self.samples_of("bridge_nf_v6"),
        ) {
            let _ = writeln!(
                info,
                "  [info] IPv6 fast path / bare veth: RTT {}, no-GSO throughput {}; / bridge + netfilter: RTT {}, \
                 no-GSO throughput {} (RTT by the bench's own TCP ping-pong)",
                format_ratio(ratio(&fast.rtt_us, &veth.rtt_us)),
                format_ratio(ratio(&fast.tcp_gbits, &veth.tcp_gbits)),
                format_ratio(ratio(&fast.rtt_us, &bridge_nf.rtt_us)),
                format_ratio(ratio(&fast.tcp_gbits, &bridge_nf.tcp_gbits)),
            );
        }
        if let (Some(cross), Some(cross_nf)) = (
            self.samples_of("cross_fastpath"),
            self.samples_of("cross_bridge_nf"),
        ) {
            let _ = writeln!(
                info,
                "  [info] across two nodes, fast path / bridge + netfilter: RTT {}, no-GSO throughput {}",
                format_ratio(ratio(&cross.rtt_us, &cross_nf.rtt_us)),
                format_ratio(ratio(&cross.tcp_gbits, &cross_nf.tcp_gbits)),
            );
            if let Some(reference) = self.samples_of("cross_reference") {
                let _ = writeln!(
                    info,
                    "  [info] across two nodes, fast path / reference plugins: RTT {}, no-GSO throughput {}",
                    format_ratio(ratio(&cross.rtt_us, &reference.rtt_us)),
                    format_ratio(ratio(&cross.tcp_gbits, &reference.tcp_gbits)),
                );
            }
        }
        let cni = &self.cni;
        if !cni.reference_add.is_empty() {
            line(
                "ADD p50 / reference ADD p50",
                median(&millis(&cni.flatbridge_add)) / median(&millis(&cni.reference_add)),
                0.5,
                true,
            );
        }
        if !cni.wire_reference_add.is_empty() {
            line(
                "ADD p50 on a wire / reference ADD p50 on a wire",
                median(&millis(&cni.wire_flatbridge_add)) / median(&millis(&cni.wire_reference_add)),
                0.5,
                true,
            );
        }
        line(
            "DEL p50 minus kernel veth deletion p50 (ms)",
            median(&millis(&cni.flatbridge_del)) - median(&cni.kernel_del_ms),
            2.0,
            true,
        );
        let (first, last) = first_and_last_ten(&cni.scaling_add_ms);
        line(
            "ADD p50 at the last 10 pods / at the first 10 (flat)",
            last / first,
            1.2,
            true,
        );
        if !cni.reference_scaling_add_ms.is_empty() {
            let (first, last) = first_and_last_ten(&cni.reference_scaling_add_ms);
            let _ = writeln!(
                out,
                "  [info] the same for the reference plugins, filling a node in step: {:.2}",
                last / first
            );
        }
        out.push_str(&info);
        out
    }

    fn json(&self, date: &str) -> Value {
        let calls = |calls: &[super::cni::Call]| {
            calls
                .iter()
                .map(|call| json!({"ms": call.millis, "max_rss_kib": call.max_rss_kib}))
                .collect::<Vec<_>>()
        };
        json!({
            "date": date,
            "machine": {
                "kernel": shell(&["uname", "-r"]),
                "cpu": shell(&["sh", "-c", "grep -m1 'model name' /proc/cpuinfo | cut -d: -f2"]),
                "cpus": shell(&["nproc"]),
            },
            "source": source(),
            "versions": {
                "flatbridge": shell(&["git", "-C", env!("CARGO_MANIFEST_DIR"), "describe", "--always", "--dirty"]),
                "iperf3": shell(&["sh", "-c", "iperf3 --version | head -1"]),
                "sockperf": shell(&["sh", "-c", "sockperf --version 2>&1 | head -1"]),
            },
            "plan": {"rounds": self.plan.rounds, "seconds": self.plan.seconds, "cni_calls": self.plan.cni_calls, "scale_to": self.plan.scale_to},
            "paths": self.labels.iter().zip(&self.samples).map(|((key, label), s)| json!({
                "key": key, "label": label, "rtt_us": s.rtt_us, "tcp_gbits_no_gso_same_cpu": s.tcp_gbits,
                "udp_mpps_64b_same_cpu": s.udp_mpps, "tcp_gbits_classic": s.classic_gbits,
                "netfilter_bytes": s.netfilter_bytes, "fast_path_bytes": s.fast_path_bytes,
            })).collect::<Vec<_>>(),
            "cni": {
                "flatbridge_add": calls(&self.cni.flatbridge_add), "flatbridge_del": calls(&self.cni.flatbridge_del),
                "reference_add": calls(&self.cni.reference_add), "reference_del": calls(&self.cni.reference_del),
                "wire_flatbridge_add": calls(&self.cni.wire_flatbridge_add), "wire_flatbridge_del": calls(&self.cni.wire_flatbridge_del),
                "wire_reference_add": calls(&self.cni.wire_reference_add), "wire_reference_del": calls(&self.cni.wire_reference_del),
                "kernel_veth_delete_ms": self.cni.kernel_del_ms, "scaling_add_ms": self.cni.scaling_add_ms,
                "reference_scaling_add_ms": self.cni.reference_scaling_add_ms,
                "agent": self.cni.agent.iter().map(|agent| json!({
                    "pods": agent.pods, "period_s": agent.period_s, "rss_kib": agent.rss_kib,
                    "cpu_percent": agent.cpu_percent, "seconds": agent.seconds,
                })).collect::<Vec<_>>(),
            },
            "table": self.table(),
        })
    }

    /// Two horizontal bar charts: RTT p50 and no-GSO throughput per path.
    fn svg(&self, date: &str) -> String {
        let rows = self.labels.len();
        let (width, row, top) = (860.0, 22.0, 58.0);
        let panel = top + rows as f64 * row + 30.0;
        let height = panel * 2.0 + 20.0;
        let mut svg = format!(
            "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" font-family=\"sans-serif\" font-size=\"12\">\n<rect width=\"100%\" height=\"100%\" fill=\"white\"/>\n"
        );
        let panels: [Panel; 2] = [
            (
                "TCP round trip, 64-byte ping-pong, p50 (µs; lower is better)",
                |s| median(&s.rtt_us),
            ),
            (
                "TCP throughput, TSO/GSO/GRO off, both ends on one CPU (Gbit/s; higher is better)",
                |s| median(&s.tcp_gbits),
            ),
        ];
        for (p, (title, value)) in panels.iter().enumerate() {
            let y0 = p as f64 * panel;
            let _ = writeln!(
                svg,
                "<text x=\"10\" y=\"{}\" font-size=\"14\" font-weight=\"bold\">{title}</text>",
                y0 + 24.0
            );
            let _ = writeln!(
                svg,
                "<text x=\"10\" y=\"{}\" fill=\"#555\">flatbridge bench, {date}, medians of {} rounds</text>",
                y0 + 42.0,
                self.plan.rounds
            );
            let max = self
                .samples
                .iter()
                .map(value)
                .fold(0.0_f64, f64::max)
                .max(f64::MIN_POSITIVE);
            for (i, ((key, label), s)) in self.labels.iter().zip(&self.samples).enumerate() {
                let y = y0 + top + i as f64 * row;
                let bar = 420.0 * value(s) / max;
                let color =
                    if key.starts_with("fastpath") || key == "uplink_fastpath" || key == "cross_fastpath" {
                        "#2b8a3e"
                    } else if key == "veth" {
                        "#868e96"
                    } else {
                        "#1c7ed6"
                    };
                let label = label
                    .replace('&', "&amp;")
                    .replace('<', "&lt;")
                    .replace('"', "&quot;");
                let _ = writeln!(
                    svg,
                    "<text x=\"330\" y=\"{}\" text-anchor=\"end\">{label}</text>",
                    y + 14.0
                );
                let _ = writeln!(
                    svg,
                    "<rect x=\"340\" y=\"{}\" width=\"{bar:.1}\" height=\"{}\" fill=\"{color}\"/>",
                    y + 3.0,
                    row - 6.0
                );
                let _ = writeln!(
                    svg,
                    "<text x=\"{:.1}\" y=\"{}\">{:.2}</text>",
                    345.0 + bar,
                    y + 14.0,
                    value(s)
                );
            }
        }
        svg.push_str("</svg>\n");
        svg
    }

    /// Writes <date>.json and latest.svg into `dir`; returns their paths.
    pub fn write(&self, dir: &Path) -> anyhow::Result<(PathBuf, PathBuf)> {
        let date = shell(&["date", "-u", "+%Y-%m-%d"]);

        let json_path = dir.join(format!("{date}.json"));
        std::fs::write(&json_path, serde_json::to_string_pretty(&self.json(&date))?)?;
        let svg_path = dir.join("latest.svg");
        std::fs::write(&svg_path, self.svg(&date))?;
        Ok((json_path, svg_path))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn medians_of_odd_even_and_no_samples() {
        assert_eq!(median(&[3.0, 1.0, 2.0]), 2.0);
        assert_eq!(median(&[4.0, 1.0, 3.0, 2.0]), 2.5);
        assert!(median(&[]).is_nan());
    }

    #[test]
    fn percentiles_are_nearest_rank() {
        let values: Vec<f64> = (1..=20).rev().map(f64::from).collect();
        assert_eq!(percentile(&values, 0.5), 10.0);
        assert_eq!(percentile(&values, 0.95), 19.0);
        assert_eq!(percentile(&values, 1.0), 20.0);
        assert_eq!(
            percentile(&values, 0.0),
            1.0,
            "the lowest rank is the first value"
        );
        assert_eq!(percentile(&[7.0], 0.95), 7.0);
        assert!(percentile(&[], 0.5).is_nan());
    }

    #[test]
    fn ratios_are_per_round_with_their_range() {
        // Rounds pair up: the ratio of the medians (3 / 2) would be 1.5, not this.
        let (median, low, high) = ratio(&[1.0, 4.0, 3.0], &[1.0, 2.0, 3.0]);
        assert_eq!((median, low, high), (1.0, 1.0, 2.0));
        assert_eq!(format_ratio((1.0, 1.0, 1.0)), "1.00");
        assert_eq!(first_and_last_ten(&[1.0, 2.0, 3.0]), (2.0, 2.0));
    }
}
