//! Each plugin instance's log: a bounded ring of recent lines behind a rate
//! limit, fed by the `log` import and by WASI stdout/stderr.
//!
//! A guest can call `log` as fast as it likes; the limit keeps a flood from
//! costing the host more than a counter increment per dropped line.
//!
//! A message is the plugin's text: it is escaped on the way in (a newline
//! becomes `\n`, ESC `\x1b`, see `bronze_bundle::text`), so each message is
//! one line that cannot draw on a terminal or pass for one of the host's
//! own log lines, and in the node's log it is prefixed with the plugin and
//! the instance it came from.

use bronze_bundle::text;
use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Instant;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Lines kept per instance.
const RING_LINES: usize = 256;
/// Lines accepted at once before the steady rate applies.
const BURST: f64 = 200.0;
/// Lines accepted per second after a burst.
const RATE_PER_SEC: f64 = 50.0;
/// Longer messages are cut here, after escaping (on a character boundary,
/// never inside an escape).
pub const MAX_LINE_BYTES: usize = 4096;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warn,
    Error,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Trace => "trace",
            Level::Debug => "debug",
            Level::Info => "info",
            Level::Warn => "warn",
            Level::Error => "error",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogLine {
    /// RFC 3339.
    pub time: String,
    pub level: Level,
    pub message: String,
}

/// One instance's log.
#[derive(Debug)]
pub struct PluginLog {
    instance: String,
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    lines: VecDeque<LogLine>,
    tokens: f64,
    refilled: Instant,
    dropped: u64,
}

impl PluginLog {
    pub fn new(instance: &str) -> Arc<PluginLog> {
        Arc::new(PluginLog {
            instance: instance.to_string(),
            inner: Mutex::new(Inner {
                lines: VecDeque::with_capacity(RING_LINES),
                tokens: BURST,
                refilled: Instant::now(),
                dropped: 0,
            }),
        })
    }

    /// Records `message`, which `plugin` wrote, unless the rate limit says
    /// drop it.
    pub fn write(&self, plugin: &str, level: Level, message: &str) {
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            let refill = now.duration_since(inner.refilled).as_secs_f64() * RATE_PER_SEC;
            inner.tokens = (inner.tokens + refill).min(BURST);
            inner.refilled = now;
            if inner.tokens < 1.0 {
                inner.dropped += 1;
                return;
            }
            inner.tokens -= 1.0;
        }
        // Escaped once: the ring, `plugins status` and the node's log all
        // get the same one-line text.
        let message = text::escape_within(message, MAX_LINE_BYTES);
        {
            let mut inner = self.inner.lock().unwrap_or_else(|p| p.into_inner());
            if inner.lines.len() == RING_LINES {
                inner.lines.pop_front();
            }
            inner.lines.push_back(LogLine { time: crate::state::now_rfc3339(), level, message: message.to_string() });
        }
        // The span puts `plugin{plugin=.. instance=..}:` before the message
        // on the line. At error level so that no filter keeps an event but
        // drops its attribution.
        let span = tracing::error_span!("plugin", plugin = %plugin, instance = %self.instance);
        let _entered = span.enter();
        match level {
            Level::Trace => tracing::trace!("{message}"),
            Level::Debug => tracing::debug!("{message}"),
            Level::Info => tracing::info!("{message}"),
            Level::Warn => tracing::warn!("{message}"),
            Level::Error => tracing::error!("{message}"),
        }
    }

    /// The most recent lines, oldest first.
    pub fn lines(&self) -> Vec<LogLine> {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).lines.iter().cloned().collect()
    }

    /// Lines dropped by the rate limit so far.
    pub fn dropped(&self) -> u64 {
        self.inner.lock().unwrap_or_else(|p| p.into_inner()).dropped
    }
}

/// WASI stdout or stderr of one store: bytes are split into lines and
/// written to the instance's log at a fixed level.
#[derive(Clone)]
pub struct LogOutput {
    log: Arc<PluginLog>,
    plugin: Arc<str>,
    level: Level,
}

impl LogOutput {
    pub fn new(log: Arc<PluginLog>, plugin: &str, level: Level) -> Self {
        LogOutput { log, plugin: plugin.into(), level }
    }

    fn stream(&self) -> LineWriter {
        LineWriter { out: self.clone(), partial: Vec::new() }
    }
}

impl IsTerminal for LogOutput {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for LogOutput {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.stream())
    }

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.stream())
    }
}

/// Buffers a partial line until its newline (or the line cap).
struct LineWriter {
    out: LogOutput,
    partial: Vec<u8>,
}

impl LineWriter {
    fn push(&mut self, mut bytes: &[u8]) {
        while !bytes.is_empty() {
            match bytes.iter().position(|&b| b == b'\n') {
                Some(at) => {
                    self.append(&bytes[..at]);
                    self.emit();
                    bytes = &bytes[at + 1..];
                }
                None => {
                    self.append(bytes);
                    bytes = &[];
                }
            }
        }
    }

    /// Keeps at most one line's worth; the rest of an overlong line is
    /// dropped rather than buffered.
    fn append(&mut self, bytes: &[u8]) {
        let room = MAX_LINE_BYTES.saturating_sub(self.partial.len());
        self.partial.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    fn emit(&mut self) {
        let line = String::from_utf8_lossy(&self.partial);
        self.out.log.write(&self.out.plugin, self.out.level, line.trim_end_matches('\r'));
        self.partial.clear();
    }
}

impl Drop for LineWriter {
    fn drop(&mut self) {
        if !self.partial.is_empty() {
            self.emit();
        }
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for LineWriter {
    async fn ready(&mut self) {}
}

impl OutputStream for LineWriter {
    fn write(&mut self, bytes: bytes::Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(64 * 1024)
    }
}

impl tokio::io::AsyncWrite for LineWriter {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.get_mut().push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_flood_is_cut_to_the_burst_and_counted() {
        let log = PluginLog::new("t");
        for i in 0..10_000 {
            log.write("p", Level::Info, &format!("line {i}"));
        }
        // Allow a few refilled tokens for a slow test machine.
        assert!(log.dropped() >= 9_700, "dropped {}", log.dropped());
        let lines = log.lines();
        assert!(lines.len() <= RING_LINES);
        assert_eq!(lines[0].message, "line 0");
    }

    #[test]
    fn long_lines_are_cut_on_a_char_boundary() {
        let log = PluginLog::new("t");
        log.write("p", Level::Warn, &"é".repeat(5000));
        let line = &log.lines()[0];
        assert!(line.message.len() <= MAX_LINE_BYTES);
        assert!(line.message.chars().all(|c| c == 'é'));
    }

    #[test]
    fn stdout_bytes_become_lines() {
        let log = PluginLog::new("t");
        let out = LogOutput::new(log.clone(), "p", Level::Info);
        let mut writer = out.stream();
        writer.push(b"hello ");
        writer.push(b"world\nsecond");
        drop(writer);
        let messages: Vec<_> = log.lines().into_iter().map(|l| l.message).collect();
        assert_eq!(messages, ["hello world", "second"]);
    }

    /// A message that tries to end its line and start one of the host's.
    const FORGED: &str =
        "ok\x1b[2J\u{9b}1A\rdone\x07\n2026-12-05T12:00:00.000000Z  INFO bronze_host::api: admin authenticated";

    #[test]
    fn a_message_stays_one_escaped_line_attributed_to_its_plugin() {
        use std::io::Write;
        #[derive(Clone, Default)]
        struct Buffer(Arc<Mutex<Vec<u8>>>);
        impl Write for Buffer {
            fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
                self.0.lock().unwrap().extend_from_slice(bytes);
                Ok(bytes.len())
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let buffer = Buffer::default();
        let sink = buffer.clone();
        let subscriber = tracing_subscriber::fmt()
            .with_writer(move || sink.clone())
            .with_ansi(false)
            .with_max_level(tracing::Level::TRACE)
            .finish();
        let log = PluginLog::new("h-forge");
        tracing::subscriber::with_default(subscriber, || log.write("hostile", Level::Warn, FORGED));

        let escaped = "ok\\x1b[2J\\u{9b}1A\\rdone\\x07\\n2026-12-05T12:00:00.000000Z  INFO bronze_host::api: admin \
                       authenticated";
        assert_eq!(log.lines()[0].message, escaped);
        let written = String::from_utf8(buffer.0.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = written.lines().collect();
        assert_eq!(lines.len(), 1, "{written:?}");
        assert!(
            lines[0].ends_with(&format!(
                "WARN plugin{{plugin=hostile instance=h-forge}}: bronze_host::plugins::log: {escaped}"
            )),
            "{written:?}"
        );
        assert!(!written.contains(['\x1b', '\r', '\x07', '\u{9b}']), "{written:?}");
    }

    #[test]
    fn stdout_lines_are_escaped_inside_and_cut_after_escaping() {
        let log = PluginLog::new("t");
        let out = LogOutput::new(log.clone(), "p", Level::Info);
        let mut writer = out.stream();
        writer.push(b"a\rb\x1b[31mc\td\r\n");
        writer.push(&[0x07; MAX_LINE_BYTES]);
        writer.push(b"\n");
        drop(writer);
        let lines = log.lines();
        assert_eq!(lines[0].message, "a\\rb\\x1b[31mc\\td");
        // 4 KiB of BEL escapes to 16 KiB, of which one line's worth is kept.
        assert_eq!(lines[1].message, "\\x07".repeat(MAX_LINE_BYTES / 4));
    }
}
