//! Rules for `machine.time`: poll bounds that chrony-style clients accept.

use std::time::Duration;

use crate::schema::Time;
use crate::validate::Validation;

const MIN_POLL_FLOOR: Duration = Duration::from_secs(1);
const MAX_POLL_CEILING: Duration = Duration::from_secs(36 * 3600);

pub(super) fn check(time: &Time, out: &mut Validation) {
    if time.min_poll > time.max_poll {
        out.error("machine.time.minPoll", format!("{} is greater than maxPoll ({})", time.min_poll, time.max_poll));
    }
    if time.min_poll.as_std() < MIN_POLL_FLOOR {
        out.error("machine.time.minPoll", format!("{} is shorter than the minimum of 1s", time.min_poll));
    }
    if time.max_poll.as_std() > MAX_POLL_CEILING {
        out.error("machine.time.maxPoll", format!("{} is longer than the maximum of 36h", time.max_poll));
    }
    if time.step_threshold.is_zero() {
        out.error("machine.time.stepThreshold", "must be greater than zero");
    }
    if time.boot_timeout.is_zero() {
        out.error("machine.time.bootTimeout", "must be greater than zero");
    }
    if !time.disabled && time.servers.is_empty() {
        out.warn(
            "machine.time.servers",
            "no time servers: PID 1 keeps its default (bronze.ntp= or pool.ntp.org), process mode does not sync",
        );
    }
}
