//! Clock discipline decisions: whether an accepted offset is stepped,
//! slewed or refused, when other servers must be asked first (and what
//! their answers mean), the bookkeeping after a decision was carried out
//! (synced, step count, time epoch), and when a leap second warning is due.
//! Never touches a clock or a socket: the caller asks the other servers and
//! applies the decision.
//!
//! Who must agree before a step:
//! - The first step (before any sync) when other servers are configured:
//!   the servers that answer vote, and the step needs a majority of them
//!   (this server included), so one falseticker among several is outvoted,
//!   as in chrony's source selection. With no other server, or none that
//!   answers, the one server is trusted alone.
//! - After the first sync, a single step larger than
//!   [`STEP_LIMIT_AFTER_SYNC`] needs that majority with at least one other
//!   server agreeing: alone, it is refused.
//! - Any other step (after sync, up to the limit) and every slew need no
//!   vote.

/// After the first sync, a single step larger than this (seconds) needs a
/// second server's confirmation: one broken or hostile server must not be
/// able to throw the clock years off.
pub const STEP_LIMIT_AFTER_SYNC: f64 = 1000.0;

/// A correction larger than this (seconds) starts a new time epoch:
/// anything that compared timestamps across it (certificate checks, leases)
/// should look again.
pub const EPOCH_THRESHOLD: f64 = 900.0;

/// Offsets above this (seconds) are stepped by default, smaller ones slewed.
pub const DEFAULT_STEP_THRESHOLD: f64 = 0.4;

/// Offsets of two servers within this many seconds of each other agree.
const AGREEMENT: f64 = 1.0;

const SECS_PER_DAY: u64 = 86_400;

/// What to do with an accepted offset (server − local, seconds).
#[derive(Debug, Clone, PartialEq)]
pub enum Decision {
    /// Set the clock at once (`ADJ_SETOFFSET`).
    Step { offset: f64 },
    /// Let the kernel PLL steer it in gradually.
    Slew { offset: f64 },
    /// Leave the clock alone; `reason` is for the status and logs.
    Refuse { offset: f64, reason: String },
    /// A step that needs the other servers' opinion: ask them, then decide
    /// again with [`Peers::Asked`].
    AskOthers { offset: f64 },
}

/// What the other configured servers can say about an offset.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Peers {
    /// No other server has a usable address.
    None,
    /// There are others, not asked yet.
    NotAsked,
    /// The others were asked: how many of those that answered agree
    /// (within 1 s) and how many do not. Servers that did not answer do
    /// not vote.
    Asked { agree: usize, disagree: usize },
}

impl Peers {
    /// How many other servers answered.
    pub fn answered(self) -> usize {
        match self {
            Peers::Asked { agree, disagree } => agree + disagree,
            _ => 0,
        }
    }
}

/// Step/slew policy plus what has been done so far.
#[derive(Debug, Clone)]
pub struct Discipline {
    step_threshold: f64,
    synced: bool,
    epoch: u64,
    steps: u64,
}

impl Default for Discipline {
    fn default() -> Self {
        Self::new(DEFAULT_STEP_THRESHOLD)
    }
}

impl Discipline {
    /// `step_threshold`: offsets above it (seconds, absolute) are stepped.
    pub fn new(step_threshold: f64) -> Self {
        Self { step_threshold, synced: false, epoch: 0, steps: 0 }
    }

    pub fn step_threshold(&self) -> f64 {
        self.step_threshold
    }

    /// Changes the threshold (new config) without forgetting the sync
    /// state, step count or epoch.
    pub fn set_step_threshold(&mut self, step_threshold: f64) {
        self.step_threshold = step_threshold;
    }

    /// Decides for `offset` given what the other servers said (see the
    /// module docs for who must agree).
    pub fn decide(&self, offset: f64, peers: Peers) -> Decision {
        if !offset.is_finite() {
            return Decision::Refuse { offset, reason: format!("offset {offset} is not a finite number") };
        }
        if offset.abs() <= self.step_threshold {
            return Decision::Slew { offset };
        }
        let huge = offset.abs() > STEP_LIMIT_AFTER_SYNC;
        if self.synced && !huge {
            return Decision::Step { offset };
        }
        let (agree, disagree) = match peers {
            Peers::NotAsked => return Decision::AskOthers { offset },
            Peers::None => (0, 0),
            Peers::Asked { agree, disagree } => (agree, disagree),
        };
        let voters = 1 + agree + disagree;
        if 2 * (1 + agree) <= voters {
            return Decision::Refuse {
                offset,
                reason: format!(
                    "step of {offset:+.3} s refused: {disagree} of {} other servers disagree (falseticker outvoted)",
                    agree + disagree
                ),
            };
        }
        if self.synced && agree == 0 {
            return Decision::Refuse {
                offset,
                reason: format!(
                    "step of {offset:+.3} s refused: larger than 1000 s after the first sync and not confirmed by a \
                     second server"
                ),
            };
        }
        Decision::Step { offset }
    }

    /// Records that `decision` was carried out (or, in observe-only mode,
    /// would have been): marks synced, counts steps, and bumps the epoch
    /// when |offset| > [`EPOCH_THRESHOLD`]. Returns whether the epoch
    /// changed. A refusal changes nothing.
    pub fn applied(&mut self, decision: &Decision) -> bool {
        let offset = match decision {
            Decision::Step { offset } => {
                self.steps += 1;
                *offset
            }
            Decision::Slew { offset } => *offset,
            Decision::Refuse { .. } | Decision::AskOthers { .. } => return false,
        };
        self.synced = true;
        if offset.abs() > EPOCH_THRESHOLD {
            self.epoch += 1;
            return true;
        }
        false
    }

    /// Whether any adjustment has been carried out yet.
    pub fn synced(&self) -> bool {
        self.synced
    }

    /// Number of corrections larger than [`EPOCH_THRESHOLD`] so far.
    pub fn epoch(&self) -> u64 {
        self.epoch
    }

    /// Number of steps carried out so far.
    pub fn steps(&self) -> u64 {
        self.steps
    }
}

/// Whether two servers' offsets (seconds) agree: |a − b| ≤ 1 s.
pub fn agrees(a: f64, b: f64) -> bool {
    (a - b).abs() <= AGREEMENT
}

/// A pending leap second, as the kernel understands it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Leap {
    /// 23:59:60 at the end of today (`STA_INS`).
    Insert,
    /// 23:59:59 is skipped at the end of today (`STA_DEL`).
    Delete,
}

/// The leap warning to pass to the kernel now, if any. Servers announce a
/// leap second for the end of the month, often for weeks; the kernel acts
/// on it at the end of the current UTC day, so it is passed on only on the
/// last day of June or December (UTC), the only days leap seconds occur.
pub fn leap_due(leap_indicator: u8, unix_secs: u64) -> Option<Leap> {
    let leap = match leap_indicator {
        1 => Leap::Insert,
        2 => Leap::Delete,
        _ => return None,
    };
    match civil_month_day(unix_secs / SECS_PER_DAY) {
        (6, 30) | (12, 31) => Some(leap),
        _ => None,
    }
}

/// (month 1..=12, day 1..=31) of the UTC date `days` days after 1970-01-01
/// (Howard Hinnant's `civil_from_days`).
fn civil_month_day(days: u64) -> (u64, u64) {
    let z = days + 719_468;
    let doe = z % 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    (month, day)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A local clock that is `offset` seconds behind the servers (server −
    /// local), corrected by whatever the discipline decides.
    #[derive(Debug, Default)]
    struct SimulatedClock {
        offset: f64,
        stepped: f64,
        slewed: f64,
    }

    impl SimulatedClock {
        fn new(offset: f64) -> Self {
            Self { offset, ..Self::default() }
        }

        /// Carries out `d`; a slew is modelled as fully converged.
        fn apply(&mut self, d: &Decision) {
            match d {
                Decision::Step { offset } => {
                    self.offset -= offset;
                    self.stepped += offset;
                }
                Decision::Slew { offset } => {
                    self.offset -= offset;
                    self.slewed += offset;
                }
                Decision::Refuse { .. } | Decision::AskOthers { .. } => {}
            }
        }

        /// The servers' clock jumps by `by` seconds (or the local one by −`by`).
        fn shift(&mut self, by: f64) {
            self.offset += by;
        }
    }

    /// Only this server.
    const ALONE: Peers = Peers::None;

    /// `n` other servers answered and agree.
    fn agreed(n: usize) -> Peers {
        Peers::Asked { agree: n, disagree: 0 }
    }

    /// One round: measure the clock, decide, apply; returns the decision
    /// and whether the epoch changed.
    fn round(clock: &mut SimulatedClock, d: &mut Discipline, peers: Peers) -> (Decision, bool) {
        let decision = d.decide(clock.offset, peers);
        clock.apply(&decision);
        let epoch_changed = d.applied(&decision);
        (decision, epoch_changed)
    }

    #[test]
    fn first_big_offset_steps_then_small_ones_slew() {
        let mut clock = SimulatedClock::new(3.5);
        let mut d = Discipline::default();
        assert!(!d.synced());
        assert_eq!(round(&mut clock, &mut d, ALONE), (Decision::Step { offset: 3.5 }, false));
        assert!(d.synced());
        assert_eq!(d.steps(), 1);
        assert_eq!(clock.offset, 0.0);
        clock.shift(-0.25);
        assert_eq!(round(&mut clock, &mut d, ALONE), (Decision::Slew { offset: -0.25 }, false));
        assert_eq!(d.steps(), 1);
        assert_eq!(d.epoch(), 0);
        assert_eq!((clock.offset, clock.stepped, clock.slewed), (0.0, 3.5, -0.25));
    }

    #[test]
    fn a_first_slew_also_marks_synced() {
        let mut clock = SimulatedClock::new(0.001);
        let mut d = Discipline::default();
        assert_eq!(round(&mut clock, &mut d, ALONE), (Decision::Slew { offset: 0.001 }, false));
        assert!(d.synced());
        assert_eq!(d.steps(), 0);
    }

    #[test]
    fn threshold_boundary() {
        let d = Discipline::new(0.4);
        assert_eq!(d.decide(0.4, ALONE), Decision::Slew { offset: 0.4 });
        assert_eq!(d.decide(-0.4, ALONE), Decision::Slew { offset: -0.4 });
        assert_eq!(d.decide(0.400001, ALONE), Decision::Step { offset: 0.400001 });
        assert_eq!(d.decide(-0.400001, ALONE), Decision::Step { offset: -0.400001 });
        assert_eq!(Discipline::new(2.0).decide(1.5, ALONE), Decision::Slew { offset: 1.5 });
        assert_eq!(Discipline::new(2.0).step_threshold(), 2.0);
    }

    #[test]
    fn changing_the_threshold_keeps_the_state() {
        let mut clock = SimulatedClock::new(1.0);
        let mut d = Discipline::default();
        assert_eq!(round(&mut clock, &mut d, ALONE), (Decision::Step { offset: 1.0 }, false));
        d.set_step_threshold(2.0);
        assert_eq!(d.step_threshold(), 2.0);
        assert_eq!((d.synced(), d.steps()), (true, 1));
        clock.shift(1.5);
        assert_eq!(round(&mut clock, &mut d, ALONE), (Decision::Slew { offset: 1.5 }, false));
    }

    #[test]
    fn huge_step_after_sync_needs_a_second_server() {
        let mut clock = SimulatedClock::new(0.05);
        let mut d = Discipline::default();
        round(&mut clock, &mut d, ALONE);
        clock.shift(2000.0);
        let (decision, changed) = round(&mut clock, &mut d, ALONE);
        assert_eq!(
            decision,
            Decision::Refuse {
                offset: 2000.0,
                reason: "step of +2000.000 s refused: larger than 1000 s after the first sync and not confirmed by \
                         a second server"
                    .into()
            }
        );
        assert!(!changed);
        assert_eq!((d.steps(), d.epoch(), clock.offset), (0, 0, 2000.0));
        // Confirmed by a second server: stepped, and a new epoch.
        assert_eq!(round(&mut clock, &mut d, agreed(1)), (Decision::Step { offset: 2000.0 }, true));
        assert_eq!((d.steps(), d.epoch(), clock.offset), (1, 1, 0.0));
    }

    #[test]
    fn huge_step_before_first_sync_is_allowed_alone() {
        // A node booting with its RTC at 1970 must be able to sync from one server.
        let mut clock = SimulatedClock::new(1.7e9);
        let mut d = Discipline::default();
        assert_eq!(round(&mut clock, &mut d, ALONE), (Decision::Step { offset: 1.7e9 }, true));
        assert_eq!(d.epoch(), 1);
        // Exactly 1000 s after sync is still allowed alone (limit is "larger than").
        clock.shift(-1000.0);
        assert_eq!(round(&mut clock, &mut d, ALONE), (Decision::Step { offset: -1000.0 }, true));
        clock.shift(-1000.5);
        let (decision, _) = round(&mut clock, &mut d, ALONE);
        let Decision::Refuse { reason, .. } = decision else { panic!("expected a refusal, got {decision:?}") };
        assert!(reason.starts_with("step of -1000.500 s refused"), "{reason}");
        assert_eq!(d.epoch(), 2);
    }

    #[test]
    fn first_step_asks_the_other_servers_and_a_falseticker_is_outvoted() {
        let d = Discipline::default();
        let year = 365.0 * 86_400.0;
        // With other servers configured, the first step waits for their word.
        assert_eq!(d.decide(year, Peers::NotAsked), Decision::AskOthers { offset: year });
        // The one other server disagrees: no majority for the step.
        assert_eq!(
            d.decide(year, Peers::Asked { agree: 0, disagree: 1 }),
            Decision::Refuse {
                offset: year,
                reason: "step of +31536000.000 s refused: 1 of 1 other servers disagree (falseticker outvoted)".into()
            }
        );
        // Two of three others disagree: outvoted; two agree: stepped.
        assert!(matches!(d.decide(year, Peers::Asked { agree: 1, disagree: 2 }), Decision::Refuse { .. }));
        assert_eq!(d.decide(year, Peers::Asked { agree: 2, disagree: 1 }), Decision::Step { offset: year });
        assert_eq!(d.decide(year, agreed(1)), Decision::Step { offset: year });
        // Nobody else answered, or nobody else is configured: trusted alone.
        assert_eq!(d.decide(year, Peers::Asked { agree: 0, disagree: 0 }), Decision::Step { offset: year });
        assert_eq!(d.decide(year, ALONE), Decision::Step { offset: year });
        // A slew never needs a vote, even before the first sync.
        assert_eq!(d.decide(0.3, Peers::NotAsked), Decision::Slew { offset: 0.3 });
        assert_eq!(Peers::Asked { agree: 2, disagree: 1 }.answered(), 3);
        assert_eq!(Peers::NotAsked.answered(), 0);
    }

    #[test]
    fn after_the_first_sync_only_huge_steps_ask() {
        let mut clock = SimulatedClock::new(0.01);
        let mut d = Discipline::default();
        round(&mut clock, &mut d, ALONE);
        assert_eq!(d.decide(5.0, Peers::NotAsked), Decision::Step { offset: 5.0 });
        assert_eq!(d.decide(-1000.0, Peers::NotAsked), Decision::Step { offset: -1000.0 });
        assert_eq!(d.decide(2000.0, Peers::NotAsked), Decision::AskOthers { offset: 2000.0 });
        let Decision::Refuse { reason, .. } = d.decide(2000.0, Peers::Asked { agree: 0, disagree: 2 }) else {
            panic!("a huge step two others disagree with must be refused")
        };
        assert!(reason.contains("2 of 2 other servers disagree"), "{reason}");
        // Asked, but nobody answered: not confirmed.
        let Decision::Refuse { reason, .. } = d.decide(2000.0, Peers::Asked { agree: 0, disagree: 0 }) else {
            panic!("an unconfirmed huge step must be refused")
        };
        assert!(reason.contains("not confirmed by a second server"), "{reason}");
        assert!(!d.applied(&Decision::AskOthers { offset: 2000.0 }));
        assert_eq!(d.steps(), 0);
    }

    #[test]
    fn epoch_bumps_on_a_twenty_minute_step_only() {
        let mut clock = SimulatedClock::new(0.0);
        let mut d = Discipline::default();
        round(&mut clock, &mut d, ALONE);
        clock.shift(3.0);
        assert_eq!(round(&mut clock, &mut d, ALONE), (Decision::Step { offset: 3.0 }, false));
        assert_eq!((d.steps(), d.epoch()), (1, 0));
        clock.shift(-1200.0);
        assert_eq!(round(&mut clock, &mut d, agreed(2)), (Decision::Step { offset: -1200.0 }, true));
        assert_eq!((d.steps(), d.epoch()), (2, 1));
        // 900 s exactly is not above the threshold.
        clock.shift(900.0);
        assert_eq!(round(&mut clock, &mut d, ALONE), (Decision::Step { offset: 900.0 }, false));
        assert_eq!((d.steps(), d.epoch(), clock.offset), (3, 1, 0.0));
    }

    #[test]
    fn not_finite_offsets_are_refused() {
        let mut d = Discipline::default();
        let decision = d.decide(f64::NAN, agreed(2));
        assert!(matches!(decision, Decision::Refuse { .. }), "{decision:?}");
        assert!(!d.applied(&decision));
        assert!(!d.synced());
        assert!(matches!(d.decide(f64::INFINITY, agreed(2)), Decision::Refuse { .. }));
    }

    #[test]
    fn agreement_is_within_one_second() {
        assert!(agrees(2000.0, 2000.9));
        assert!(agrees(-0.5, 0.5));
        assert!(!agrees(2000.0, 2001.01));
        assert!(!agrees(0.0, -1.5));
    }

    #[test]
    fn leap_due_only_on_the_last_day_of_june_or_december() {
        const JUNE_30_2026: u64 = 1_782_777_600;
        const DEC_31_2026: u64 = 1_798_675_200;
        const JULY_1_2026: u64 = 1_782_864_000;
        const JUNE_29_2026: u64 = 1_782_691_200;
        assert_eq!(leap_due(1, JUNE_30_2026), Some(Leap::Insert));
        assert_eq!(leap_due(1, JUNE_30_2026 + 86_399), Some(Leap::Insert));
        assert_eq!(leap_due(2, DEC_31_2026 + 43_200), Some(Leap::Delete));
        assert_eq!(leap_due(1, JULY_1_2026), None);
        assert_eq!(leap_due(1, JUNE_29_2026 + 86_399), None);
        assert_eq!(leap_due(0, JUNE_30_2026), None);
        assert_eq!(leap_due(3, DEC_31_2026), None);
    }

    #[test]
    fn civil_dates() {
        assert_eq!(civil_month_day(0), (1, 1));
        assert_eq!(civil_month_day(1_709_164_800 / SECS_PER_DAY), (2, 29)); // 2024-02-29
        assert_eq!(civil_month_day(1_767_139_200 / SECS_PER_DAY), (12, 31)); // 2025-12-31
    }
}
