//! rtnetlink with small verbs. One [`Netlink`] per network namespace: the socket is opened
//! while the thread is inside the namespace and stays bound to it, so later requests need
//! no namespace switching. Requires a current-thread tokio runtime (see `netns`).
mod addr;
mod link;
mod neigh;
mod route;
mod tc;

pub use link::{Link, LinkKind, VethSpec};
pub use route::{RouteEntry, RouteSpec};

use std::io;

use rtnetlink::Handle;
use rtnetlink::sys::AsyncSocket;

/// The runtime every netlink conversation runs on: current-thread, so no task ever runs on a
/// thread that is in another network namespace.
pub fn runtime() -> io::Result<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread().enable_all().build()
}

#[derive(Debug, thiserror::Error)]
pub enum NetlinkError {
    #[error("failed to open a netlink socket: {0}")]
    Socket(#[source] io::Error),
    #[error("failed to {action}: {source}")]
    Request {
        action: String,
        #[source]
        source: rtnetlink::Error,
    },
    #[error("no network interface {0}")]
    NoSuchLink(String),
}

impl NetlinkError {
    /// The kernel's errno for a failed request.
    pub fn errno(&self) -> Option<i32> {
        match self {
            NetlinkError::Request {
                source: rtnetlink::Error::NetlinkError(message),
                ..
            } => message.code.map(|code| -code.get()),
            _ => None,
        }
    }
}

/// A netlink socket bound to one network namespace.
#[derive(Clone)]
pub struct Netlink {
    handle: Handle,
}

impl Netlink {
    /// Opens a socket in the calling thread's network namespace; its connection task runs
    /// on the current tokio runtime.
    pub fn open() -> Result<Self, NetlinkError> {
        let (mut connection, handle, _) = rtnetlink::new_connection().map_err(NetlinkError::Socket)?;
        // Strict checking makes the kernel honour a dump's filters (addresses of one link),
        // instead of listing the whole namespace for us to filter: ADD and DEL must not
        // grow with the number of pods.
        connection
            .socket_mut()
            .socket_mut()
            .set_netlink_get_strict_chk(true)
            .map_err(NetlinkError::Socket)?;
        tokio::spawn(connection);
        Ok(Self { handle })
    }

    fn handle(&self) -> &Handle {
        &self.handle
    }
}

/// Wraps an rtnetlink error with what we were doing.
fn request_error(action: impl Into<String>) -> impl FnOnce(rtnetlink::Error) -> NetlinkError {
    let action = action.into();
    move |source| NetlinkError::Request { action, source }
}

/// True when a request failed with `errno`.
fn has_errno(error: &rtnetlink::Error, errno: i32) -> bool {
    matches!(error, rtnetlink::Error::NetlinkError(message) if message.code.is_some_and(|code| -code.get() == errno))
}
