//! `flatbridge conflicts [clear]`: the addresses IPAM keeps out of allocations because
//! another host on the wire answered an ARP probe (or IPv6 duplicate address detection) for
//! them, and removing those markers.
//! Both take each network's IPAM lock, as an ADD does.
use std::{
    net::IpAddr,
    path::Path,
    time::{Duration, SystemTime},
};

use anyhow::{Context, bail};

use crate::{
    ipam::{self, CONFLICT_RETRY, DiskStore},
    report::ConflictReport,
};

/// The networks with a lease directory under `data_dir`: `network` alone, or every one.
fn networks(data_dir: &Path, network: Option<&str>) -> anyhow::Result<Vec<String>> {
    if let Some(network) = network {
        let dir = data_dir.join(network);
        if !dir.is_dir() {
            bail!("network {network} has no lease directory {}", dir.display());
        }
        return Ok(vec![network.to_owned()]);
    }
    let entries =
        std::fs::read_dir(data_dir).with_context(|| format!("failed to list {}", data_dir.display()))?;
    let mut networks = Vec::new();
    for entry in entries {
        let entry = entry.with_context(|| format!("failed to list {}", data_dir.display()))?;
        if entry.file_type().is_ok_and(|kind| kind.is_dir()) {
            networks.push(entry.file_name().to_string_lossy().into_owned());
        }
    }
    networks.sort();
    Ok(networks)
}

fn open(data_dir: &Path, network: &str) -> anyhow::Result<DiskStore> {
    DiskStore::open(&data_dir.join(network))
        .with_context(|| format!("failed to open the leases of {network}"))
}

/// Every conflict marker as of `now` (the rows of `flatbridge status`'s `conflicts`), read
/// under each network's IPAM lock.
pub fn list(data_dir: &Path, network: Option<&str>, now: SystemTime) -> anyhow::Result<Vec<ConflictReport>> {
    let mut rows = Vec::new();
    for network in networks(data_dir, network)? {
        let store = open(data_dir, &network)?;
        for conflict in ipam::conflicts(&store, now)? {
            rows.push(ConflictReport::new(&network, &conflict, now));
        }
    }
    Ok(rows)
}

/// The rows of [`list`] as a table for a person.
pub fn render(rows: &[ConflictReport]) -> String {
    if rows.is_empty() {
        return "no conflicting addresses\n".into();
    }
    let mut out = format!(
        "{:<16} {:<40} {:<18} {:>9}  STATE\n",
        "NETWORK", "ADDRESS", "ANSWERED BY", "AGE"
    );
    for row in rows {
        let age = Duration::from_secs(row.age_s);
        let state = if row.expired {
            "expired: handed out and probed again at its next allocation".to_owned()
        } else {
            format!(
                "held out of allocations for {} more",
                human(CONFLICT_RETRY.saturating_sub(age))
            )
        };
        out.push_str(&format!(
            "{:<16} {:<40} {:<18} {:>9}  {state}\n",
            row.network,
            row.address.to_string(),
            row.mac,
            human(age),
        ));
    }
    out
}

/// `4m12s`, `3h5m`, `2d3h`.
fn human(duration: Duration) -> String {
    let seconds = duration.as_secs();
    match seconds {
        0..60 => format!("{seconds}s"),
        60..3600 => format!("{}m{}s", seconds / 60, seconds % 60),
        3600..86400 => format!("{}h{}m", seconds / 3600, seconds % 3600 / 60),
        _ => format!("{}d{}h", seconds / 86400, seconds % 86400 / 3600),
    }
}

/// Removes the conflict markers of `network` (or of every network), only that of `address`
/// when given, under each network's IPAM lock. Leases of containers are never touched.
/// Returns what was cleared; an `address` with no marker is an error.
pub fn clear(data_dir: &Path, network: Option<&str>, address: Option<IpAddr>) -> anyhow::Result<String> {
    let mut cleared = Vec::new();
    let mut failed = Vec::new();
    for network in networks(data_dir, network)? {
        let mut store = open(data_dir, &network)?;
        let outcome = ipam::clear_conflicts(&mut store, address)?;
        for (ip, holder) in outcome.released {
            cleared.push(format!(
                "{network} {ip} (answered by {})",
                holder.conflicting_mac().unwrap_or_default()
            ));
        }
        for (ip, error) in outcome.failed {
            failed.push(format!("{network} {ip}: {error}"));
        }
    }
    let report = if cleared.is_empty() {
        "no conflict marker cleared".to_owned()
    } else {
        format!(
            "cleared conflict markers ({}): {}",
            cleared.len(),
            cleared.join(", ")
        )
    };
    if !failed.is_empty() {
        bail!(
            "{report}; failed to clear {} more: {}",
            failed.len(),
            failed.join("; ")
        );
    }
    if let Some(address) = address
        && cleared.is_empty()
    {
        bail!("no conflict marker for {address} under {}", data_dir.display());
    }
    Ok(report)
}

#[cfg(test)]
mod tests {
    use std::fs;

    use super::*;
    use crate::ipam::Owner;

    fn ip(text: &str) -> IpAddr {
        text.parse().expect("ip")
    }

    #[test]
    fn lists_and_clears_markers_of_every_network_or_one() {
        let temp = tempfile::tempdir().expect("temp dir");
        let data_dir = temp.path();
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_750_000_000);
        for (network, address, mac, minutes) in
            [("blue", "10.10.1.2", 0xab, 3), ("red", "10.20.1.9", 0xcd, 15)]
        {
            let mut store = DiskStore::open(&data_dir.join(network)).expect("open");
            ipam::mark_conflict(
                &mut store,
                ip(address),
                [2, 0, 0, 0, 0, mac],
                now - Duration::from_secs(60 * minutes),
            )
            .expect("mark");
            assert!(
                ipam::Store::create(&mut store, ip("10.10.1.1"), &Owner::new("c0ffee", "eth0"))
                    .expect("lease")
            );
        }
        // Not a network.
        fs::write(data_dir.join("stray-file"), "").expect("write");

        let rows = list(data_dir, None, now).expect("list");
        assert_eq!(
            serde_json::to_value(&rows).expect("json"),
            serde_json::json!([
                {"network": "blue", "address": "10.10.1.2", "mac": "02:00:00:00:00:ab", "age_s": 180, "expired": false},
                {"network": "red", "address": "10.20.1.9", "mac": "02:00:00:00:00:cd", "age_s": 900, "expired": true},
            ])
        );
        let table = render(&rows);
        assert!(table.contains("3m0s") && table.contains("7m0s more"), "{table}");
        assert!(table.contains("expired"), "{table}");
        assert_eq!(list(data_dir, Some("red"), now).expect("list").len(), 1);
        assert!(list(data_dir, Some("green"), now).is_err());

        // An address that holds a container's lease, not a marker, is not cleared.
        assert!(clear(data_dir, Some("blue"), Some(ip("10.10.1.1"))).is_err());
        let report = clear(data_dir, Some("blue"), Some(ip("10.10.1.2"))).expect("clear");
        assert!(report.contains("(1)") && report.contains("10.10.1.2"), "{report}");
        assert_eq!(list(data_dir, None, now).expect("list").len(), 1);
        clear(data_dir, None, None).expect("clear");
        assert_eq!(
            render(&list(data_dir, None, now).expect("list")),
            "no conflicting addresses\n"
        );
        for network in ["blue", "red"] {
            assert!(
                data_dir.join(network).join("10.10.1.1").exists(),
                "a lease of {network} was cleared"
            );
        }
    }

    #[test]
    fn ages_read_as_a_person_would() {
        assert_eq!(human(Duration::from_secs(42)), "42s");
        assert_eq!(human(Duration::from_secs(252)), "4m12s");
        assert_eq!(human(Duration::from_secs(3 * 3600 + 300)), "3h5m");
        assert_eq!(human(Duration::from_secs(2 * 86400 + 3 * 3600)), "2d3h");
    }
}
