//! PID 1 logging: a `tracing_subscriber` writer that sends every line to
//! `/dev/console` (what the operator sees on the serial port, stamped with
//! seconds since boot like the kernel's own lines) and to `/dev/kmsg` (the
//! kernel log, `<priority>bronzed: ...`, so `dmesg` and the logs service
//! see init's messages next to the kernel's).
//!
//! The writer formats nothing itself: the fmt layer renders the event, this
//! adds the stamp or priority per line. Write errors are dropped; there is
//! nowhere left to report them. Pick the layer without its own timestamp
//! and without ANSI colours:
//!
//! ```no_run
//! # use std::path::Path;
//! let writer = bronze_host::init::console::pid1_log_writer(Path::new("/"));
//! tracing_subscriber::fmt().with_writer(writer).with_ansi(false).without_time().init();
//! ```
//!
//! Two kernel behaviours shape this. Writes to /dev/kmsg are rate-limited
//! (10 per 5 s per open file) unless `printk.devkmsg=on` is on the command
//! line or the sysctl `kernel.printk_devkmsg` is `on` (early boot sets it);
//! lines beyond are silently dropped. And the kernel itself prints kmsg
//! records below `console_loglevel` on the console, in this same format, so
//! writing such a line to /dev/console too would show it twice: when kmsg
//! is not rate-limited, [`Pid1Log::open`] leaves those lines to the kernel
//! and writes only the quieter ones to the console itself.

use super::sys;
use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;
use tracing::{Level, Metadata};
use tracing_subscriber::fmt::MakeWriter;

/// The name init's kmsg records carry, like the kernel's `comm:` prefixes.
pub const IDENT: &str = "bronzed";

/// Longest kmsg record the kernel takes (`PRINTKRB_RECORD_MAX` is 1024,
/// minus room for the prefix); longer lines are cut on a char boundary.
const KMSG_MAX: usize = 976;

/// syslog priority of a tracing level: err, warning, info, debug.
pub fn kmsg_priority(level: &Level) -> u8 {
    match *level {
        Level::ERROR => 3,
        Level::WARN => 4,
        Level::INFO => 6,
        Level::DEBUG | Level::TRACE => 7,
    }
}

/// `[    2.345678]`: the kernel's `[%5lu.%06lu]` stamp, so init's console
/// lines line up with the kernel's.
pub fn boot_stamp(since_boot: Duration) -> String {
    format!("[{:5}.{:06}]", since_boot.as_secs(), since_boot.subsec_micros())
}

/// One console line: stamp, ident, text, newline.
pub fn console_line(since_boot: Duration, text: &str) -> String {
    format!("{} {IDENT}: {text}\n", boot_stamp(since_boot))
}

/// One kmsg record: `<6>bronzed: text\n`, cut to what the kernel accepts.
pub fn kmsg_record(level: &Level, text: &str) -> String {
    let mut end = text.len().min(KMSG_MAX);
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    format!("<{}>{IDENT}: {}\n", kmsg_priority(level), &text[..end])
}

type Sink = Box<dyn Write + Send>;
type Clock = Box<dyn Fn() -> Duration + Send + Sync>;

/// The two sinks and the clock; a `MakeWriter` for the fmt layer.
pub struct Pid1Log {
    console: Mutex<Option<Sink>>,
    kmsg: Mutex<Option<Sink>>,
    clock: Clock,
    /// The kernel's `console_loglevel`, when it echoes our kmsg records to
    /// the console: lines of a lower priority number are not written there.
    kernel_echo_below: Option<u8>,
}

impl std::fmt::Debug for Pid1Log {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Pid1Log")
            .field("console", &lock(&self.console).is_some())
            .field("kmsg", &lock(&self.kmsg).is_some())
            .finish_non_exhaustive()
    }
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|e| e.into_inner())
}

impl Pid1Log {
    /// Any sink may be absent; `clock` gives the time since boot.
    pub fn new(
        console: Option<Box<dyn Write + Send>>,
        kmsg: Option<Box<dyn Write + Send>>,
        clock: impl Fn() -> Duration + Send + Sync + 'static,
    ) -> Self {
        Self { console: Mutex::new(console), kmsg: Mutex::new(kmsg), clock: Box::new(clock), kernel_echo_below: None }
    }

    /// Opens `<root>/dev/console` and `<root>/dev/kmsg` for writing; a
    /// device that cannot be opened is left out (before /dev is mounted,
    /// only the initramfs's console node may exist). The console is opened
    /// without becoming our controlling terminal, so a Ctrl-C typed on it
    /// does not signal PID 1. Reads `<root>/proc/sys/kernel/printk` and
    /// `printk_devkmsg` to know which lines the kernel echoes (see the
    /// module doc); call it after /proc is mounted and early boot ran.
    pub fn open(root: &Path) -> Self {
        let open = |rel: &str| -> Option<Sink> {
            let f: File = OpenOptions::new()
                .write(true)
                .custom_flags(libc::O_NOCTTY | libc::O_CLOEXEC)
                .open(root.join(rel))
                .ok()?;
            Some(Box::new(f))
        };
        let log = Self::new(open("dev/console"), open("dev/kmsg"), sys::boottime);
        let sysctl = |name: &str| std::fs::read_to_string(root.join("proc/sys/kernel").join(name)).ok();
        let unlimited = sysctl("printk_devkmsg").is_some_and(|v| v.trim() == "on");
        let loglevel = sysctl("printk").and_then(|v| v.split_whitespace().next()?.parse::<u8>().ok());
        log.kernel_echo_below(loglevel.filter(|_| unlimited))
    }

    /// Tells the log that the kernel prints kmsg records with a priority
    /// number below `console_loglevel` on the console, so such lines skip
    /// the console sink (only while the kmsg sink is there). `None`: write
    /// every line to both.
    pub fn kernel_echo_below(mut self, console_loglevel: Option<u8>) -> Self {
        self.kernel_echo_below = console_loglevel;
        self
    }

    /// Drops the console sink: the kernel already echoes kmsg records to
    /// the console at this log level.
    pub fn without_console(self) -> Self {
        *lock(&self.console) = None;
        self
    }

    pub fn has_console(&self) -> bool {
        lock(&self.console).is_some()
    }

    pub fn has_kmsg(&self) -> bool {
        lock(&self.kmsg).is_some()
    }

    /// Writes each line of `text` to both sinks: one `write` per line and
    /// sink, so lines from threads never interleave inside a line and each
    /// kmsg record is one line.
    pub fn write_event(&self, level: &Level, text: &[u8]) {
        let text = String::from_utf8_lossy(text);
        let now = (self.clock)();
        let mut kmsg = lock(&self.kmsg);
        let echoed = kmsg.is_some() && self.kernel_echo_below.is_some_and(|l| kmsg_priority(level) < l);
        for line in text.lines().filter(|l| !l.trim().is_empty()) {
            if !echoed && let Some(console) = lock(&self.console).as_mut() {
                let _ = console.write_all(console_line(now, line).as_bytes());
            }
            if let Some(kmsg) = kmsg.as_mut() {
                let _ = kmsg.write_all(kmsg_record(level, line).as_bytes());
            }
        }
    }
}

/// Opens both sinks under `root` (`/` on a node): the `MakeWriter` to give
/// `tracing_subscriber::fmt().with_writer(..)`.
pub fn pid1_log_writer(root: &Path) -> Pid1Log {
    Pid1Log::open(root)
}

/// Buffers one event and hands it over when the fmt layer drops it.
#[derive(Debug)]
pub struct EventWriter<'a> {
    log: &'a Pid1Log,
    level: Level,
    buf: Vec<u8>,
}

impl Write for EventWriter<'_> {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl Drop for EventWriter<'_> {
    fn drop(&mut self) {
        if !self.buf.is_empty() {
            self.log.write_event(&self.level, &self.buf);
        }
    }
}

impl<'a> MakeWriter<'a> for Pid1Log {
    type Writer = EventWriter<'a>;

    fn make_writer(&'a self) -> Self::Writer {
        EventWriter { log: self, level: Level::INFO, buf: Vec::new() }
    }

    fn make_writer_for(&'a self, meta: &Metadata<'_>) -> Self::Writer {
        EventWriter { log: self, level: *meta.level(), buf: Vec::new() }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    /// An in-memory sink the test can read while the log owns a clone.
    #[derive(Clone, Default)]
    struct Shared(Arc<Mutex<Vec<Vec<u8>>>>);

    impl Shared {
        /// Each `write` call as a string.
        fn writes(&self) -> Vec<String> {
            lock(&self.0).iter().map(|w| String::from_utf8_lossy(w).into_owned()).collect()
        }
    }

    impl Write for Shared {
        fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
            lock(&self.0).push(bytes.to_vec());
            Ok(bytes.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn log_with(clock: Duration) -> (Pid1Log, Shared, Shared) {
        let (console, kmsg) = (Shared::default(), Shared::default());
        let log = Pid1Log::new(Some(Box::new(console.clone())), Some(Box::new(kmsg.clone())), move || clock);
        (log, console, kmsg)
    }

    #[test]
    fn priorities_follow_syslog() {
        assert_eq!(kmsg_priority(&Level::ERROR), 3);
        assert_eq!(kmsg_priority(&Level::WARN), 4);
        assert_eq!(kmsg_priority(&Level::INFO), 6);
        assert_eq!(kmsg_priority(&Level::DEBUG), 7);
        assert_eq!(kmsg_priority(&Level::TRACE), 7);
    }

    #[test]
    fn stamps_match_the_kernel_format() {
        assert_eq!(boot_stamp(Duration::from_micros(2_345_678)), "[    2.345678]");
        assert_eq!(boot_stamp(Duration::ZERO), "[    0.000000]");
        assert_eq!(boot_stamp(Duration::from_nanos(86_400_000_000_999)), "[86400.000000]");
        assert_eq!(boot_stamp(Duration::from_secs(123_456)), "[123456.000000]");
    }

    #[test]
    fn each_line_goes_to_both_sinks_formatted() {
        let (log, console, kmsg) = log_with(Duration::from_micros(2_345_678));
        log.write_event(&Level::WARN, b"first line\nsecond line\n\n");
        assert_eq!(console.writes(), ["[    2.345678] bronzed: first line\n", "[    2.345678] bronzed: second line\n"]);
        assert_eq!(kmsg.writes(), ["<4>bronzed: first line\n", "<4>bronzed: second line\n"]);
    }

    #[test]
    fn long_kmsg_lines_are_cut_on_a_char_boundary() {
        let text = "é".repeat(600); // 1200 bytes
        let record = kmsg_record(&Level::INFO, &text);
        assert!(record.len() <= KMSG_MAX + "<6>bronzed: \n".len());
        assert!(record.ends_with("é\n"));
    }

    #[test]
    fn a_failing_or_missing_sink_does_not_stop_the_other() {
        struct Broken;
        impl Write for Broken {
            fn write(&mut self, _: &[u8]) -> io::Result<usize> {
                Err(io::Error::from_raw_os_error(libc::EIO))
            }
            fn flush(&mut self) -> io::Result<()> {
                Ok(())
            }
        }
        let kmsg = Shared::default();
        let log = Pid1Log::new(Some(Box::new(Broken)), Some(Box::new(kmsg.clone())), || Duration::ZERO);
        log.write_event(&Level::ERROR, b"boom");
        assert_eq!(kmsg.writes(), ["<3>bronzed: boom\n"]);
        let log = log.without_console();
        assert!(!log.has_console() && log.has_kmsg());
    }

    #[test]
    fn works_as_the_writer_of_a_fmt_subscriber() {
        let (log, console, kmsg) = log_with(Duration::from_millis(1500));
        let subscriber = tracing_subscriber::fmt()
            .with_writer(log)
            .with_ansi(false)
            .without_time()
            .with_target(false)
            .with_max_level(Level::DEBUG)
            .finish();
        tracing::subscriber::with_default(subscriber, || {
            tracing::error!(path = "/proc", "mount failed");
            tracing::info!("ready");
            tracing::trace!("filtered out");
        });
        assert_eq!(
            console.writes(),
            ["[    1.500000] bronzed: ERROR mount failed path=\"/proc\"\n", "[    1.500000] bronzed:  INFO ready\n"]
        );
        assert_eq!(kmsg.writes(), ["<3>bronzed: ERROR mount failed path=\"/proc\"\n", "<6>bronzed:  INFO ready\n"]);
    }

    #[test]
    fn lines_the_kernel_echoes_skip_the_console() {
        let (log, console, kmsg) = log_with(Duration::ZERO);
        // console_loglevel 5: err (3) and warning (4) are echoed by the kernel.
        let log = log.kernel_echo_below(Some(5));
        log.write_event(&Level::ERROR, b"e");
        log.write_event(&Level::WARN, b"w");
        log.write_event(&Level::INFO, b"i");
        assert_eq!(console.writes(), ["[    0.000000] bronzed: i\n"]);
        assert_eq!(kmsg.writes(), ["<3>bronzed: e\n", "<4>bronzed: w\n", "<6>bronzed: i\n"]);

        // Without a kmsg sink nothing is echoed: the console gets it all.
        let console = Shared::default();
        let log = Pid1Log::new(Some(Box::new(console.clone())), None, || Duration::ZERO).kernel_echo_below(Some(8));
        log.write_event(&Level::ERROR, b"e");
        assert_eq!(console.writes(), ["[    0.000000] bronzed: e\n"]);
    }

    #[test]
    fn open_reads_the_echo_level_only_when_kmsg_is_not_rate_limited() {
        let dir = tempfile::tempdir().unwrap();
        let root = dir.path();
        std::fs::create_dir_all(root.join("dev")).unwrap();
        std::fs::create_dir_all(root.join("proc/sys/kernel")).unwrap();
        std::fs::write(root.join("dev/kmsg"), "").unwrap();
        std::fs::write(root.join("proc/sys/kernel/printk"), "7\t4\t1\t7\n").unwrap();
        std::fs::write(root.join("proc/sys/kernel/printk_devkmsg"), "ratelimit\n").unwrap();
        assert_eq!(Pid1Log::open(root).kernel_echo_below, None);
        std::fs::write(root.join("proc/sys/kernel/printk_devkmsg"), "on\n").unwrap();
        assert_eq!(Pid1Log::open(root).kernel_echo_below, Some(7));
    }

    #[test]
    fn open_tolerates_missing_devices() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("dev")).unwrap();
        std::fs::write(dir.path().join("dev/kmsg"), "").unwrap();
        let log = Pid1Log::open(dir.path());
        assert!(!log.has_console() && log.has_kmsg());
        log.write_event(&Level::INFO, b"hello");
        assert_eq!(std::fs::read_to_string(dir.path().join("dev/kmsg")).unwrap(), "<6>bronzed: hello\n");
    }
}
