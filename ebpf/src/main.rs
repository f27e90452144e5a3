//! flatbridge's tc programs. One program per file, named by where it is attached (inject,
//! attached nowhere, sends frames the plugin built); shared parsing, ARP and neighbour
//! discovery answering and accounting in their own files; every map in maps.rs.
#![no_std]
#![no_main]

mod arp;
mod counters;
mod decide;
mod flow;
mod from_pod;
mod from_uplink;
mod inject;
mod isolation;
mod maps;
mod ndp;
mod parse;
mod redirect;
mod to_pod;
mod to_uplink;

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    // The verifier rejects any reachable panic, so this is never called at run time.
    loop {}
}

/// The kernel refuses GPL-only helpers (redirect_peer among them) to non-GPL programs.
#[unsafe(link_section = "license")]
#[unsafe(no_mangle)]
static LICENSE: [u8; 13] = *b"Dual MIT/GPL\0";
