//! The least a PID 1 can do, booted by `cargo xtask bench-vm BOOTS floor`
//! beside `bronzed` on the same kernel, to show where the boot's floor is.
//!
//! `/floor` in the initramfs says what to do:
//!
//! - `empty`: print the two lines the bench waits for ("API listening",
//!   "network ready") and nothing else. Kernel start → these lines is what
//!   the kernel and the exec of a static program cost, with no userspace work.
//! - `api ADDRESS/PREFIX`: the least an API node can do before it answers:
//!   read a certificate and its key (`/floor.crt`, `/floor.key`, PEM), build a
//!   TLS 1.3 server configuration, give `eth0` the address and bring it and
//!   `lo` up (two ioctls each, the cheapest way the kernel offers), listen on
//!   TCP 50000, then print the two lines; each connection gets a TLS
//!   handshake and `ok`. No config, no state disk, no netlink, no gRPC.
//!
//! It is a benchmark's yardstick, not part of a node: a failure is printed to
//! the kernel log and the program waits forever (PID 1 must not exit).

#![allow(unsafe_code)]

use std::io::Write;
use std::net::Ipv4Addr;
use std::sync::Arc;

/// Writes one line to the kernel log, which the console shows with its timestamp.
fn kmsg(line: &str) {
    if let Ok(mut f) = std::fs::OpenOptions::new().write(true).open("/dev/kmsg") {
        let _ = f.write_all(format!("floor-init: {line}\n").as_bytes());
    }
}

fn hang() -> ! {
    loop {
        std::thread::park();
    }
}

fn main() {
    // The kernel's own devtmpfs, for /dev/kmsg; already there on a second run.
    let _ = nix::mount::mount(Some("devtmpfs"), "/dev", Some("devtmpfs"), nix::mount::MsFlags::empty(), None::<&str>);
    let mode = std::fs::read_to_string("/floor").unwrap_or_default();
    let mut words = mode.split_whitespace();
    let result = match (words.next(), words.next()) {
        (Some("empty"), None) => {
            kmsg("API listening");
            kmsg("network ready");
            Ok(())
        }
        (Some("api"), Some(cidr)) => api(cidr),
        _ => Err(format!("/floor: expected `empty` or `api ADDRESS/PREFIX`, got {mode:?}")),
    };
    if let Err(e) = result {
        kmsg(&format!("error: {e}"));
    }
    hang()
}

fn api(cidr: &str) -> Result<(), String> {
    let (address, prefix) = cidr.split_once('/').ok_or_else(|| format!("{cidr:?}: expected ADDRESS/PREFIX"))?;
    let address: Ipv4Addr = address.parse().map_err(|e| format!("{address:?}: {e}"))?;
    let prefix: u32 = prefix.parse().ok().filter(|p| *p <= 32).ok_or_else(|| format!("{prefix:?}: expected 0-32"))?;
    let netmask = Ipv4Addr::from(u32::MAX.checked_shl(32 - prefix).unwrap_or(0));
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().map_err(|e| e.to_string())?;
    runtime.block_on(async move {
        use rustls_pki_types::pem::PemObject;
        let cert =
            rustls_pki_types::CertificateDer::from_pem_file("/floor.crt").map_err(|e| format!("/floor.crt: {e}"))?;
        let key =
            rustls_pki_types::PrivateKeyDer::from_pem_file("/floor.key").map_err(|e| format!("/floor.key: {e}"))?;
        let config = rustls::ServerConfig::builder_with_provider(Arc::new(rustls::crypto::ring::default_provider()))
            .with_protocol_versions(&[&rustls::version::TLS13])
            .map_err(|e| e.to_string())?
            .with_no_client_auth()
            .with_single_cert(vec![cert], key)
            .map_err(|e| e.to_string())?;
        let acceptor = tokio_rustls::TlsAcceptor::from(Arc::new(config));
        link_up("lo", Ipv4Addr::LOCALHOST, Ipv4Addr::new(255, 0, 0, 0))?;
        link_up("eth0", address, netmask)?;
        kmsg("network ready");
        let listener = tokio::net::TcpListener::bind("0.0.0.0:50000").await.map_err(|e| e.to_string())?;
        kmsg("API listening");
        loop {
            let Ok((stream, _)) = listener.accept().await else { continue };
            let acceptor = acceptor.clone();
            tokio::spawn(async move {
                use tokio::io::AsyncWriteExt;
                if let Ok(mut tls) = acceptor.accept(stream).await {
                    let _ = tls.write_all(b"ok\n").await;
                    let _ = tls.shutdown().await;
                }
            });
        }
    })
}

/// `ifreq` for `name` carrying `address` as its `sockaddr_in`.
fn ifreq(name: &str, address: Ipv4Addr) -> nix::libc::ifreq {
    // SAFETY: ifreq is plain data; all zeroes is a valid value.
    let mut req: nix::libc::ifreq = unsafe { std::mem::zeroed() };
    for (slot, byte) in req.ifr_name.iter_mut().zip(name.bytes().take(nix::libc::IFNAMSIZ - 1)) {
        *slot = byte as nix::libc::c_char;
    }
    // SAFETY: sockaddr_in fits in the sockaddr of the union (both 16 bytes).
    unsafe {
        let sin = &mut req.ifr_ifru.ifru_addr as *mut nix::libc::sockaddr as *mut nix::libc::sockaddr_in;
        (*sin).sin_family = nix::libc::AF_INET as nix::libc::sa_family_t;
        (*sin).sin_addr.s_addr = u32::from(address).to_be();
    }
    req
}

/// Gives `name` its address and netmask and sets it up: SIOCSIFADDR,
/// SIOCSIFNETMASK, SIOCGIFFLAGS, SIOCSIFFLAGS.
fn link_up(name: &str, address: Ipv4Addr, netmask: Ipv4Addr) -> Result<(), String> {
    use std::os::fd::AsRawFd;
    let socket = nix::sys::socket::socket(
        nix::sys::socket::AddressFamily::Inet,
        nix::sys::socket::SockType::Datagram,
        nix::sys::socket::SockFlag::SOCK_CLOEXEC,
        None,
    )
    .map_err(|e| format!("socket: {e}"))?;
    let fd = socket.as_raw_fd();
    let call = |request: nix::libc::Ioctl, req: &mut nix::libc::ifreq, what: &str| {
        // SAFETY: each request takes a pointer to an ifreq, which outlives the call.
        let rc = unsafe { nix::libc::ioctl(fd, request, req as *mut nix::libc::ifreq) };
        if rc < 0 { Err(format!("{what} {name}: {}", std::io::Error::last_os_error())) } else { Ok(()) }
    };
    call(nix::libc::SIOCSIFADDR as _, &mut ifreq(name, address), "SIOCSIFADDR")?;
    call(nix::libc::SIOCSIFNETMASK as _, &mut ifreq(name, netmask), "SIOCSIFNETMASK")?;
    let mut req = ifreq(name, Ipv4Addr::UNSPECIFIED);
    call(nix::libc::SIOCGIFFLAGS as _, &mut req, "SIOCGIFFLAGS")?;
    // SAFETY: SIOCGIFFLAGS filled the flags member of the union.
    unsafe { req.ifr_ifru.ifru_flags |= nix::libc::IFF_UP as nix::libc::c_short };
    call(nix::libc::SIOCSIFFLAGS as _, &mut req, "SIOCSIFFLAGS")
}
