//! Bounded in-memory logs: a ring of lines capped by total bytes (a noisy
//! service or plugin can never grow bronzed's memory past its cap), with a
//! tail for `logs --tail N` and a broadcast for `logs -f`; and the kernel
//! log ([`kmsg`]).

pub mod kmsg;

use std::collections::VecDeque;
use std::sync::Mutex;
use tokio::sync::broadcast;

/// Longest line kept; longer lines are cut (and marked).
pub const MAX_LINE: usize = 16 * 1024;

/// One log line with its arrival time (RFC 3339).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    pub time: String,
    pub text: String,
}

struct Ring {
    lines: VecDeque<LogLine>,
    bytes: usize,
}

/// A byte-capped ring of lines.
pub struct LogBuffer {
    ring: Mutex<Ring>,
    cap: usize,
    follow: broadcast::Sender<LogLine>,
}

impl std::fmt::Debug for LogBuffer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("LogBuffer").field("cap", &self.cap).finish_non_exhaustive()
    }
}

impl LogBuffer {
    pub fn new(cap_bytes: usize) -> Self {
        let (follow, _) = broadcast::channel(1024);
        Self { ring: Mutex::new(Ring { lines: VecDeque::new(), bytes: 0 }), cap: cap_bytes.max(1), follow }
    }

    /// Appends a line, dropping the oldest ones beyond the cap.
    pub fn push(&self, text: &str) {
        let text = if text.len() > MAX_LINE {
            let mut end = MAX_LINE;
            while !text.is_char_boundary(end) {
                end -= 1;
            }
            format!("{} [line cut at {MAX_LINE} bytes]", &text[..end])
        } else {
            text.to_string()
        };
        let line = LogLine { time: crate::state::now_rfc3339(), text };
        let mut ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        ring.bytes += line.text.len();
        ring.lines.push_back(line.clone());
        while ring.bytes > self.cap && ring.lines.len() > 1 {
            if let Some(old) = ring.lines.pop_front() {
                ring.bytes -= old.text.len();
            }
        }
        // Sent under the lock so followers see lines in buffer order.
        let _ = self.follow.send(line);
    }

    /// The last `n` lines (all when `n` is None).
    pub fn tail(&self, n: Option<usize>) -> Vec<LogLine> {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let skip = n.map_or(0, |n| ring.lines.len().saturating_sub(n));
        ring.lines.iter().skip(skip).cloned().collect()
    }

    /// The tail and a receiver for what comes after it, with no gap.
    pub fn tail_and_follow(&self, n: Option<usize>) -> (Vec<LogLine>, broadcast::Receiver<LogLine>) {
        let ring = self.ring.lock().unwrap_or_else(|p| p.into_inner());
        let rx = self.follow.subscribe();
        let skip = n.map_or(0, |n| ring.lines.len().saturating_sub(n));
        (ring.lines.iter().skip(skip).cloned().collect(), rx)
    }

    /// Bytes currently held.
    pub fn bytes(&self) -> usize {
        self.ring.lock().unwrap_or_else(|p| p.into_inner()).bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cap_drops_oldest_lines() {
        let buf = LogBuffer::new(10);
        for line in ["aaaa", "bbbb", "cccc"] {
            buf.push(line);
        }
        let texts: Vec<_> = buf.tail(None).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["bbbb", "cccc"]);
        assert_eq!(buf.bytes(), 8);
    }

    #[test]
    fn tail_takes_the_newest() {
        let buf = LogBuffer::new(1 << 20);
        for i in 0..10 {
            buf.push(&format!("line {i}"));
        }
        let texts: Vec<_> = buf.tail(Some(2)).into_iter().map(|l| l.text).collect();
        assert_eq!(texts, ["line 8", "line 9"]);
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let buf = LogBuffer::new(1 << 20);
        buf.push(&"é".repeat(MAX_LINE));
        let line = &buf.tail(None)[0].text;
        assert!(line.ends_with("[line cut at 16384 bytes]"));
        assert!(line.len() < MAX_LINE + 40);
    }

    #[tokio::test]
    async fn followers_get_new_lines_after_the_tail() {
        let buf = LogBuffer::new(1 << 20);
        buf.push("old");
        let (tail, mut rx) = buf.tail_and_follow(Some(5));
        assert_eq!(tail.len(), 1);
        buf.push("new");
        assert_eq!(rx.recv().await.unwrap().text, "new");
    }
}
