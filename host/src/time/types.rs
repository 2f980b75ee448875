//! Types shared by the SNTP client's decision modules (filter, poll,
//! servers, discipline) and the exchange code that produces them.

use std::net::SocketAddr;

/// One validated NTP measurement.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Sample {
    pub server: SocketAddr,
    /// Server clock minus local clock, seconds.
    pub offset: f64,
    /// Round-trip delay, seconds (≥ 0).
    pub rtt: f64,
    pub stratum: u8,
    /// Leap indicator 0..=2 (3 is rejected before it gets here).
    pub leap: u8,
}
