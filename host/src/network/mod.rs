//! Static network bring-up and observation, without plugins.
//!
//! Pure: [`cmdline`] (`bronze.ip=` from the kernel command line) and
//! [`plan`] (cmdline < config layers merged and validated into a
//! [`plan::NetworkPlan`]). I/O: [`netlink`] (the kernel behind the small
//! [`netlink::Netlink`] trait, rtnetlink in production), [`apply`] (makes
//! the kernel match a plan and remembers what it added, writes
//! `resolv.conf` under a root path), [`observe`] (reads links, addresses
//! and routes and publishes them as resources, [`resources`]) and
//! [`controller`] (re-observes on a timer and after each apply).
//!
//! This module never decides *whether* to touch the machine's network:
//! the caller (node wiring) applies plans only in pid1 mode. Observation is
//! read-only and works unprivileged.

pub mod apply;
pub mod cmdline;
pub mod controller;
pub mod dhcp;
pub mod hosts;
pub mod layers;
pub mod links;
pub mod netlink;
pub mod observe;
pub mod plan;
pub mod platform_layer;
pub mod resources;
pub mod sockets;
pub mod spec_controller;

#[cfg(test)]
mod netns_tests;

use crate::network::plan::{AddressPlan, RoutePlan};
use std::path::PathBuf;

/// A failure talking to the kernel, as the kernel or the netlink library
/// reported it. `errno` lets callers tell "already there" from real errors.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct NetlinkError {
    /// The positive errno the kernel answered with, when it answered with one.
    pub errno: Option<i32>,
    pub message: String,
}

impl NetlinkError {
    /// An error the kernel answered with `errno`.
    pub fn os(errno: i32) -> Self {
        Self { errno: Some(errno), message: std::io::Error::from_raw_os_error(errno).to_string() }
    }

    /// Whether the kernel answered with `errno`.
    pub fn is(&self, errno: i32) -> bool {
        self.errno == Some(errno)
    }
}

impl From<rtnetlink::Error> for NetlinkError {
    fn from(e: rtnetlink::Error) -> Self {
        match e {
            rtnetlink::Error::NetlinkError(msg) => Self::os(msg.raw_code().abs()),
            other => Self { errno: None, message: other.to_string() },
        }
    }
}

/// Why applying or observing the network failed; each names the link and
/// the value involved.
#[derive(Debug, thiserror::Error)]
pub enum NetError {
    #[error("cannot open a netlink socket: {error}")]
    Connect { error: std::io::Error },
    #[error("cannot look up link {link}: {error}")]
    LinkLookup { link: String, error: NetlinkError },
    #[error("cannot list links: {error}")]
    ListLinks { error: NetlinkError },
    #[error("cannot list addresses: {error}")]
    ListAddresses { error: NetlinkError },
    #[error("cannot list routes: {error}")]
    ListRoutes { error: NetlinkError },
    #[error("cannot set link {link} {change}: {error}")]
    SetLink { link: String, change: String, error: NetlinkError },
    #[error("cannot add address {} to link {}: {error}", .address.address, .address.link)]
    AddAddress { address: AddressPlan, error: NetlinkError },
    #[error("cannot remove address {} from link {}: {error}", .address.address, .address.link)]
    RemoveAddress { address: AddressPlan, error: NetlinkError },
    #[error("cannot add route {route}: {error}")]
    AddRoute { route: RoutePlan, error: NetlinkError },
    #[error("cannot remove route {route}: {error}")]
    RemoveRoute { route: RoutePlan, error: NetlinkError },
    #[error("cannot write {path}: {error}")]
    WriteResolvConf { path: PathBuf, error: std::io::Error },
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kernel_errors_keep_their_errno() {
        let e = NetlinkError::os(libc::EEXIST);
        assert!(e.is(libc::EEXIST));
        assert_eq!(e.to_string(), "File exists (os error 17)");
        let address = AddressPlan { link: "eth0".into(), address: "10.0.0.5/24".parse().unwrap() };
        assert_eq!(
            NetError::AddAddress { address, error: NetlinkError::os(libc::EPERM) }.to_string(),
            "cannot add address 10.0.0.5/24 to link eth0: Operation not permitted (os error 1)"
        );
    }
}
