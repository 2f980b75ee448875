//! The runner for one link: looks up the link's MAC, opens the socket,
//! drives a [`Machine`] with the real clock, performs its actions, keeps
//! and publishes the lease. It never configures the link.

use super::lease::{Lease, is_dns_name};
use super::machine::{Action, DhcpState, Identity, MAX_PACKET, Machine};
use super::socket::DhcpSocket;
use super::store::LeaseStore;
use super::{DhcpError, DhcpOptions, escaped};
use futures::TryStreamExt;
use rtnetlink::packet_route::link::LinkAttribute;
use std::sync::Arc;
use std::time::{Duration, SystemTime};
use tokio::sync::watch;
use tokio::time::Instant;

/// How long to wait before looking for a link (or its socket) again.
const LINK_RETRY: Duration = Duration::from_secs(1);

/// Runs the client on `link` until `stop` turns true (or its sender is
/// dropped), publishing the bound lease (or `None`) on `leases`. With
/// `options.release_on_stop` the lease is released on stop. Returns an
/// error only when the link's MAC cannot be read for a reason other than
/// the link not existing yet (it waits for the link).
pub async fn run(
    link: String,
    options: DhcpOptions,
    store: Arc<dyn LeaseStore>,
    leases: watch::Sender<Option<Lease>>,
    stop: watch::Receiver<bool>,
) -> Result<(), DhcpError> {
    let (state, _) = watch::channel(DhcpState::Selecting);
    run_with_state(link, options, store, leases, state, stop).await
}

/// [`run`], also publishing the machine's state.
pub async fn run_with_state(
    link: String,
    options: DhcpOptions,
    store: Arc<dyn LeaseStore>,
    leases: watch::Sender<Option<Lease>>,
    state: watch::Sender<DhcpState>,
    mut stop: watch::Receiver<bool>,
) -> Result<(), DhcpError> {
    let shown = escaped(&link);
    // The link may not exist yet (a VLAN being made, a NIC being renamed).
    let (mac, socket) = loop {
        if *stop.borrow() {
            return Ok(());
        }
        match hardware_address(&link).await? {
            Some(mac) => match DhcpSocket::open(&link) {
                Ok(socket) => break (mac, socket),
                Err(e) => tracing::debug!(link = %shown, "cannot open the DHCP socket yet: {e}"),
            },
            None => tracing::debug!(link = %shown, "waiting for the link to appear"),
        }
        tokio::select! {
            _ = stop.changed() => {}
            _ = tokio::time::sleep(LINK_RETRY) => {}
        }
    };
    let hostname = options.hostname_to_send.clone().filter(|name| {
        let ok = is_dns_name(name);
        if !ok {
            tracing::warn!(link = %shown, "not sending hostname {}: not a DNS name", escaped(name));
        }
        ok
    });
    let mut machine = Machine::new(Identity { link: link.clone(), mac, hostname }, rand::random());
    let kept = match store.load(&link) {
        Ok(kept) => kept,
        Err(e) => {
            tracing::warn!(link = %shown, "ignoring the kept lease: {e}");
            None
        }
    };
    let runner = Runner { link: &link, shown: &shown, socket: &socket, store: &*store, leases: &leases };
    let actions = machine.start(kept, Instant::now(), SystemTime::now());
    runner.perform(&mut machine, actions).await;
    state.send_replace(machine.state());
    let mut buf = Box::new([0u8; MAX_PACKET + 1]);
    loop {
        if *stop.borrow() {
            break;
        }
        let wake = machine.next_wakeup();
        tokio::select! {
            changed = stop.changed() => {
                if changed.is_err() {
                    break;
                }
            }
            got = socket.recv(&mut buf) => match got {
                Ok(Some((bytes, from))) => match machine.on_packet(bytes, Instant::now(), SystemTime::now()) {
                    Ok(actions) => runner.perform(&mut machine, actions).await,
                    Err(why) => tracing::debug!(link = %shown, %from, "ignored a DHCP packet: {why}"),
                },
                Ok(None) => {}
                Err(e) => {
                    tracing::warn!(link = %shown, "DHCP socket receive failed: {e}");
                    tokio::time::sleep(LINK_RETRY).await;
                }
            },
            _ = tokio::time::sleep_until(wake) => {
                let actions = machine.on_timer(Instant::now());
                runner.perform(&mut machine, actions).await;
            }
        }
        state.send_if_modified(|s| std::mem::replace(s, machine.state()) != machine.state());
    }
    if options.release_on_stop {
        let actions = machine.release(Instant::now());
        runner.perform(&mut machine, actions).await;
        state.send_replace(machine.state());
    }
    leases.send_replace(None);
    Ok(())
}

struct Runner<'a> {
    link: &'a str,
    shown: &'a str,
    socket: &'a DhcpSocket,
    store: &'a dyn LeaseStore,
    leases: &'a watch::Sender<Option<Lease>>,
}

impl Runner<'_> {
    /// Performs `actions`; tells `machine` about a send that failed.
    async fn perform(&self, machine: &mut Machine, actions: Vec<Action>) {
        let shown = self.shown;
        for action in actions {
            match action {
                Action::Send { packet, to, kind } => {
                    if let Err(e) = self.socket.send(&packet, to).await {
                        tracing::debug!(link = %shown, "cannot send DHCP{kind:?} to {to:?}: {e}");
                        machine.send_failed(Instant::now());
                    }
                }
                Action::Bound(lease) => {
                    tracing::info!(
                        link = %shown,
                        address = %lease.address,
                        server = %lease.server,
                        seconds = lease.lease_seconds,
                        "DHCP lease bound"
                    );
                    if let Err(e) = self.store.save(&lease) {
                        tracing::warn!(link = %shown, "{e}");
                    }
                    self.leases.send_replace(Some(*lease));
                }
                Action::Lost { reason } => {
                    tracing::info!(link = %shown, "DHCP lease dropped: {reason}");
                    if let Err(e) = self.store.forget(self.link) {
                        tracing::warn!(link = %shown, "{e}");
                    }
                    self.leases.send_replace(None);
                }
                Action::Warn(text) => tracing::warn!(link = %shown, "DHCP: {text}"),
            }
        }
    }
}

/// The MAC of `link`; `None` while the link does not exist.
async fn hardware_address(link: &str) -> Result<Option<[u8; 6]>, DhcpError> {
    let (connection, handle, _) =
        rtnetlink::new_connection().map_err(|error| DhcpError::Netlink { link: escaped(link), error })?;
    let task = tokio::spawn(connection);
    let found = handle.link().get().match_name(link.to_string()).execute().try_next().await;
    task.abort();
    let msg = match found {
        Ok(Some(msg)) => msg,
        Ok(None) => return Ok(None),
        Err(rtnetlink::Error::NetlinkError(e)) if e.raw_code().abs() == libc::ENODEV => return Ok(None),
        Err(e) => return Err(DhcpError::LinkLookup { link: escaped(link), message: e.to_string() }),
    };
    let address = msg.attributes.iter().find_map(|a| match a {
        LinkAttribute::Address(mac) => Some(mac.clone()),
        _ => None,
    });
    match address.as_deref().map(<[u8; 6]>::try_from) {
        Some(Ok(mac)) => Ok(Some(mac)),
        _ => Err(DhcpError::NoHardwareAddress {
            link: escaped(link),
            found: address
                .map(|a| a.iter().map(|b| format!("{b:02x}")).collect::<Vec<_>>().join(":"))
                .unwrap_or_default(),
        }),
    }
}
