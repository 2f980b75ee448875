//! How a plugin call ended, classified for status, backoff and operators.

use bronze_bundle::text;
use std::fmt;
use std::time::Duration;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OutcomeKind {
    Ok,
    /// The call's deadline passed.
    Timeout,
    /// The guest trapped (including stack overflow and out-of-memory
    /// inside its own allocator).
    Trap,
    /// A host-enforced limit stopped it: memory, tables, result size.
    Limit,
    /// The host failed the call: instantiation, a panic, a broken result.
    HostError,
}

impl OutcomeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            OutcomeKind::Ok => "ok",
            OutcomeKind::Timeout => "timeout",
            OutcomeKind::Trap => "trap",
            OutcomeKind::Limit => "limit",
            OutcomeKind::HostError => "host-error",
        }
    }

    pub fn is_ok(self) -> bool {
        self == OutcomeKind::Ok
    }
}

impl fmt::Display for OutcomeKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One finished call.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub kind: OutcomeKind,
    /// Empty for ok. Lines (a trap's backtrace frames) are separated by
    /// `\n`; each line is escaped, since it can quote the plugin (an error it
    /// returned, the names in its code): print it with
    /// `bronze_bundle::text::printable` to keep it on one line.
    pub message: String,
    /// RFC 3339 start.
    pub started: String,
    pub duration: Duration,
    /// CPU time the call's task spent on a thread (guest code and the host
    /// imports it ran), measured per poll with the thread's CPU clock.
    pub cpu: Duration,
    /// Linear memory the call's instances held at their largest.
    pub memory_bytes: u64,
}

/// Longest message kept (trap messages carry wasm backtraces).
const MAX_MESSAGE: usize = 2048;

impl Outcome {
    pub fn new(kind: OutcomeKind, message: impl Into<String>, started: String, duration: Duration) -> Self {
        let message = escape_lines(&message.into(), MAX_MESSAGE);
        Outcome { kind, message, started, duration, cpu: Duration::ZERO, memory_bytes: 0 }
    }
}

/// Each line of `text` escaped, the lines joined by `\n`, at most `max`
/// bytes in all.
fn escape_lines(text: &str, max: usize) -> String {
    let mut out = String::new();
    for line in text.lines() {
        let room = max.saturating_sub(out.len() + usize::from(!out.is_empty()));
        if room == 0 {
            break;
        }
        if !out.is_empty() {
            out.push('\n');
        }
        out.push_str(&text::escape_within(line, room));
    }
    out
}

/// Returned by the epoch callback when the call's deadline passed, so the
/// error can be told apart from a guest trap.
#[derive(Debug)]
pub struct DeadlineExceeded;

impl fmt::Display for DeadlineExceeded {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("the call's deadline passed")
    }
}

impl std::error::Error for DeadlineExceeded {}

/// Classifies an error from instantiating or calling a guest.
pub fn classify(error: &wasmtime::Error, limit_hit: Option<String>, timeout: Duration) -> (OutcomeKind, String) {
    if error.downcast_ref::<DeadlineExceeded>().is_some() {
        return (OutcomeKind::Timeout, format!("no result within the {} ms deadline", timeout.as_millis()));
    }
    if let Some(hit) = limit_hit {
        return (OutcomeKind::Limit, hit);
    }
    let detail = brief(&format!("{error:#}"));
    // wasmtime's error type for this is private; its text is stable API
    // in practice and the only handle we have.
    if detail.contains("fuel allocated for hostcalls has been exhausted") {
        return (
            OutcomeKind::Limit,
            format!("data limit: more than the host accepts in one call crossed the boundary ({detail})"),
        );
    }
    if let Some(trap) = error.downcast_ref::<wasmtime::Trap>() {
        let what = match trap {
            wasmtime::Trap::StackOverflow => "wasm trap: stack overflow (call stack exhausted)".to_string(),
            wasmtime::Trap::UnreachableCodeReached => {
                "wasm trap: unreachable code reached (a panic or an abort)".to_string()
            }
            other => format!("wasm trap: {other}"),
        };
        return (OutcomeKind::Trap, format!("{what}; {detail}"));
    }
    (OutcomeKind::Trap, detail)
}

/// Frames of a wasm backtrace kept in a message.
const BACKTRACE_FRAMES: usize = 5;

/// The error's first line and the first few backtrace frames.
fn brief(text: &str) -> String {
    let mut lines = text.lines();
    let mut out: Vec<&str> = lines.by_ref().take(1 + BACKTRACE_FRAMES).collect();
    let rest = lines.count();
    let more = format!("    ... {rest} more frames");
    if rest > 0 {
        out.push(&more);
    }
    out.join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn messages_keep_their_lines_and_escape_what_is_in_them() {
        let started = String::new();
        let raw = "wasm trap: unreachable\n    0: 0x1 - \x1b[2J\u{9b}evil\rname\x07\r\n    1: 0x2 - ok\\";
        let o = Outcome::new(OutcomeKind::Trap, raw, started.clone(), Duration::ZERO);
        assert_eq!(
            o.message,
            "wasm trap: unreachable\n    0: 0x1 - \\x1b[2J\\u{9b}evil\\rname\\x07\n    1: 0x2 - ok\\\\"
        );
        assert_eq!(text::printable(&o.message).lines().count(), 1);

        let long = format!("first\n{}", "\x1b".repeat(MAX_MESSAGE));
        let o = Outcome::new(OutcomeKind::Trap, long, started, Duration::ZERO);
        assert_eq!(o.message.len(), MAX_MESSAGE - 2, "whole escapes only");
        assert!(o.message.starts_with("first\n\\x1b"));
    }
}
