//! The operator's commands: `flatbridge status`, `flows flush`, `node setup | teardown`,
//! `conflicts [clear]`. They are not CNI verbs — a person runs them on the node, in its
//! network namespace — so their errors are anyhow's, with the context a person needs, and
//! they print text (or JSON for scripts) instead of the protocol's results.
pub mod conflicts;
pub mod gc;
pub mod install;
pub mod monitor;
pub mod node;
pub mod status;

use std::future::Future;

use anyhow::Context;

/// Runs `future` on this thread (see [`crate::netlink::runtime`]).
fn block_on<T>(future: impl Future<Output = anyhow::Result<T>>) -> anyhow::Result<T> {
    crate::netlink::runtime()
        .context("failed to start the async runtime")?
        .block_on(future)
}
