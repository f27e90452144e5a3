//! Finds the eBPF object that `cargo xtask build-ebpf` produced, so that `main.rs` can embed
//! it. The plugin cannot work without it, so a missing object is a build error that says
//! how to make it.
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
    if !object.is_file() {
        println!(
            "cargo::error=the eBPF object {} does not exist: run `cargo xtask build-ebpf` \
             (or `cargo xtask build` to build everything) first",
            object.display()
        );
        return;
    }
    println!("cargo::rustc-env=FLATBRIDGE_BPF_OBJECT={}", object.display());
}
