//! What netfilter saw on a node: target-less counting rules before kube-proxy's chain and
//! their byte counters, in either family (`iptables` or `ip6tables`), and the flows
//! `flatbridge status` reports as offloaded.
use serde_json::Value;

use crate::Netns;

/// Counts what `tool`'s FORWARD chain sees of the flow between `a` and `b`, one rule per
/// direction, tagged `<tag>-out` (a to b) and `<tag>-back`. The rules have no target, so
/// every packet they count goes on into KUBE-FORWARD (which must be the first rule that
/// decides) and its `ctstate INVALID -j DROP`.
pub fn count_flow(netns: &Netns, tool: &str, tag: &str, a: &str, b: &str) {
    let host = if a.contains(':') { 128 } else { 32 };
    for (direction, src, dst) in [("out", a, b), ("back", b, a)] {
        let rule =
            format!("-I FORWARD 1 -s {src}/{host} -d {dst}/{host} -m comment --comment {tag}-{direction}");
        let mut argv = vec![tool, "-w"];
        argv.extend(rule.split_whitespace());
        netns.ok(&argv);
    }
    let listing = netns.ok(&[tool, "-w", "-S", "FORWARD"]);
    let rules: Vec<&str> = listing.lines().filter(|rule| rule.starts_with("-A ")).collect();
    let jump = rules
        .iter()
        .position(|rule| rule.contains("-j KUBE-FORWARD"))
        .unwrap_or_else(|| panic!("FORWARD does not jump to KUBE-FORWARD:\n{listing}"));
    assert!(
        rules[..jump].iter().all(|rule| !rule.contains(" -j ")),
        "a rule before KUBE-FORWARD decides packets:\n{listing}"
    );
}

/// Bytes the rule of the filter table's `chain` that contains `needle` matched.
pub fn rule_bytes(netns: &Netns, tool: &str, chain: &str, needle: &str) -> u64 {
    let listing = netns.ok(&[tool, "-w", "-L", chain, "-v", "-x", "-n"]);
    listing
        .lines()
        .find(|line| line.contains(needle))
        .and_then(|line| line.split_whitespace().nth(1))
        .and_then(|bytes| bytes.parse().ok())
        .unwrap_or_else(|| panic!("no rule matching {needle:?} in {chain}:\n{listing}"))
}

/// The flow directions (source, destination) a network's report in `flatbridge status
/// --json` says are offloaded now.
pub fn offloaded(network: &Value) -> Vec<(String, String)> {
    network["flows"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|flow| flow["offloaded"] == true)
        .map(|flow| {
            (
                flow["src"].as_str().unwrap_or_default().into(),
                flow["dst"].as_str().unwrap_or_default().into(),
            )
        })
        .collect()
}
