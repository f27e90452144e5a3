//! Everything a runtime (or, with Multus, a tenant's network config) hands the plugin before
//! it touches the node: the CNI_* variables, the config with its prevResult and IPAM
//! section, and the results printed back. None of it may panic, whatever the bytes; bad
//! input is a CNI error.
#![no_main]

use flatbridge::{
    cni::{CniEnv, CniResult, Config},
    ipam::IpamConfig,
};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // Three lines of environment (CNI_CONTAINERID, CNI_IFNAME, CNI_ARGS), then the config.
    let text = String::from_utf8_lossy(data);
    let mut lines = text.splitn(4, '\n');
    let (id, ifname, args) = (lines.next(), lines.next(), lines.next());
    let config = lines.next().unwrap_or_default();
    let env = CniEnv::from_lookup(|name| {
        match name {
            "CNI_CONTAINERID" => id,
            "CNI_IFNAME" => ifname,
            "CNI_ARGS" => args,
            _ => None,
        }
        .map(str::to_owned)
    });
    let mac = env.as_ref().ok().and_then(|env| env.arg("MAC"));
    let ip = env.as_ref().ok().and_then(|env| env.arg("IP"));
    for raw in [config.as_bytes(), data] {
        let Ok(config) = Config::parse(raw) else {
            continue;
        };
        let _ = config.requested_mac(mac);
        let _ = config.ipam_type();
        let _ = IpamConfig::from_net_config(&config.raw, ip);
        if let Some(prev) = &config.net.prev_result
            && let Ok(result) = CniResult::from_json(prev)
        {
            let _ = serde_json::to_string(&result.to_json(config.version));
        }
    }
});
