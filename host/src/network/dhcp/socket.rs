//! The client's socket: UDP on 0.0.0.0:68, bound to the link
//! (SO_BINDTODEVICE) with SO_BROADCAST.
//!
//! A UDP socket rather than AF_PACKET: requests go to 255.255.255.255 with
//! the link's address or 0.0.0.0 as source (the kernel allows the limited
//! broadcast out of a bound device without an address or route), and
//! requests made before the address is configured set the broadcast flag,
//! so the server's reply is a broadcast the socket receives. Tested
//! against dnsmasq on a veth without an address. What this gives up: a
//! server that ignores the broadcast flag and unicasts to the offered
//! address before it is configured is not heard (none of dnsmasq, ISC,
//! Kea or qemu's slirp does that).

use super::machine::{Destination, MAX_PACKET};
use socket2::{Domain, Protocol, Socket, Type};
use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4};
use tokio::net::UdpSocket;

pub const CLIENT_PORT: u16 = 68;
pub const SERVER_PORT: u16 = 67;

pub struct DhcpSocket {
    socket: UdpSocket,
}

impl DhcpSocket {
    /// Opens the socket for `link` (needs CAP_NET_RAW for the device bind
    /// and CAP_NET_BIND_SERVICE for port 68).
    pub fn open(link: &str) -> io::Result<Self> {
        let socket = Socket::new(Domain::IPV4, Type::DGRAM, Some(Protocol::UDP))?;
        socket.set_reuse_address(true)?;
        socket.set_broadcast(true)?;
        socket.bind_device(Some(link.as_bytes()))?;
        socket.set_nonblocking(true)?;
        socket.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, CLIENT_PORT)).into())?;
        Ok(Self { socket: UdpSocket::from_std(socket.into())? })
    }

    pub async fn send(&self, packet: &[u8], to: Destination) -> io::Result<()> {
        let ip = match to {
            Destination::Broadcast => Ipv4Addr::BROADCAST,
            Destination::Server(ip) => ip,
        };
        self.socket.send_to(packet, SocketAddrV4::new(ip, SERVER_PORT)).await.map(|_| ())
    }

    /// The next datagram from a server port; `Ok(None)` for one that is
    /// too large or from another port (dropped).
    pub async fn recv<'a>(&self, buf: &'a mut [u8; MAX_PACKET + 1]) -> io::Result<Option<(&'a [u8], SocketAddr)>> {
        let (n, from) = self.socket.recv_from(buf).await?;
        if n > MAX_PACKET || from.port() != SERVER_PORT {
            return Ok(None);
        }
        Ok(Some((&buf[..n], from)))
    }
}
