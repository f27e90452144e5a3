//! `cargo xtask bench`: the datapath's cost and the CNI calls' cost, measured side by side in
//! one run on simulated nodes, reported as ratios (absolute figures on a shared VM are
//! noise; ratios measured in the same run are not).
//!
//! Method (see the README): both ends of a sample on one CPU, and TSO/GSO/GRO off for the
//! throughput figure, make the datapath's own cost visible; every metric is taken in
//! interleaved rounds whose path order rotates; each figure is the median of its rounds and
//! each ratio the median of the per-round ratios, with their spread.
mod cni;
mod measure;
mod report;
mod world;

use std::path::Path;

use anyhow::Context;

use crate::{build, setup, util::root};

/// How long and how often.
pub struct Plan {
    pub rounds: usize,
    pub seconds: u32,
    pub cni_calls: usize,
    pub scale_to: usize,
}

impl Plan {
    pub fn new(quick: bool) -> Self {
        if quick {
            Self {
                rounds: 1,
                seconds: 1,
                cni_calls: 10,
                scale_to: 30,
            }
        } else {
            Self {
                rounds: 5,
                seconds: 2,
                cni_calls: 50,
                scale_to: 200,
            }
        }
    }
}

/// Every sample of one path.
#[derive(Default, Clone)]
pub struct Samples {
    pub rtt_us: Vec<f64>,
    pub tcp_gbits: Vec<f64>,
    pub udp_mpps: Vec<f64>,
    pub classic_gbits: Vec<f64>,
    pub netfilter_bytes: u64,
    pub fast_path_bytes: u64,
}

pub fn run(quick: bool) -> anyhow::Result<()> {
    let plan = Plan::new(quick);
    crate::util::interrupt::catch()?;
    setup::run()?;
    let plugin = build::release_plugin()?;
    let with_reference =
        Path::new("/usr/lib/cni/bridge").exists() && Path::new("/usr/lib/cni/host-local").exists();
    let started = std::time::Instant::now();

    let worlds = world::build(&plugin, with_reference)?;
    let mut samples: Vec<Samples> = vec![Samples::default(); worlds.len()];
    let before: Vec<(u64, u64)> = worlds
        .iter()
        .map(|w| (w.netfilter_bytes(), w.fast_path_bytes()))
        .collect();

    for world in &worlds {
        world.set_offloads(false);
    }
    for round in 0..plan.rounds {
        eprintln!(
            "bench: round {}/{} (same CPU, offloads off)",
            round + 1,
            plan.rounds
        );
        // Rotate the order so no path always runs first (or right after a given other).
        let order: Vec<usize> = (0..worlds.len()).map(|i| (i + round) % worlds.len()).collect();
        for &i in &order {
            crate::util::interrupt::check()?;
            let world = &worlds[i];
            let (client, server, ip) = (world.client(), world.server(), world.server_ip.as_str());
            let rtt = measure::rtt_p50(client, server, ip, plan.seconds)
                .with_context(|| format!("RTT of {}", world.key))?;
            measure::settle();
            let tcp = measure::tcp_gbits(client, server, ip, plan.seconds, false)
                .with_context(|| format!("TCP of {}", world.key))?;
            measure::settle();
            let udp = measure::udp_mpps(client, server, ip, plan.seconds)
                .with_context(|| format!("UDP of {}", world.key))?;
            measure::settle();
            eprintln!(
                "bench:   {:<18} RTT {rtt:7.2} us  TCP {tcp:6.2} Gbit/s  UDP {udp:5.3} Mpps",
                world.key
            );
            samples[i].rtt_us.push(rtt);
            samples[i].tcp_gbits.push(tcp);
            samples[i].udp_mpps.push(udp);
        }
    }
    for (i, world) in worlds.iter().enumerate() {
        samples[i].netfilter_bytes = world.netfilter_bytes() - before[i].0;
        samples[i].fast_path_bytes = world.fast_path_bytes() - before[i].1;
    }
    eprintln!("bench: classic iperf3 (offloads on, ends on different CPUs; reported, not used for claims)");
    for world in &worlds {
        world.set_offloads(true);
    }
    for (i, world) in worlds.iter().enumerate() {
        crate::util::interrupt::check()?;
        let classic = measure::tcp_gbits(
            world.client(),
            world.server(),
            &world.server_ip,
            plan.seconds,
            true,
        )
        .with_context(|| format!("classic TCP of {}", world.key))?;
        samples[i].classic_gbits.push(classic);
        measure::settle();
    }
    let labels: Vec<(&str, &str)> = worlds.iter().map(|world| (world.key, world.label)).collect();
    let labels: Vec<(String, String)> = labels
        .into_iter()
        .map(|(k, l)| (k.to_owned(), l.to_owned()))
        .collect();
    drop(worlds);

    eprintln!(
        "bench: CNI cost ({} calls each, then filling a node with {} pods)",
        plan.cni_calls, plan.scale_to
    );
    let cni = cni::measure(plugin, plan.cni_calls, plan.scale_to, with_reference)?;

    let result = report::Report {
        labels,
        samples,
        cni,
        plan,
        elapsed_s: started.elapsed().as_secs_f64(),
    };
    print!("{}", result.table());
    // Published results are a full run's; a smoke check's go where nothing reads them.
    let dir = if quick {
        root().join("target/bench")
    } else {
        root().join("bench/results")
    };
    std::fs::create_dir_all(&dir)?;
    // Before writing: the results themselves are files of the tree.
    let clean = report::source()["clean"] == serde_json::Value::Bool(true);
    let (json_path, svg_path) = result.write(&dir)?;
    if !quick && !clean {
        eprintln!(
            "bench: the tree has uncommitted changes: these figures are not HEAD's; publish only a clean tree's"
        );
    }
    eprintln!(
        "bench: raw samples in {}, chart in {}",
        json_path.display(),
        svg_path.display()
    );
    Ok(())
}
