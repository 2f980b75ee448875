//! Small early-boot settings of the machine: Ctrl-Alt-Del, the loopback
//! link, the kernel hostname; and a last-resort "every link down" for
//! shutdown. Behind [`SystemControl`] so boot runs against a fake.
//!
//! Links beyond `lo` belong to the network controllers (rtnetlink); the
//! ioctl path here exists only because `lo` must be up before anything
//! else runs, and because a shutdown must bring links down even when the
//! network subsystem is gone.

use super::sys;
use std::io;

/// Kernel settings init changes at boot.
pub trait SystemControl: Send + Sync {
    /// `false`: Ctrl-Alt-Del sends SIGINT to PID 1 (which reboots
    /// cleanly) instead of rebooting on the spot.
    fn set_cad_enabled(&self, enabled: bool) -> io::Result<()>;

    /// Sets `IFF_UP` on `lo`.
    fn loopback_up(&self) -> io::Result<()>;

    fn set_hostname(&self, name: &str) -> io::Result<()>;

    /// Sets `RLIMIT_NOFILE` of this process (and so of what it starts).
    fn set_fd_limit(&self, soft: u64, hard: u64) -> io::Result<()>;
}

/// The real kernel.
#[derive(Debug, Default, Clone, Copy)]
pub struct KernelSystem;

impl SystemControl for KernelSystem {
    fn set_cad_enabled(&self, enabled: bool) -> io::Result<()> {
        nix::sys::reboot::set_cad_enabled(enabled).map_err(io::Error::from)
    }

    fn loopback_up(&self) -> io::Result<()> {
        loopback_up()
    }

    fn set_hostname(&self, name: &str) -> io::Result<()> {
        nix::unistd::sethostname(name).map_err(io::Error::from)
    }

    fn set_fd_limit(&self, soft: u64, hard: u64) -> io::Result<()> {
        nix::sys::resource::setrlimit(nix::sys::resource::Resource::RLIMIT_NOFILE, soft, hard).map_err(io::Error::from)
    }
}

/// Brings `lo` up with `SIOCSIFFLAGS`. Already up is success.
pub fn loopback_up() -> io::Result<()> {
    sys::set_link_up("lo", true)
}

/// Makes Ctrl-Alt-Del arrive as SIGINT.
pub fn disable_cad() -> io::Result<()> {
    KernelSystem.set_cad_enabled(false)
}

/// Sets the kernel hostname (`sethostname(2)`).
pub fn set_hostname(name: &str) -> io::Result<()> {
    KernelSystem.set_hostname(name)
}

#[derive(Debug, thiserror::Error)]
#[error("cannot bring link {link} down: {error}")]
pub struct LinkError {
    pub link: String,
    pub error: io::Error,
}

/// Clears `IFF_UP` on every link but `lo`. A fallback for the shutdown's
/// "links down" step when the network subsystem cannot do it: a virtio-net
/// link left up makes poweroff hang now and then (notes/vm-boot.md). It
/// needs neither /proc nor /sys, which are unmounted by then.
pub fn all_links_down() -> Vec<LinkError> {
    let names = match sys::link_names() {
        Ok(n) => n,
        Err(error) => return vec![LinkError { link: "*".into(), error }],
    };
    names
        .into_iter()
        .filter(|n| n != "lo")
        .filter_map(|link| sys::set_link_up(&link, false).err().map(|error| LinkError { link, error }))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn link_errors_name_the_link() {
        let e = LinkError { link: "eth0".into(), error: io::Error::from_raw_os_error(libc::EPERM) };
        assert_eq!(e.to_string(), "cannot bring link eth0 down: Operation not permitted (os error 1)");
    }
}
