//! Server selection over the configured NTP servers and their resolved
//! addresses: stick to the last good address, fail over in a fixed order,
//! hold off addresses that sent a kiss-o'-death (DENY/RSTR for an hour,
//! RATE for an interval that grows with every RATE), schedule another
//! resolution of names that did not resolve, and name the other servers'
//! addresses for a second opinion.
//!
//! Pure: no sockets, no DNS, no clock reads. The controller passes `now`,
//! performs the lookups and exchanges, and reports what happened. Hold-offs
//! live in [`HoldOffs`], which the controller keeps across config changes
//! and restarts, so a held-off address is never asked early whatever else
//! happens.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long an address that answered KoD DENY or RSTR is left alone.
pub const DEFAULT_DENY_HOLD_OFF: Duration = Duration::from_secs(3600);
/// First retry of a name that did not resolve; doubled per failure.
pub const RESOLVE_RETRY_MIN: Duration = Duration::from_secs(1);
/// Longest wait between two resolutions of a name that does not resolve.
pub const RESOLVE_RETRY_MAX: Duration = Duration::from_secs(300);

/// (server index, address index) in the configured order.
type Pos = (usize, usize);

/// One address's hold-off after a kiss-o'-death.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HoldOff {
    /// Until when (`None`: the hold-off does not fit in an `Instant`, i.e.
    /// forever).
    pub until: Option<Instant>,
    /// The kiss code that caused it (`DENY`, `RSTR`, `RATE`).
    pub code: String,
    /// The last RATE hold-off's length: the next RATE doubles it.
    rate_hold: Duration,
}

/// Addresses held off after a kiss-o'-death, by address. Outlives any one
/// [`ServerSet`]: a new config, a re-resolution or a controller restart
/// builds a new set with the same hold-offs.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct HoldOffs {
    by_addr: HashMap<SocketAddr, HoldOff>,
}

impl HoldOffs {
    /// The hold-off of `addr` if it is still in force at `now`.
    pub fn active(&self, addr: SocketAddr, now: Instant) -> Option<&HoldOff> {
        self.by_addr.get(&addr).filter(|h| h.until.is_none_or(|until| now < until))
    }

    /// Holds `addr` off until `now + hold_off` for `code`; never shortens a
    /// hold-off in force.
    fn hold(&mut self, addr: SocketAddr, now: Instant, hold_off: Duration, code: &str) {
        let until = now.checked_add(hold_off);
        let entry = self.by_addr.entry(addr).or_insert_with(|| HoldOff {
            until,
            code: code.to_string(),
            rate_hold: Duration::ZERO,
        });
        let longer = match (entry.until, until) {
            (Some(a), Some(b)) => b > a,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if longer {
            entry.until = until;
            entry.code = code.to_string();
        }
    }

    /// The earliest end of a hold-off in force at `now`.
    fn next_end(&self, now: Instant) -> Option<Instant> {
        self.by_addr.values().filter_map(|h| h.until).filter(|&until| until > now).min()
    }
}

/// When a name that did not resolve is looked up again.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Retry {
    /// `None`: at once (never tried yet).
    at: Option<Instant>,
    failures: u32,
}

#[derive(Debug, Clone)]
struct Server {
    name: String,
    addrs: Vec<SocketAddr>,
    /// Set while the name has no addresses.
    retry: Option<Retry>,
}

/// The configured servers with their addresses, in configuration order.
#[derive(Debug, Clone)]
pub struct ServerSet {
    servers: Vec<Server>,
    holds: HoldOffs,
    /// The last good address, or where failover moved to.
    selected: Option<Pos>,
}

impl ServerSet {
    /// `servers`: each server as configured (e.g. `"time.example:123"`) with
    /// its resolved addresses, in the order they should be tried. A server
    /// without addresses is due for resolution at once.
    pub fn new(servers: Vec<(String, Vec<SocketAddr>)>) -> Self {
        let servers = servers
            .into_iter()
            .map(|(name, addrs)| {
                let retry = addrs.is_empty().then_some(Retry { at: None, failures: 0 });
                Server { name, addrs, retry }
            })
            .collect();
        Self { servers, holds: HoldOffs::default(), selected: None }
    }

    /// The configured names, none resolved yet.
    pub fn named(names: &[String]) -> Self {
        Self::new(names.iter().map(|n| (n.clone(), Vec::new())).collect())
    }

    /// The same set with earlier hold-offs in force.
    pub fn with_holds(mut self, holds: HoldOffs) -> Self {
        self.holds = holds;
        self
    }

    /// The hold-offs, to keep beyond this set.
    pub fn holds(&self) -> &HoldOffs {
        &self.holds
    }

    /// True when there is no address to ask at all (no servers, or none of
    /// them resolved).
    pub fn is_empty(&self) -> bool {
        self.servers.iter().all(|s| s.addrs.is_empty())
    }

    /// The server's name as configured, for status and logs.
    pub fn name(&self, index: usize) -> Option<&str> {
        self.servers.get(index).map(|s| s.name.as_str())
    }

    /// The configured name an address belongs to (the first, if shared).
    pub fn name_of(&self, addr: SocketAddr) -> Option<&str> {
        self.servers.iter().find(|s| s.addrs.contains(&addr)).map(|s| s.name.as_str())
    }

    /// The configured names that have no address (yet).
    pub fn unresolved_names(&self) -> Vec<&str> {
        self.servers.iter().filter(|s| s.addrs.is_empty()).map(|s| s.name.as_str()).collect()
    }

    /// The addresses held off at `now`, with their server's name, in order.
    pub fn held_addresses(&self, now: Instant) -> Vec<(&str, SocketAddr, &HoldOff)> {
        let mut out: Vec<(&str, SocketAddr, &HoldOff)> = Vec::new();
        for server in &self.servers {
            for &addr in &server.addrs {
                if let Some(hold) = self.holds.active(addr, now)
                    && !out.iter().any(|(_, a, _)| *a == addr)
                {
                    out.push((server.name.as_str(), addr, hold));
                }
            }
        }
        out
    }

    /// The address to ask now, with its server's index: the last good one
    /// while usable, else the first usable one in order. `None` when every
    /// address is held off (or there are none).
    pub fn current(&self, now: Instant) -> Option<(usize, SocketAddr)> {
        self.current_pos(now).and_then(|p| self.addr(p).map(|a| (p.0, a)))
    }

    /// When something may change while nothing is usable: the end of the
    /// first hold-off or the next resolution retry, whichever comes first.
    /// `None` when neither will ever happen.
    pub fn next_change(&self, now: Instant) -> Option<Instant> {
        let retry = self.servers.iter().filter_map(|s| s.retry).map(|r| r.at.unwrap_or(now)).min();
        match (self.holds.next_end(now), retry) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    /// Indexes of the servers whose name is due for (another) resolution.
    pub fn resolutions_due(&self, now: Instant) -> Vec<usize> {
        (0..self.servers.len())
            .filter(|&i| self.servers[i].retry.is_some_and(|r| r.at.is_none_or(|at| at <= now)))
            .collect()
    }

    /// The result of resolving server `index` at `now`. No addresses: the
    /// name is tried again after a delay that doubles per failure
    /// ([`RESOLVE_RETRY_MIN`] to [`RESOLVE_RETRY_MAX`]), which is returned.
    pub fn on_resolved(&mut self, index: usize, addrs: Vec<SocketAddr>, now: Instant) -> Option<Duration> {
        let selected_addr = self.selected.and_then(|p| self.addr(p));
        let server = self.servers.get_mut(index)?;
        let delay = if addrs.is_empty() {
            let failures = server.retry.map_or(0, |r| r.failures).saturating_add(1);
            let delay = RESOLVE_RETRY_MIN.saturating_mul(1 << (failures - 1).min(20)).min(RESOLVE_RETRY_MAX);
            server.retry = Some(Retry { at: now.checked_add(delay), failures });
            Some(delay)
        } else {
            server.retry = None;
            None
        };
        server.addrs = addrs;
        // Positions of this server may have moved: find the selection again.
        self.selected = selected_addr.and_then(|a| self.positions().find(|&p| self.addr(p) == Some(a)));
        delay
    }

    /// `addr` answered well: stay with it.
    pub fn on_success(&mut self, addr: SocketAddr) {
        if let Some(h) = self.holds.by_addr.get_mut(&addr) {
            h.rate_hold = Duration::ZERO;
        }
        if self.selected.and_then(|p| self.addr(p)) == Some(addr) {
            return;
        }
        let found = self.positions().find(|&p| self.addr(p) == Some(addr));
        if found.is_some() {
            self.selected = found;
        }
    }

    /// `addr` failed (timeout, bad reply, unknown kiss code, outvoted): if
    /// it is the current address, move to the next usable one, through
    /// every address of every server, wrapping around. A failure of any
    /// other address (e.g. a second opinion) does not move the selection.
    pub fn on_failure(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(p) = self.current_pos(now).filter(|&p| self.addr(p) == Some(addr)) {
            self.selected = self.next_usable_after(p, now);
        }
    }

    /// KoD DENY or RSTR (`code`) from `addr`: unusable until
    /// `now + hold_off` ([`DEFAULT_DENY_HOLD_OFF`] normally); fails over if
    /// it was current.
    pub fn on_kod_deny(&mut self, addr: SocketAddr, code: &str, now: Instant, hold_off: Duration) {
        let current = self.current_pos(now).filter(|&p| self.addr(p) == Some(addr));
        self.holds.hold(addr, now, hold_off, code);
        if let Some(p) = current {
            self.selected = self.next_usable_after(p, now);
        }
    }

    /// KoD RATE from `addr`: held off for twice its previous RATE hold-off,
    /// at least `min` and at most `max` (RFC 5905 §7.4: reduce the rate each
    /// time), and failed over from if it was current. Returns the hold-off.
    pub fn on_kod_rate(&mut self, addr: SocketAddr, now: Instant, min: Duration, max: Duration) -> Duration {
        let current = self.current_pos(now).filter(|&p| self.addr(p) == Some(addr));
        let previous = self.holds.by_addr.get(&addr).map_or(Duration::ZERO, |h| h.rate_hold);
        let hold_off = previous.saturating_mul(2).max(min).min(max.max(min));
        self.holds.hold(addr, now, hold_off, "RATE");
        if let Some(h) = self.holds.by_addr.get_mut(&addr) {
            h.rate_hold = hold_off;
        }
        if let Some(p) = current {
            self.selected = self.next_usable_after(p, now);
        }
        hold_off
    }

    /// Usable addresses of the servers other than `addr`'s, in order and
    /// without duplicates: independent sources for a second opinion.
    pub fn others(&self, addr: SocketAddr, now: Instant) -> Vec<SocketAddr> {
        let mut out = Vec::new();
        for server in self.servers.iter().filter(|s| !s.addrs.contains(&addr)) {
            for &a in &server.addrs {
                if self.usable(a, now) && !out.contains(&a) {
                    out.push(a);
                }
            }
        }
        out
    }

    fn addr(&self, (s, a): Pos) -> Option<SocketAddr> {
        self.servers.get(s).and_then(|server| server.addrs.get(a)).copied()
    }

    fn usable(&self, addr: SocketAddr, now: Instant) -> bool {
        self.holds.active(addr, now).is_none()
    }

    /// Every position in order: server order, then address order.
    fn positions(&self) -> impl Iterator<Item = Pos> + '_ {
        self.servers.iter().enumerate().flat_map(|(s, server)| (0..server.addrs.len()).map(move |a| (s, a)))
    }

    fn current_pos(&self, now: Instant) -> Option<Pos> {
        if let Some(p) = self.selected
            && self.addr(p).is_some_and(|a| self.usable(a, now))
        {
            return Some(p);
        }
        self.positions().find(|&p| self.addr(p).is_some_and(|a| self.usable(a, now)))
    }

    /// The first usable position after `from`, wrapping around and ending
    /// with `from` itself.
    fn next_usable_after(&self, from: Pos, now: Instant) -> Option<Pos> {
        let all: Vec<Pos> = self.positions().collect();
        let start = all.iter().position(|&p| p == from).map_or(0, |i| i + 1);
        (0..all.len())
            .map(|k| all[(start + k) % all.len()])
            .find(|&p| self.addr(p).is_some_and(|a| self.usable(a, now)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn a(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    fn secs(s: u64) -> Duration {
        Duration::from_secs(s)
    }

    const A1: &str = "192.0.2.1:123";
    const A2: &str = "192.0.2.2:123";
    const B1: &str = "198.51.100.1:123";
    const C1: &str = "203.0.113.1:123";
    const C2: &str = "[2001:db8::1]:123";

    /// a.example → A1, A2; b.example → B1; c.example → C1, C2.
    fn set() -> ServerSet {
        ServerSet::new(vec![
            ("a.example:123".into(), vec![a(A1), a(A2)]),
            ("b.example:123".into(), vec![a(B1)]),
            ("c.example:123".into(), vec![a(C1), a(C2)]),
        ])
    }

    #[test]
    fn starts_with_the_first_address() {
        let s = set();
        let now = Instant::now();
        assert_eq!(s.current(now), Some((0, a(A1))));
        assert_eq!(s.name(2), Some("c.example:123"));
        assert_eq!(s.name(3), None);
        assert_eq!(s.name_of(a(C2)), Some("c.example:123"));
        assert_eq!(s.name_of(a("192.0.2.99:123")), None);
        assert!(!s.is_empty());
        assert!(s.resolutions_due(now).is_empty());
        assert_eq!(s.next_change(now), None);
    }

    #[test]
    fn sticks_to_the_last_good_address() {
        let mut s = set();
        let now = Instant::now();
        s.on_success(a(B1));
        assert_eq!(s.current(now), Some((1, a(B1))));
        assert_eq!(s.current(now + Duration::from_secs(86_400)), Some((1, a(B1))));
        // A failure of another address (a second opinion) does not move it.
        s.on_failure(a(C1), now);
        assert_eq!(s.current(now), Some((1, a(B1))));
        // Unknown addresses are ignored.
        s.on_success(a("192.0.2.99:123"));
        assert_eq!(s.current(now), Some((1, a(B1))));
    }

    #[test]
    fn fails_over_across_addresses_and_servers_and_wraps() {
        let mut s = set();
        let now = Instant::now();
        let mut seen = Vec::new();
        for _ in 0..6 {
            let (i, addr) = s.current(now).unwrap();
            seen.push((i, addr));
            s.on_failure(addr, now);
        }
        assert_eq!(seen, vec![(0, a(A1)), (0, a(A2)), (1, a(B1)), (2, a(C1)), (2, a(C2)), (0, a(A1))]);
    }

    #[test]
    fn failover_from_a_sticky_address_continues_after_it() {
        let mut s = set();
        let now = Instant::now();
        s.on_success(a(C1));
        s.on_failure(a(C1), now);
        assert_eq!(s.current(now), Some((2, a(C2))));
        s.on_failure(a(C2), now);
        assert_eq!(s.current(now), Some((0, a(A1))));
    }

    #[test]
    fn deny_holds_off_until_expiry() {
        let mut s = set();
        let t0 = Instant::now();
        s.on_kod_deny(a(A1), "DENY", t0, DEFAULT_DENY_HOLD_OFF);
        assert_eq!(s.current(t0), Some((0, a(A2))));
        assert_eq!(s.holds().active(a(A1), t0).map(|h| h.code.as_str()), Some("DENY"));
        // Failover skips the held address: A2 → B1 → C1 → C2 → A2.
        s.on_failure(a(A2), t0);
        s.on_failure(a(B1), t0);
        s.on_failure(a(C1), t0);
        s.on_failure(a(C2), t0);
        assert_eq!(s.current(t0), Some((0, a(A2))));
        let later = t0 + Duration::from_secs(3599);
        s.on_failure(a(A2), later);
        s.on_failure(a(B1), later);
        s.on_failure(a(C1), later);
        s.on_failure(a(C2), later);
        assert_eq!(s.current(later), Some((0, a(A2))));
        // After the hour A1 is back in the rotation.
        let expired = t0 + Duration::from_secs(3600);
        assert!(s.holds().active(a(A1), expired).is_none());
        s.on_failure(a(C2), expired);
        assert_eq!(s.current(expired), Some((0, a(A2))));
        s.on_failure(a(A2), expired);
        s.on_failure(a(B1), expired);
        s.on_failure(a(C1), expired);
        s.on_failure(a(C2), expired);
        assert_eq!(s.current(expired), Some((0, a(A1))));
    }

    #[test]
    fn all_held_off_means_none_until_one_expires() {
        let mut s = ServerSet::new(vec![("a".into(), vec![a(A1)]), ("b".into(), vec![a(B1)])]);
        let t0 = Instant::now();
        s.on_success(a(B1));
        s.on_kod_deny(a(B1), "RSTR", t0, secs(60));
        assert_eq!(s.current(t0), Some((0, a(A1))));
        s.on_kod_deny(a(A1), "DENY", t0, secs(120));
        assert_eq!(s.current(t0), None);
        let held: Vec<(&str, SocketAddr, &str)> =
            s.held_addresses(t0).into_iter().map(|(n, a, h)| (n, a, h.code.as_str())).collect();
        assert_eq!(held, vec![("a", a(A1), "DENY"), ("b", a(B1), "RSTR")]);
        // The wait ends exactly when the first hold-off does.
        assert_eq!(s.next_change(t0), Some(t0 + secs(60)));
        assert_eq!(s.current(t0 + Duration::from_secs(59)), None);
        assert_eq!(s.current(t0 + Duration::from_secs(60)), Some((1, a(B1))));
        assert_eq!(s.next_change(t0 + secs(60)), Some(t0 + secs(120)));
        assert_eq!(s.current(t0 + Duration::from_secs(120)), Some((0, a(A1))));
        assert_eq!(s.next_change(t0 + secs(120)), None);
    }

    #[test]
    fn a_second_deny_never_shortens_the_hold_off() {
        let mut s = ServerSet::new(vec![("a".into(), vec![a(A1)])]);
        let t0 = Instant::now();
        s.on_kod_deny(a(A1), "DENY", t0, Duration::from_secs(600));
        s.on_kod_deny(a(A1), "DENY", t0, Duration::from_secs(10));
        assert_eq!(s.current(t0 + Duration::from_secs(599)), None);
        assert_eq!(s.current(t0 + Duration::from_secs(600)), Some((0, a(A1))));
    }

    #[test]
    fn deny_of_a_non_current_address_keeps_the_selection() {
        let mut s = set();
        let now = Instant::now();
        s.on_success(a(B1));
        s.on_kod_deny(a(C1), "DENY", now, DEFAULT_DENY_HOLD_OFF);
        assert_eq!(s.current(now), Some((1, a(B1))));
        s.on_failure(a(B1), now);
        assert_eq!(s.current(now), Some((2, a(C2))));
    }

    #[test]
    fn hold_offs_outlive_the_set_they_were_made_in() {
        let t0 = Instant::now();
        let mut s = ServerSet::new(vec![("a".into(), vec![a(A1)]), ("b".into(), vec![a(B1)])]);
        s.on_kod_deny(a(A1), "DENY", t0, DEFAULT_DENY_HOLD_OFF);
        s.on_kod_deny(a(B1), "RSTR", t0, DEFAULT_DENY_HOLD_OFF);
        assert_eq!(s.current(t0), None);
        // A new config (another order, another server) built with the kept
        // hold-offs still never offers the held addresses.
        let rebuilt =
            ServerSet::new(vec![("c".into(), vec![a(C1)]), ("b".into(), vec![a(B1)]), ("a-again".into(), vec![a(A1)])])
                .with_holds(s.holds().clone());
        assert_eq!(rebuilt.current(t0 + secs(1)), Some((0, a(C1))));
        assert_eq!(rebuilt.others(a(C1), t0 + secs(1)), Vec::<SocketAddr>::new());
        let only_held = ServerSet::new(vec![("a".into(), vec![a(A1)])]).with_holds(s.holds().clone());
        assert_eq!(only_held.current(t0 + secs(3599)), None);
        assert_eq!(only_held.next_change(t0 + secs(3599)), Some(t0 + DEFAULT_DENY_HOLD_OFF));
        assert_eq!(only_held.current(t0 + DEFAULT_DENY_HOLD_OFF), Some((0, a(A1))));
    }

    #[test]
    fn rate_fails_over_and_holds_off_longer_each_time() {
        let mut s = ServerSet::new(vec![("a".into(), vec![a(A1)]), ("b".into(), vec![a(B1)])]);
        let t0 = Instant::now();
        assert_eq!(s.on_kod_rate(a(A1), t0, secs(2), secs(16)), secs(2));
        assert_eq!(s.current(t0), Some((1, a(B1))), "fails over at once");
        assert_eq!(s.holds().active(a(A1), t0).map(|h| h.code.as_str()), Some("RATE"));
        // B answers; A is back after its hold-off but B stays selected.
        s.on_success(a(B1));
        assert_eq!(s.current(t0 + secs(2)), Some((1, a(B1))));
        // Every further RATE doubles the hold-off, up to the maximum.
        let t1 = t0 + secs(2);
        assert_eq!(s.on_kod_rate(a(A1), t1, secs(2), secs(16)), secs(4));
        assert_eq!(s.on_kod_rate(a(A1), t1, secs(2), secs(16)), secs(8));
        assert_eq!(s.on_kod_rate(a(A1), t1, secs(2), secs(16)), secs(16));
        assert_eq!(s.on_kod_rate(a(A1), t1, secs(2), secs(16)), secs(16));
        assert!(s.holds().active(a(A1), t1 + secs(15)).is_some());
        // A good answer from A ends the escalation.
        s.on_success(a(A1));
        assert_eq!(s.on_kod_rate(a(A1), t1 + secs(16), secs(2), secs(16)), secs(2));
    }

    #[test]
    fn rate_from_the_only_server_leaves_nothing_to_ask_until_it_ends() {
        let mut s = ServerSet::new(vec![("a".into(), vec![a(A1)])]);
        let t0 = Instant::now();
        let hold = s.on_kod_rate(a(A1), t0, secs(4), secs(64));
        assert_eq!(s.current(t0), None);
        assert_eq!(s.next_change(t0), Some(t0 + hold));
        assert_eq!(s.current(t0 + hold), Some((0, a(A1))));
    }

    #[test]
    fn unresolved_names_are_retried_with_backoff() {
        let mut s = ServerSet::named(&["a.example:123".into(), "b.example:123".into()]);
        let t0 = Instant::now();
        assert!(s.is_empty());
        assert_eq!(s.unresolved_names(), vec!["a.example:123", "b.example:123"]);
        assert_eq!(s.current(t0), None);
        assert_eq!(s.resolutions_due(t0), vec![0, 1]);
        assert_eq!(s.next_change(t0), Some(t0));
        assert_eq!(s.on_resolved(0, vec![], t0), Some(secs(1)));
        assert_eq!(s.on_resolved(1, vec![a(B1)], t0), None);
        assert_eq!(s.current(t0), Some((1, a(B1))));
        assert_eq!(s.unresolved_names(), vec!["a.example:123"]);
        assert!(s.resolutions_due(t0).is_empty());
        assert_eq!(s.next_change(t0), Some(t0 + secs(1)));
        assert_eq!(s.resolutions_due(t0 + secs(1)), vec![0]);
        // 1, 2, 4, ... s, capped.
        let mut t = t0 + secs(1);
        for want in [2, 4, 8, 16, 32, 64, 128, 256, 300, 300] {
            assert_eq!(s.on_resolved(0, vec![], t), Some(secs(want)));
            assert!(s.resolutions_due(t + secs(want) - Duration::from_millis(1)).is_empty());
            t += secs(want);
            assert_eq!(s.resolutions_due(t), vec![0]);
        }
        // Resolved at last: the selection (B1) stays, and A's addresses
        // join the failover order in front of it.
        s.on_success(a(B1));
        assert_eq!(s.on_resolved(0, vec![a(A1), a(A2)], t), None);
        assert!(s.resolutions_due(t + secs(1000)).is_empty());
        assert_eq!(s.current(t), Some((1, a(B1))));
        s.on_failure(a(B1), t);
        assert_eq!(s.current(t), Some((0, a(A1))));
        assert_eq!(s.others(a(A1), t), vec![a(B1)]);
    }

    #[test]
    fn others_excludes_the_same_server_and_held_addresses() {
        let mut s = set();
        let now = Instant::now();
        assert_eq!(s.others(a(A2), now), vec![a(B1), a(C1), a(C2)]);
        assert_eq!(s.others(a(B1), now), vec![a(A1), a(A2), a(C1), a(C2)]);
        s.on_kod_deny(a(C1), "DENY", now, DEFAULT_DENY_HOLD_OFF);
        assert_eq!(s.others(a(A1), now), vec![a(B1), a(C2)]);
        assert_eq!(s.others(a(A1), now + DEFAULT_DENY_HOLD_OFF), vec![a(B1), a(C1), a(C2)]);
    }

    #[test]
    fn others_skips_an_address_shared_with_another_server() {
        let s = ServerSet::new(vec![("a".into(), vec![a(A1)]), ("alias".into(), vec![a(A1), a(B1)])]);
        assert_eq!(s.others(a(A1), Instant::now()), Vec::<SocketAddr>::new());
        assert_eq!(s.others(a(B1), Instant::now()), vec![a(A1)]);
    }

    #[test]
    fn empty_sets() {
        let now = Instant::now();
        let none = ServerSet::new(vec![]);
        assert!(none.is_empty());
        assert_eq!(none.current(now), None);
        assert_eq!(none.next_change(now), None);
        let unresolved = ServerSet::new(vec![("a".into(), vec![]), ("b".into(), vec![])]);
        assert!(unresolved.is_empty());
        assert_eq!(unresolved.current(now), None);
        let partly = ServerSet::new(vec![("a".into(), vec![]), ("b".into(), vec![a(B1)])]);
        assert!(!partly.is_empty());
        assert_eq!(partly.current(now), Some((1, a(B1))));
    }
}
