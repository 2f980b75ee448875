//! The kernel clock through `adjtimex(2)`: a read-only query (works
//! unprivileged, for observe-only reporting) and, with CAP_SYS_TIME, steps,
//! PLL slews, the synchronised flags, leap warnings, and an RTC write after
//! a step. The only unsafe code of the time subsystem lives here.
#![allow(unsafe_code)]

use super::discipline::Leap;
use serde::{Deserialize, Serialize};
use std::io;

/// What the kernel says about its clock.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct KernelClockState {
    /// `TIME_OK`, `TIME_INS`, `TIME_DEL`, `TIME_OOP`, `TIME_WAIT` or `TIME_ERROR`.
    pub state: String,
    /// Whether `STA_UNSYNC` is clear.
    pub synchronised: bool,
    pub max_error_us: i64,
    pub est_error_us: i64,
    /// PLL time constant.
    pub time_constant: i64,
    /// Frequency correction, ppm.
    pub frequency_ppm: f64,
}

fn state_name(code: i32) -> &'static str {
    match code {
        libc::TIME_OK => "TIME_OK",
        libc::TIME_INS => "TIME_INS",
        libc::TIME_DEL => "TIME_DEL",
        libc::TIME_OOP => "TIME_OOP",
        libc::TIME_WAIT => "TIME_WAIT",
        _ => "TIME_ERROR",
    }
}

fn adjtimex(tx: &mut libc::timex) -> io::Result<i32> {
    // SAFETY: `tx` is a valid, exclusively borrowed timex for the call.
    let rc = unsafe { libc::adjtimex(tx) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(rc) }
}

fn zeroed_timex() -> libc::timex {
    // SAFETY: timex is a plain C struct of integers; all-zero is valid (modes = 0 = read only).
    unsafe { std::mem::zeroed() }
}

/// Reads the kernel clock state without changing anything.
// `c_long` is not i64 on every target.
#[allow(clippy::unnecessary_cast)]
pub fn read_state() -> io::Result<KernelClockState> {
    let mut tx = zeroed_timex();
    let code = adjtimex(&mut tx)?;
    Ok(KernelClockState {
        state: state_name(code).into(),
        synchronised: tx.status & libc::STA_UNSYNC == 0,
        max_error_us: tx.maxerror as i64,
        est_error_us: tx.esterror as i64,
        time_constant: tx.constant as i64,
        frequency_ppm: tx.freq as f64 / 65536.0,
    })
}

/// Whether this process may set the clock (CAP_SYS_TIME in the effective set).
pub fn can_set_time() -> bool {
    const CAP_SYS_TIME: u32 = 25;
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("CapEff:")).map(|l| l[7..].trim().to_string()))
        .and_then(|hex| u64::from_str_radix(&hex, 16).ok())
        .is_some_and(|caps| caps & (1 << CAP_SYS_TIME) != 0)
}

/// Steps the clock by `offset` seconds (`ADJ_SETOFFSET`).
pub fn step(offset: f64) -> io::Result<()> {
    let mut tx = zeroed_timex();
    tx.modes = libc::ADJ_SETOFFSET | libc::ADJ_NANO;
    // The nanosecond part must be non-negative: borrow a second.
    let mut secs = offset.trunc() as i64;
    let mut nanos = ((offset - offset.trunc()) * 1e9).round() as i64;
    if nanos < 0 {
        secs -= 1;
        nanos += 1_000_000_000;
    }
    tx.time.tv_sec = secs as _;
    tx.time.tv_usec = nanos as _;
    adjtimex(&mut tx).map(|_| ())
}

/// Slews by `offset` seconds with the kernel PLL.
pub fn slew(offset: f64, time_constant: i64) -> io::Result<()> {
    let mut tx = zeroed_timex();
    tx.modes = libc::ADJ_OFFSET | libc::ADJ_NANO | libc::ADJ_STATUS | libc::ADJ_TIMECONST;
    tx.offset = (offset * 1e9).round().clamp(-5e8, 5e8) as libc::c_long;
    tx.status = libc::STA_PLL;
    tx.constant = time_constant as libc::c_long;
    adjtimex(&mut tx).map(|_| ())
}

/// Tells the kernel the clock is synchronised (clears `STA_UNSYNC`, which
/// also turns on its 11-minute RTC sync) with the given error bounds, and
/// arms or clears a leap second.
pub fn mark_synchronised(max_error_us: i64, est_error_us: i64, leap: Option<Leap>) -> io::Result<()> {
    let mut current = zeroed_timex();
    adjtimex(&mut current)?;
    let mut tx = zeroed_timex();
    tx.modes = libc::ADJ_MAXERROR | libc::ADJ_ESTERROR | libc::ADJ_STATUS;
    tx.maxerror = max_error_us as libc::c_long;
    tx.esterror = est_error_us as libc::c_long;
    let mut status = (current.status | libc::STA_PLL) & !(libc::STA_UNSYNC | libc::STA_INS | libc::STA_DEL);
    match leap {
        Some(Leap::Insert) => status |= libc::STA_INS,
        Some(Leap::Delete) => status |= libc::STA_DEL,
        None => {}
    }
    tx.status = status;
    adjtimex(&mut tx).map(|_| ())
}

/// Writes the system time to the hardware clock (`/dev/rtc0`, UTC).
pub fn write_rtc() -> io::Result<()> {
    use std::os::fd::AsRawFd;
    /// `struct rtc_time` from <linux/rtc.h>.
    #[repr(C)]
    struct RtcTime {
        tm_sec: libc::c_int,
        tm_min: libc::c_int,
        tm_hour: libc::c_int,
        tm_mday: libc::c_int,
        tm_mon: libc::c_int,
        tm_year: libc::c_int,
        tm_wday: libc::c_int,
        tm_yday: libc::c_int,
        tm_isdst: libc::c_int,
    }
    /// `_IOW('p', 0x0a, struct rtc_time)`.
    const RTC_SET_TIME: u64 = 0x4024_700a;
    let now = time::OffsetDateTime::now_utc();
    let tm = RtcTime {
        tm_sec: now.second() as i32,
        tm_min: now.minute() as i32,
        tm_hour: now.hour() as i32,
        tm_mday: now.day() as i32,
        tm_mon: now.month() as i32 - 1,
        tm_year: now.year() - 1900,
        tm_wday: 0,
        tm_yday: 0,
        tm_isdst: 0,
    };
    let rtc = std::fs::OpenOptions::new().write(true).open("/dev/rtc0")?;
    // SAFETY: the fd is open for the call; `tm` is a valid rtc_time the
    // kernel only reads.
    let rc = unsafe { libc::ioctl(rtc.as_raw_fd(), RTC_SET_TIME as _, &tm as *const RtcTime) };
    if rc < 0 { Err(io::Error::last_os_error()) } else { Ok(()) }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reading_the_kernel_clock_needs_no_privilege() {
        let state = read_state().expect("read-only adjtimex");
        assert!(state.state.starts_with("TIME_"), "{state:?}");
        assert!((0..=10).contains(&state.time_constant), "{state:?}");
    }
}
