//! Server selection over the configured NTP servers and their resolved
//! addresses: stick to the last good address, fail over in a fixed order,
//! hold off addresses whose server sent a KoD DENY/RSTR, and name the other
//! servers' addresses for a second opinion. Name resolution happens
//! elsewhere; this only sees its results.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::time::{Duration, Instant};

/// How long an address that answered KoD DENY or RSTR is left alone.
pub const DEFAULT_DENY_HOLD_OFF: Duration = Duration::from_secs(3600);

/// (server index, address index) in the configured order.
type Pos = (usize, usize);

#[derive(Debug, Clone)]
struct Server {
    name: String,
    addrs: Vec<SocketAddr>,
}

/// The configured servers with their addresses, in configuration order.
#[derive(Debug, Clone)]
pub struct ServerSet {
    servers: Vec<Server>,
    /// Addresses held off after DENY/RSTR, until the given time (`None`:
    /// the hold-off does not fit in an `Instant`, i.e. forever).
    held: HashMap<SocketAddr, Option<Instant>>,
    /// The last good address, or where failover moved to.
    selected: Option<Pos>,
}

impl ServerSet {
    /// `servers`: each server as configured (e.g. `"time.example:123"`) with
    /// its resolved addresses, in the order they should be tried.
    pub fn new(servers: Vec<(String, Vec<SocketAddr>)>) -> Self {
        let servers = servers.into_iter().map(|(name, addrs)| Server { name, addrs }).collect();
        Self { servers, held: HashMap::new(), selected: None }
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

    /// The address to ask now, with its server's index: the last good one
    /// while usable, else the first usable one in order. `None` when every
    /// address is held off (or there are none).
    pub fn current(&self, now: Instant) -> Option<(usize, SocketAddr)> {
        self.current_pos(now).and_then(|p| self.addr(p).map(|a| (p.0, a)))
    }

    /// `addr` answered well: stay with it.
    pub fn on_success(&mut self, addr: SocketAddr) {
        if self.selected.and_then(|p| self.addr(p)) == Some(addr) {
            return;
        }
        let found = self.positions().find(|&p| self.addr(p) == Some(addr));
        if found.is_some() {
            self.selected = found;
        }
    }

    /// `addr` failed (timeout, bad reply): if it is the current address,
    /// move to the next usable one, through every address of every server,
    /// wrapping around. A failure of any other address (e.g. a second
    /// opinion) does not move the selection.
    pub fn on_failure(&mut self, addr: SocketAddr, now: Instant) {
        if let Some(p) = self.current_pos(now).filter(|&p| self.addr(p) == Some(addr)) {
            self.selected = self.next_usable_after(p, now);
        }
    }

    /// KoD DENY or RSTR from `addr`: unusable until `now + hold_off`
    /// ([`DEFAULT_DENY_HOLD_OFF`] normally); fails over if it was current.
    pub fn on_kod_deny(&mut self, addr: SocketAddr, now: Instant, hold_off: Duration) {
        let current = self.current_pos(now).filter(|&p| self.addr(p) == Some(addr));
        let until = now.checked_add(hold_off);
        let entry = self.held.entry(addr).or_insert(until);
        // Never shorten an existing hold-off.
        *entry = match (*entry, until) {
            (Some(a), Some(b)) => Some(a.max(b)),
            _ => None,
        };
        if let Some(p) = current {
            self.selected = self.next_usable_after(p, now);
        }
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
        match self.held.get(&addr) {
            None => true,
            Some(Some(until)) => now >= *until,
            Some(None) => false,
        }
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
        assert!(!s.is_empty());
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
        s.on_kod_deny(a(A1), t0, DEFAULT_DENY_HOLD_OFF);
        assert_eq!(s.current(t0), Some((0, a(A2))));
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
        s.on_kod_deny(a(B1), t0, Duration::from_secs(60));
        assert_eq!(s.current(t0), Some((0, a(A1))));
        s.on_kod_deny(a(A1), t0, Duration::from_secs(120));
        assert_eq!(s.current(t0), None);
        assert_eq!(s.current(t0 + Duration::from_secs(59)), None);
        assert_eq!(s.current(t0 + Duration::from_secs(60)), Some((1, a(B1))));
        assert_eq!(s.current(t0 + Duration::from_secs(120)), Some((0, a(A1))));
    }

    #[test]
    fn a_second_deny_never_shortens_the_hold_off() {
        let mut s = ServerSet::new(vec![("a".into(), vec![a(A1)])]);
        let t0 = Instant::now();
        s.on_kod_deny(a(A1), t0, Duration::from_secs(600));
        s.on_kod_deny(a(A1), t0, Duration::from_secs(10));
        assert_eq!(s.current(t0 + Duration::from_secs(599)), None);
        assert_eq!(s.current(t0 + Duration::from_secs(600)), Some((0, a(A1))));
    }

    #[test]
    fn deny_of_a_non_current_address_keeps_the_selection() {
        let mut s = set();
        let now = Instant::now();
        s.on_success(a(B1));
        s.on_kod_deny(a(C1), now, DEFAULT_DENY_HOLD_OFF);
        assert_eq!(s.current(now), Some((1, a(B1))));
        s.on_failure(a(B1), now);
        assert_eq!(s.current(now), Some((2, a(C2))));
    }

    #[test]
    fn others_excludes_the_same_server_and_held_addresses() {
        let mut s = set();
        let now = Instant::now();
        assert_eq!(s.others(a(A2), now), vec![a(B1), a(C1), a(C2)]);
        assert_eq!(s.others(a(B1), now), vec![a(A1), a(A2), a(C1), a(C2)]);
        s.on_kod_deny(a(C1), now, DEFAULT_DENY_HOLD_OFF);
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
        let unresolved = ServerSet::new(vec![("a".into(), vec![]), ("b".into(), vec![])]);
        assert!(unresolved.is_empty());
        assert_eq!(unresolved.current(now), None);
        let partly = ServerSet::new(vec![("a".into(), vec![]), ("b".into(), vec![a(B1)])]);
        assert!(!partly.is_empty());
        assert_eq!(partly.current(now), Some((1, a(B1))));
    }
}
