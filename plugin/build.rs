//! Finds the eBPF object that `cargo xtask build-ebpf` produced, so that the plugin can
//! embed it, and fingerprints it, so that a node running older programs notices the new
//! ones. The plugin cannot work without the object, so a missing one is a build error that
//! says how to make it.
use std::path::PathBuf;

fn main() {
    println!("cargo::rerun-if-env-changed=FLATBRIDGE_BPF_OBJECT");
    let object = match std::env::var_os("FLATBRIDGE_BPF_OBJECT") {
        Some(path) => PathBuf::from(path),
        None => {
            let manifest = PathBuf::from(
                std::env::var_os("CARGO_MANIFEST_DIR")
                    .expect("cargo sets CARGO_MANIFEST_DIR for build scripts"),
            );
            manifest.join("../target/bpf/flatbridge.bpf.o")
        }
    };
    println!("cargo::rerun-if-changed={}", object.display());
    let Ok(bytes) = std::fs::read(&object) else {
        println!(
            "cargo::error=the eBPF object {} does not exist: run `cargo xtask build-ebpf` \
             (or `cargo xtask build` to build everything) first",
            object.display()
        );
        return;
    };
    // FNV-1a: stable, dependency-free; it only has to tell two objects apart.
    let hash = bytes.iter().fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0000_0100_0000_01b3)
    });
    println!("cargo::rustc-env=FLATBRIDGE_BPF_OBJECT={}", object.display());
    println!("cargo::rustc-env=FLATBRIDGE_BPF_HASH={hash:016x}");
}
