//! The agent's Prometheus metrics, built at each scrape from the node's typed report
//! ([`crate::report`], the same value `flatbridge status --json` prints) and the agent's own
//! counts, encoded by `prometheus-client` in the text exposition format.
use std::sync::atomic::Ordering;

use anyhow::Context;
use flatbridge_common::MAX_FLOWS;
use prometheus_client::{
    collector::Collector,
    encoding::{DescriptorEncoder, EncodeMetric},
    metrics::{MetricType, counter::ConstCounter, gauge::ConstGauge},
    registry::Registry,
};

use super::Shared;
use crate::{
    netlink::Netlink,
    report::{self, NodeReport, VerdictKind},
};

/// The two formats `/metrics` answers in: OpenMetrics when the scraper asks for it (its
/// `Accept` header), Prometheus's classic text format (version 0.0.4) otherwise.
pub const OPENMETRICS: &str = "application/openmetrics-text; version=1.0.0; charset=utf-8";
pub const CLASSIC: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The OpenMetrics text `prometheus-client` writes, in the classic text format: a counter's
/// HELP and TYPE name its samples' `_total` name there, and there is no `# EOF`. Gauges and
/// samples are the same in both.
pub fn classic(openmetrics: &str) -> String {
    let counters: std::collections::HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE ")?.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(renamed.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

/// The text of one scrape, in OpenMetrics.
pub fn scrape(shared: &Shared) -> anyhow::Result<String> {
    let options = &shared.options;
    let report = crate::netlink::runtime()
        .context("failed to start the async runtime")?
        .block_on(async {
            let netlink = Netlink::open()?;
            anyhow::Ok(report::build(&netlink, &options.bpf_root, &options.ipam_data_dir, None).await?)
        })?;
    encode(&report, Some(shared))
}

/// `report` (and the agent's counts, when there is an agent) as Prometheus text.
pub fn encode(report: &NodeReport, agent: Option<&Shared>) -> anyhow::Result<String> {
    let mut registry = Registry::default();
    registry.register_collector(Box::new(Snapshot {
        report: report.clone(),
        agent: agent.map(AgentSnapshot::of),
    }));
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &registry)
        .context("failed to encode the metrics")?;
    Ok(text)
}

#[derive(Debug)]
struct AgentSnapshot {
    actions: Vec<(&'static str, u64)>,
    errors: u64,
    passes: u64,
    last_pass_seconds: f64,
    in_node_map: Option<bool>,
    calls: Vec<((String, &'static str, u32), u64)>,
    latency: Vec<((String, &'static str), super::Latency)>,
}

/// A latency histogram as prometheus-client encodes one.
#[derive(Debug)]
struct HistogramValue(super::Latency);

impl EncodeMetric for HistogramValue {
    fn encode(&self, mut encoder: prometheus_client::encoding::MetricEncoder) -> Result<(), std::fmt::Error> {
        let buckets: Vec<(f64, u64)> = super::CALL_BUCKETS
            .iter()
            .copied()
            .chain([f64::INFINITY])
            .zip(self.0.buckets)
            .collect();
        encoder.encode_histogram::<prometheus_client::encoding::NoLabelSet>(
            self.0.sum_seconds,
            self.0.count,
            &buckets,
            None,
        )
    }

    fn metric_type(&self) -> MetricType {
        MetricType::Histogram
    }
}

impl AgentSnapshot {
    fn of(shared: &Shared) -> Self {
        let stats = &shared.stats;
        Self {
            actions: stats
                .actions
                .lock()
                .map(|actions| actions.iter().map(|(action, count)| (*action, *count)).collect())
                .unwrap_or_default(),
            errors: stats.errors.load(Ordering::Relaxed),
            passes: stats.passes.load(Ordering::Relaxed),
            last_pass_seconds: stats.last_pass_us.load(Ordering::Relaxed) as f64 / 1e6,
            in_node_map: *stats
                .in_node_map
                .lock()
                .unwrap_or_else(|poisoned| poisoned.into_inner()),
            calls: Vec::new(),
            latency: Vec::new(),
        }
        .with_calls(&stats.cni.lock().unwrap_or_else(|poisoned| poisoned.into_inner()))
    }

    fn with_calls(mut self, cni: &super::CniStats) -> Self {
        self.calls = cni
            .calls
            .iter()
            .map(|(key, count)| (key.clone(), *count))
            .collect();
        self.latency = cni
            .latency
            .iter()
            .map(|(key, latency)| (key.clone(), latency.clone()))
            .collect();
        self
    }
}

#[derive(Debug)]
struct Snapshot {
    report: NodeReport,
    agent: Option<AgentSnapshot>,
}

type Labels = Vec<(&'static str, String)>;

/// One metric family: its rows are label sets and values.
fn family<M: EncodeMetric>(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    kind: MetricType,
    rows: Vec<(Labels, M)>,
) -> Result<(), std::fmt::Error> {
    let mut metric = encoder.encode_descriptor(name, help, None, kind)?;
    for (labels, value) in rows {
        value.encode(metric.encode_family(&labels)?)?;
    }
    Ok(())
}

fn gauge(value: u64) -> ConstGauge<i64> {
    ConstGauge::new(i64::try_from(value).unwrap_or(i64::MAX))
}

impl Collector for Snapshot {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let report = &self.report;
        let kernel = &report.kernel;
        family(
            &mut encoder,
            "flatbridge_build_info",
            "The build of this flatbridge and the kernel it runs on (value 1)",
            MetricType::Gauge,
            vec![(
                vec![
                    ("version", env!("CARGO_PKG_VERSION").to_owned()),
                    ("bpf_build", crate::datapath::BPF_OBJECT_HASH.to_owned()),
                    ("kernel", kernel.release.clone()),
                    ("tcx", kernel.tcx.to_string()),
                ],
                gauge(1),
            )],
        )?;
        // The datapath's per-verdict counters, one family per kind of verdict (answers: one
        // per protocol, each verdict's name says which).
        for ((kind, only), packets_name, bytes_name, label, help) in [
            (
                (VerdictKind::Forward, None),
                "flatbridge_forward_packets",
                Some("flatbridge_forward_bytes"),
                "verdict",
                "frames the programs passed on (to the bridge, a pod or the uplink)",
            ),
            (
                (VerdictKind::Drop, None),
                "flatbridge_drop_packets",
                Some("flatbridge_drop_bytes"),
                "reason",
                "frames the programs dropped, by reason",
            ),
            (
                (VerdictKind::Answer, Some("_arp_")),
                "flatbridge_arp_answered",
                None,
                "verdict",
                "ARP requests the programs answered",
            ),
            (
                (VerdictKind::Answer, Some("_nd_")),
                "flatbridge_nd_answered",
                None,
                "verdict",
                "IPv6 neighbour solicitations the programs answered",
            ),
            (
                (VerdictKind::Flow, None),
                "flatbridge_flow_events",
                None,
                "event",
                "flow directions confirmed or closed",
            ),
            (
                (VerdictKind::Conflict, None),
                "flatbridge_wire_conflict_frames",
                None,
                "verdict",
                "ARP and neighbour discovery frames from the wire that claimed a local pod's address with another MAC",
            ),
        ] {
            let rows = |bytes: bool| -> Vec<(Labels, ConstCounter<u64>)> {
                report
                    .networks
                    .iter()
                    .flat_map(|network| {
                        network
                            .counters
                            .iter()
                            .filter(move |counter| {
                                counter.kind == kind && only.is_none_or(|part| counter.verdict.contains(part))
                            })
                            .map(move |counter| {
                                (
                                    vec![
                                        ("network", network.network.clone()),
                                        (label, counter.verdict.clone()),
                                    ],
                                    ConstCounter::new(if bytes { counter.bytes } else { counter.packets }),
                                )
                            })
                    })
                    .collect()
            };
            family(
                &mut encoder,
                packets_name,
                &format!("The {help}"),
                MetricType::Counter,
                rows(false),
            )?;
            if let Some(bytes_name) = bytes_name {
                family(
                    &mut encoder,
                    bytes_name,
                    &format!("The bytes of the {help}"),
                    MetricType::Counter,
                    rows(true),
                )?;
            }
        }
        let per_network = |value: &dyn Fn(&report::NetworkReport) -> u64| -> Vec<(Labels, ConstGauge<i64>)> {
            report
                .networks
                .iter()
                .map(|network| (vec![("network", network.network.clone())], gauge(value(network))))
                .collect()
        };
        family(
            &mut encoder,
            "flatbridge_endpoints",
            "Pods the datapath knows",
            MetricType::Gauge,
            per_network(&|network| network.endpoints.len() as u64),
        )?;
        // The flow maps, one pair per address family, each with its own capacity.
        let per_family =
            |value: &dyn Fn(&report::NetworkReport, bool) -> u64| -> Vec<(Labels, ConstGauge<i64>)> {
                report
                    .networks
                    .iter()
                    .flat_map(|network| {
                        [("ipv4", false), ("ipv6", true)].map(|(family, ipv6)| {
                            (
                                vec![
                                    ("network", network.network.clone()),
                                    ("family", family.to_owned()),
                                ],
                                gauge(value(network, ipv6)),
                            )
                        })
                    })
                    .collect()
            };
        let of_family = |network: &report::NetworkReport, ipv6: bool, offloaded_only: bool| {
            network
                .flows
                .iter()
                .filter(|flow| flow.src.is_ipv6() == ipv6 && (flow.offloaded || !offloaded_only))
                .count() as u64
        };
        family(
            &mut encoder,
            "flatbridge_flows_tracked",
            "Flow directions in the flow maps (LRU: a full map only sends flows to the slow path)",
            MetricType::Gauge,
            per_family(&|network, ipv6| of_family(network, ipv6, false)),
        )?;
        family(
            &mut encoder,
            "flatbridge_flows_offloaded",
            "Flow directions that bypass the bridge now",
            MetricType::Gauge,
            per_family(&|network, ipv6| of_family(network, ipv6, true)),
        )?;
        family(
            &mut encoder,
            "flatbridge_flows_capacity",
            "Flow directions each family's flow map holds",
            MetricType::Gauge,
            per_family(&|_, _| u64::from(MAX_FLOWS)),
        )?;
        let attachments: Vec<(Labels, ConstGauge<i64>)> = report
            .networks
            .iter()
            .flat_map(|network| {
                network.programs.iter().flat_map(move |program| {
                    program.devices.iter().map(move |device| {
                        (
                            vec![
                                ("network", network.network.clone()),
                                ("program", program.name.clone()),
                                ("device", device.device.clone()),
                                ("attach", device.attach.name().to_owned()),
                            ],
                            gauge(u64::from(device.attached)),
                        )
                    })
                })
            })
            .collect();
        family(
            &mut encoder,
            "flatbridge_program_attached",
            "Whether the kernel runs the program on the device (1) or another tool removed it (0)",
            MetricType::Gauge,
            attachments,
        )?;
        family(
            &mut encoder,
            "flatbridge_address_conflicts",
            "Addresses held out of allocations because another host on the wire answered for them",
            MetricType::Gauge,
            per_network(&|network| {
                report
                    .conflicts
                    .iter()
                    .filter(|conflict| conflict.network == network.network && !conflict.expired)
                    .count() as u64
            }),
        )?;
        family(
            &mut encoder,
            "flatbridge_wire_conflicts",
            "Local pods' addresses another MAC claimed on the wire since the pod was added",
            MetricType::Gauge,
            per_network(&|network| network.wire_conflicts.len() as u64),
        )?;
        family(
            &mut encoder,
            "flatbridge_addresses_probed_ahead",
            "Addresses probed on the wire ahead of their ADD (handed out without waiting)",
            MetricType::Gauge,
            per_network(&|network| network.probed_ahead as u64),
        )?;
        if let Some(in_map) = self.agent.as_ref().and_then(|agent| agent.in_node_map) {
            family(
                &mut encoder,
                "flatbridge_node_in_node_map",
                "Whether this node has an entry in the node map (0: no network config installed)",
                MetricType::Gauge,
                vec![(Vec::new(), gauge(u64::from(in_map)))],
            )?;
        }
        if let Some(agent) = &self.agent {
            family(
                &mut encoder,
                "flatbridge_cni_calls",
                "The plugin's CNI calls, by verb and result code (0: success), as the plugin recorded them",
                MetricType::Counter,
                agent
                    .calls
                    .iter()
                    .map(|((network, verb, code), count)| {
                        (
                            vec![
                                ("network", network.clone()),
                                ("verb", (*verb).to_owned()),
                                ("code", code.to_string()),
                            ],
                            ConstCounter::new(*count),
                        )
                    })
                    .collect(),
            )?;
            family(
                &mut encoder,
                "flatbridge_cni_call_duration_seconds",
                "How long the plugin's CNI calls took, by verb",
                MetricType::Histogram,
                agent
                    .latency
                    .iter()
                    .map(|((network, verb), latency)| {
                        (
                            vec![("network", network.clone()), ("verb", (*verb).to_owned())],
                            HistogramValue(latency.clone()),
                        )
                    })
                    .collect(),
            )?;
            family(
                &mut encoder,
                "flatbridge_reconcile_actions",
                "What the agent's reconcile passes did, by action",
                MetricType::Counter,
                agent
                    .actions
                    .iter()
                    .map(|(action, count)| {
                        (vec![("action", (*action).to_owned())], ConstCounter::new(*count))
                    })
                    .collect(),
            )?;
            family(
                &mut encoder,
                "flatbridge_reconcile_errors",
                "Failed reconcile steps (each is logged)",
                MetricType::Counter,
                vec![(Vec::new(), ConstCounter::new(agent.errors))],
            )?;
            family(
                &mut encoder,
                "flatbridge_reconcile_passes",
                "Reconcile passes finished",
                MetricType::Counter,
                vec![(Vec::new(), ConstCounter::new(agent.passes))],
            )?;
            family(
                &mut encoder,
                "flatbridge_reconcile_last_pass_seconds",
                "How long the last reconcile pass took",
                MetricType::Gauge,
                vec![(Vec::new(), ConstGauge::new(agent.last_pass_seconds))],
            )?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counters_are_named_by_their_samples_in_the_classic_format() {
        let openmetrics = "# HELP a_packets The packets.\n# TYPE a_packets counter\na_packets_total{x=\"1\"} 3\n\
                           # HELP b Things.\n# TYPE b gauge\nb 2\n# EOF\n";
        assert_eq!(
            classic(openmetrics),
            "# HELP a_packets_total The packets.\n# TYPE a_packets_total counter\na_packets_total{x=\"1\"} 3\n\
             # HELP b Things.\n# TYPE b gauge\nb 2\n"
        );
    }
}
