//! A DHCPv4 client (RFC 2131), one runner per link.
//!
//! Pure: [`machine`] (the client state machine: INIT, SELECTING,
//! REQUESTING, INIT-REBOOT, BOUND, RENEWING, REBINDING; it takes bytes and
//! instants and returns [`machine::Action`]s) and [`lease`] (an ACK checked
//! and turned into a [`Lease`]; everything a server sends is treated as
//! hostile). I/O: [`socket`] (a UDP socket on port 68 bound to the link),
//! [`store`] (the last lease of each link, kept in the state dir for
//! INIT-REBOOT), [`client`] (the task that runs the machine for one link)
//! and [`manager`] (runners for a set of links, the current leases, the
//! [`resource::DhcpLeaseSpec`] operator resource).
//!
//! The client never touches addresses or routes: a [`Lease`] is data, and
//! the network spec turns it into the DHCP layer. DHCPv6 is not done.
//!
//! The codec is `dhcproto`; the state machine is our own, so it runs on an
//! injected clock in unit tests (the `mozim` client owns its sockets and
//! timers and pins another rtnetlink).

pub mod client;
pub mod lease;
pub mod machine;
pub mod manager;
pub mod resource;
pub mod socket;
pub mod store;
pub mod wire;

pub use client::run;
pub use lease::{DhcpRoute, Lease};
pub use machine::DhcpState;
pub use manager::DhcpManager;
pub use resource::{DHCP_LEASE, DhcpLeaseSpec};
pub use store::{LeaseStore, MemoryStore, StateDirStore};

/// What a runner is asked to do besides getting a lease.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct DhcpOptions {
    /// Sent as option 12 when it is a valid host name (otherwise not sent,
    /// with a warning).
    pub hostname_to_send: Option<String>,
    /// Send DHCPRELEASE for the lease when the runner is stopped (and
    /// forget the kept lease); otherwise the lease is kept for INIT-REBOOT.
    pub release_on_stop: bool,
}

/// Why a runner could not run; each names the link.
#[derive(Debug, thiserror::Error)]
pub enum DhcpError {
    #[error("cannot open a netlink socket to look up link {link}: {error}")]
    Netlink { link: String, error: std::io::Error },
    #[error("cannot look up link {link}: {message}")]
    LinkLookup { link: String, message: String },
    #[error("link {link} has no Ethernet hardware address (found {found:?})")]
    NoHardwareAddress { link: String, found: String },
}

/// Text from the network or a file, safe to log: one line, escaped.
pub(crate) fn escaped(text: &str) -> String {
    bronze_bundle::text::escape_within(text, 512).into_owned()
}
