//! The few system calls init needs that `nix` (with the features this
//! workspace enables) does not wrap: the boot-time clock, interface flags
//! through `SIOCGIFFLAGS`/`SIOCSIFFLAGS`, and `finit_module` with the
//! compressed-file flag. The only unsafe code of `init` lives here; every
//! block carries a SAFETY note. Callers above this file see safe functions.
#![allow(unsafe_code)]

use std::ffi::CStr;
use std::fs::File;
use std::io;
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd};
use std::time::Duration;

/// Time since boot, suspend included (`CLOCK_BOOTTIME`), the clock the
/// kernel's own log stamps use, so our console lines line up with dmesg.
/// Returns zero if the clock cannot be read (it always can on Linux).
pub fn boottime() -> Duration {
    let mut ts = libc::timespec { tv_sec: 0, tv_nsec: 0 };
    // SAFETY: `ts` is a valid, exclusively borrowed timespec for the call.
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_BOOTTIME, &mut ts) };
    if rc != 0 {
        return Duration::ZERO;
    }
    Duration::new(u64::try_from(ts.tv_sec).unwrap_or(0), u32::try_from(ts.tv_nsec).unwrap_or(0))
}

/// `IFNAMSIZ` less the terminating NUL.
const MAX_IFNAME: usize = libc::IFNAMSIZ - 1;

/// Sets or clears `IFF_UP` on the link `name`, keeping its other flags.
pub fn set_link_up(name: &str, up: bool) -> io::Result<()> {
    if name.is_empty() || name.len() > MAX_IFNAME || name.contains('\0') {
        return Err(io::Error::new(io::ErrorKind::InvalidInput, format!("invalid link name {name:?}")));
    }
    // SAFETY: plain socket(2) call; the result is checked before use.
    let raw = unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
    if raw < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: `raw` is a freshly created descriptor that nothing else owns.
    let sock = unsafe { OwnedFd::from_raw_fd(raw) };

    // SAFETY: ifreq is a C struct of a char array and a union of plain
    // integers and pointers; all-zero is a valid value (empty name, no flags).
    let mut req: libc::ifreq = unsafe { std::mem::zeroed() };
    for (dst, src) in req.ifr_name.iter_mut().zip(name.bytes()) {
        *dst = src as libc::c_char;
    }
    // SAFETY: `req` is a valid ifreq with a NUL-terminated name (checked
    // length < IFNAMSIZ, rest zero); SIOCGIFFLAGS writes only `ifru_flags`.
    // The request type differs between glibc and musl, hence `as _`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCGIFFLAGS as _, &mut req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    // SAFETY: SIOCGIFFLAGS succeeded, so the union holds `ifru_flags`.
    let flags = unsafe { req.ifr_ifru.ifru_flags };
    let up_flag = libc::IFF_UP as libc::c_short;
    let wanted = if up { flags | up_flag } else { flags & !up_flag };
    if wanted == flags {
        return Ok(());
    }
    req.ifr_ifru.ifru_flags = wanted;
    // SAFETY: as above; SIOCSIFFLAGS only reads `req`.
    if unsafe { libc::ioctl(sock.as_raw_fd(), libc::SIOCSIFFLAGS as _, &req) } < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

/// Names of every network interface, from `if_nameindex(3)` (netlink
/// underneath): unlike /sys/class/net it still works at the end of a
/// shutdown, after /sys is unmounted.
pub fn link_names() -> io::Result<Vec<String>> {
    // SAFETY: no arguments; the result is checked for NULL before use.
    let list = unsafe { libc::if_nameindex() };
    if list.is_null() {
        return Err(io::Error::last_os_error());
    }
    let mut names = Vec::new();
    let mut at = list;
    loop {
        // SAFETY: `at` points into the array if_nameindex returned, which
        // ends with an entry whose index is 0 and name NULL; we stop there.
        let entry = unsafe { &*at };
        if entry.if_index == 0 || entry.if_name.is_null() {
            break;
        }
        // SAFETY: a non-NULL `if_name` is a NUL-terminated string owned by
        // the list, alive until if_freenameindex below; copied out first.
        names.push(unsafe { CStr::from_ptr(entry.if_name) }.to_string_lossy().into_owned());
        // SAFETY: the terminator has not been reached, so the next entry is
        // still inside the array.
        at = unsafe { at.add(1) };
    }
    // SAFETY: `list` came from if_nameindex and is freed once.
    unsafe { libc::if_freenameindex(list) };
    Ok(names)
}

/// `MODULE_INIT_COMPRESSED_FILE`: the kernel decompresses the module
/// itself (5.17+). `nix::kmod::ModuleInitFlags` has no such flag.
const MODULE_INIT_COMPRESSED_FILE: libc::c_uint = 4;

/// `finit_module(fd, params, MODULE_INIT_COMPRESSED_FILE)`: loads a `.ko.xz`
/// or `.ko.zst` the kernel can decompress (6.1 Debian kernels return
/// `EOPNOTSUPP`; their modules are plain `.ko`).
pub fn finit_module_compressed(file: &File, params: &CStr) -> io::Result<()> {
    // SAFETY: the descriptor is open for the call's duration (borrowed
    // `file`), `params` is a valid NUL-terminated string, and the flags are
    // a plain integer the kernel validates.
    let rc = unsafe {
        libc::syscall(libc::SYS_finit_module, file.as_raw_fd(), params.as_ptr(), MODULE_INIT_COMPRESSED_FILE)
    };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn boottime_advances() {
        let a = boottime();
        let b = boottime();
        assert!(a > Duration::ZERO);
        assert!(b >= a);
    }

    #[test]
    fn lists_the_loopback_link() {
        let names = link_names().unwrap();
        assert!(names.iter().any(|n| n == "lo"), "{names:?}");
    }

    #[test]
    fn link_names_are_checked_before_any_syscall() {
        for bad in ["", "a-name-longer-than-15", "nul\0"] {
            let err = set_link_up(bad, true).unwrap_err();
            assert_eq!(err.kind(), io::ErrorKind::InvalidInput, "{bad:?}");
        }
    }
}
