//! The node's processes, read from procfs: a small parser of
//! `/proc/<pid>/stat` and `/proc/<pid>/cmdline` (the `procfs` crate reads
//! and parses `status` and more per process than `ps` needs, and brings a
//! dependency tree; three fields of one line do not need it), CPU % between
//! two readings, and which service or plugin a process belongs to.
//!
//! The parsing and the arithmetic are pure functions over bytes; only
//! [`read`] touches the file system, under a procfs root that tests point
//! at a temp tree. Everything a process wrote (its name, its arguments) is
//! untrusted: escaped and capped before it leaves this module.

use std::collections::HashMap;
use std::io::Read;
use std::os::unix::fs::{FileExt, MetadataExt};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// At most this many processes are listed.
pub const MAX_PROCESSES: usize = 100_000;
/// A command line is cut at this many bytes (read and shown).
pub const MAX_COMMAND: usize = 4096;
/// The short name is at most 15 bytes in the kernel; more is not believed.
const MAX_NAME: usize = 64;

#[derive(Debug, thiserror::Error)]
pub enum ProcError {
    #[error("cannot list processes in {path}: {error}")]
    List { path: PathBuf, error: std::io::Error },
    #[error("unexpected {path}: {detail}")]
    Parse { path: PathBuf, detail: String },
}

/// The fields of `/proc/<pid>/stat` a process listing needs.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stat {
    pub pid: i32,
    /// Raw short name (between the parentheses), not yet escaped.
    pub comm: String,
    pub state: char,
    pub ppid: i32,
    /// utime + stime, clock ticks.
    pub cpu_ticks: u64,
    pub threads: u32,
    /// Start time after boot, clock ticks.
    pub start_ticks: u64,
    pub rss_pages: u64,
}

/// Parses one `/proc/<pid>/stat` line. The name may hold spaces and
/// parentheses, so the fields after it are found from the last `)`.
pub fn parse_stat(text: &str) -> Result<Stat, String> {
    let open = text.find('(').ok_or("no '(' before the name")?;
    let close = text.rfind(')').ok_or("no ')' after the name")?;
    if close < open {
        return Err("')' before '('".into());
    }
    let pid = text[..open].trim().parse::<i32>().map_err(|e| format!("pid {:?}: {e}", text[..open].trim()))?;
    let comm = &text[open + 1..close];
    // Fields from 3 (state) on; index i here is field i + 3 of proc(5).
    // Fields 3 to 24 without allocating (this runs for every process at
    // each refresh of `processes --watch`).
    let mut rest = [""; 22];
    let mut count = 0;
    for f in text[close + 1..].split_ascii_whitespace().take(rest.len()) {
        rest[count] = f;
        count += 1;
    }
    let field = |n: usize| -> Result<&str, String> {
        rest[..count].get(n - 3).copied().ok_or_else(|| format!("{count} fields after the name; expected at least 24"))
    };
    let num = |n: usize| -> Result<u64, String> {
        let f = field(n)?;
        f.parse::<u64>().map_err(|e| format!("field {n} {f:?}: {e}"))
    };
    let state = field(3)?.chars().next().ok_or("empty state")?;
    let ppid = field(4)?.parse::<i32>().map_err(|e| format!("field 4 (ppid): {e}"))?;
    let rss = field(24)?.parse::<i64>().map_err(|e| format!("field 24 (rss): {e}"))?;
    Ok(Stat {
        pid,
        comm: comm.chars().take(MAX_NAME).collect(),
        state,
        ppid,
        cpu_ticks: num(14)?.saturating_add(num(15)?),
        threads: u32::try_from(num(20)?).unwrap_or(u32::MAX),
        start_ticks: num(22)?,
        rss_pages: rss.max(0) as u64,
    })
}

/// A command line as shown: the NUL-separated arguments of `raw` (at most
/// [`MAX_COMMAND`] bytes were read; `more` says the file went on), each
/// escaped, joined by spaces, cut to [`MAX_COMMAND`] bytes; `[name]` when
/// there are no arguments (kernel threads, zombies). Returns the text and
/// whether it was cut.
pub fn command_text(raw: &[u8], more: bool, comm: &str) -> (String, bool) {
    let raw = raw.strip_suffix(b"\0").unwrap_or(raw);
    if raw.is_empty() && !more {
        return (format!("[{}]", bronze_bundle::text::escape(comm)), false);
    }
    let mut out = String::with_capacity(raw.len().min(MAX_COMMAND));
    let mut cut = more;
    for (i, arg) in raw.split(|b| *b == 0).enumerate() {
        if i > 0 {
            out.push(' ');
        }
        let arg = String::from_utf8_lossy(arg);
        let room = MAX_COMMAND.saturating_sub(out.len());
        let escaped = bronze_bundle::text::escape_within(&arg, room);
        let full = escaped.len() == bronze_bundle::text::escape(&arg).len();
        out.push_str(&escaped);
        if !full || out.len() >= MAX_COMMAND {
            cut |= !full || i + 1 < raw.split(|b| *b == 0).count();
            break;
        }
    }
    (out, cut)
}

/// One process as read.
#[derive(Debug, Clone)]
pub struct Process {
    pub stat: Stat,
    pub uid: u32,
    /// Escaped, capped command line.
    pub command: String,
    pub command_truncated: bool,
    /// The first argument after the program (raw, capped), for telling
    /// bronzed's own workers apart.
    pub arg1: String,
}

/// Every process at one moment.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub taken: Instant,
    pub processes: Vec<Process>,
    pub truncated: bool,
    pub uptime: Duration,
}

/// System constants the figures need.
#[derive(Debug, Clone, Copy)]
pub struct Units {
    pub clock_ticks: u64,
    pub page_size: u64,
}

impl Units {
    pub fn of_system() -> Units {
        use nix::unistd::{SysconfVar, sysconf};
        let value = |var| sysconf(var).ok().flatten().filter(|v| *v > 0).map(|v| v as u64);
        Units {
            clock_ticks: value(SysconfVar::CLK_TCK).unwrap_or(100),
            page_size: value(SysconfVar::PAGE_SIZE).unwrap_or(4096),
        }
    }

    pub fn seconds(&self, ticks: u64) -> f64 {
        ticks as f64 / self.clock_ticks as f64
    }
}

/// Reads at most `cap` bytes of `path`, and whether there was more.
fn read_capped(path: &Path, cap: usize, buf: &mut Vec<u8>) -> std::io::Result<bool> {
    buf.clear();
    let file = std::fs::File::open(path)?;
    file.take(cap as u64 + 1).read_to_end(buf)?;
    let more = buf.len() > cap;
    buf.truncate(cap);
    Ok(more)
}

/// How long a cached command line (and owner) is believed: a process may
/// rewrite its arguments (`setproctitle`) or change its uid without an
/// exec, so an entry is read again once it is this old.
pub const COMMAND_MAX_AGE: Duration = Duration::from_secs(10);

/// Command lines kept between readings, by pid and checked against the
/// process's start time and short name (an exec changes the name; a new
/// process with a reused pid has another start time). A refresh of
/// `processes --watch` then opens only `/proc/<pid>/stat` for most
/// processes instead of `stat` and `cmdline`. Entries of processes that
/// are gone are dropped at each reading, so the cache is never larger than
/// the last listing.
///
/// The cache also keeps processes' `/proc/<pid>/stat` open, up to a budget
/// of file descriptors (a quarter of the soft `RLIMIT_NOFILE`, at most
/// [`MAX_KEPT_STAT_FILES`]), and reads them again with `pread` at offset 0:
/// procfs writes the line anew for each read, and a descriptor stays bound
/// to its process (once it is gone, the read fails and the pid is opened
/// afresh, so a reused pid is never read through an old descriptor). That
/// halves the kernel's work per process and refresh (no path walk, no file
/// to allocate and free).
#[derive(Debug)]
pub struct CommandCache {
    entries: HashMap<i32, CachedCommand>,
    /// How many `stat` files may be kept open.
    budget: usize,
}

/// The most `stat` files a cache keeps open, whatever the limit.
pub const MAX_KEPT_STAT_FILES: usize = 4096;

impl Default for CommandCache {
    fn default() -> Self {
        use nix::sys::resource::{Resource, getrlimit};
        let soft = getrlimit(Resource::RLIMIT_NOFILE).map_or(0, |(soft, _)| soft);
        CommandCache::with_budget((soft / 4).min(MAX_KEPT_STAT_FILES as u64) as usize)
    }
}

#[derive(Debug)]
struct CachedCommand {
    start_ticks: u64,
    comm: String,
    /// The effective uid when the entry was read.
    uid: u32,
    /// `/proc/<pid>/stat`, kept open within the cache's budget.
    stat_file: Option<std::fs::File>,
    command: String,
    truncated: bool,
    arg1: String,
    read_at: Instant,
}

impl CommandCache {
    /// A cache that keeps at most `budget` `stat` files open.
    pub fn with_budget(budget: usize) -> CommandCache {
        CommandCache { entries: HashMap::new(), budget }
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// How many `stat` files it keeps open now.
    pub fn open_files(&self) -> usize {
        self.entries.values().filter(|e| e.stat_file.is_some()).count()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

/// Reads every process under `proc_root` (at most [`MAX_PROCESSES`]). A
/// process that ends while it is read is left out.
pub fn read(proc_root: &Path) -> Result<Snapshot, ProcError> {
    read_cached(proc_root, &mut CommandCache::default())
}

/// [`read`], taking command lines from `cache` where they are still
/// current and keeping the ones read for the next reading.
pub fn read_cached(proc_root: &Path, cache: &mut CommandCache) -> Result<Snapshot, ProcError> {
    let list_error = |error| ProcError::List { path: proc_root.to_path_buf(), error };
    let mut pids: Vec<i32> = Vec::new();
    let mut truncated = false;
    for entry in std::fs::read_dir(proc_root).map_err(list_error)? {
        let Ok(entry) = entry else { continue };
        let Some(pid) = entry.file_name().to_str().and_then(|n| n.parse::<i32>().ok()) else { continue };
        if pids.len() == MAX_PROCESSES {
            truncated = true;
            break;
        }
        pids.push(pid);
    }
    pids.sort_unstable();
    let uptime_path = proc_root.join("uptime");
    let uptime_text = std::fs::read_to_string(&uptime_path)
        .map_err(|error| ProcError::Parse { path: uptime_path.clone(), detail: error.to_string() })?;
    let uptime = uptime_text
        .split_whitespace()
        .next()
        .and_then(|s| s.parse::<f64>().ok())
        .filter(|s| s.is_finite() && *s >= 0.0)
        .ok_or_else(|| ProcError::Parse { path: uptime_path, detail: format!("{uptime_text:?}") })?;
    let taken = Instant::now();
    let mut processes = Vec::with_capacity(pids.len());
    let mut buf = Vec::with_capacity(1024);
    let mut path = proc_root.to_path_buf();
    let mut previous = std::mem::take(&mut cache.entries);
    cache.entries.reserve(pids.len());
    let mut kept = 0;
    for pid in pids {
        path.push(itoa(pid, &mut [0u8; 12]));
        let cached = previous.remove(&pid);
        if let Some((p, entry)) = read_one(&mut path, &mut buf, cached, taken, kept < cache.budget) {
            kept += usize::from(entry.stat_file.is_some());
            processes.push(p);
            cache.entries.insert(pid, entry);
        }
        path.pop();
    }
    Ok(Snapshot { taken, processes, truncated, uptime: Duration::from_secs_f64(uptime) })
}

/// `pid` in decimal without allocating.
fn itoa(pid: i32, buf: &mut [u8; 12]) -> &str {
    use std::io::Write;
    let mut cursor = std::io::Cursor::new(&mut buf[..]);
    let _ = write!(cursor, "{pid}");
    let len = cursor.position() as usize;
    std::str::from_utf8(&buf[..len]).unwrap_or("0")
}

/// Reads `/proc/<pid>/stat` with one `pread` at offset 0 (the kernel
/// writes the whole line in one go; it is far below the buffer's size).
fn read_stat(file: &std::fs::File, buf: &mut [u8; 4096]) -> Option<Stat> {
    let n = file.read_at(buf, 0).ok()?;
    parse_stat(&String::from_utf8_lossy(&buf[..n])).ok()
}

/// Opens `/proc/<pid>/stat` and reads it, with `owner` the owner of the
/// open file, which procfs gives the process's effective uid like the
/// directory's.
fn open_stat(path: &Path, buf: &mut [u8; 4096], owner: bool) -> Option<(std::fs::File, Stat, Option<u32>)> {
    let file = std::fs::File::open(path).ok()?;
    let uid = if owner { Some(file.metadata().ok()?.uid()) } else { None };
    let stat = read_stat(&file, buf)?;
    Some((file, stat, uid))
}

/// Reads one process; `keep`: its `stat` file may stay open in the entry.
fn read_one(
    dir: &mut PathBuf,
    buf: &mut Vec<u8>,
    mut cached: Option<CachedCommand>,
    now: Instant,
    keep: bool,
) -> Option<(Process, CachedCommand)> {
    let mut line = [0u8; 4096];
    // A cached entry young enough is checked against this reading's start
    // time and name below; its owner is believed until it is read again.
    let young = cached.as_ref().is_some_and(|c| now.saturating_duration_since(c.read_at) < COMMAND_MAX_AGE);
    // Its kept file, read again; if the process is gone (or the entry is
    // old: its owner is read from a fresh open), the path afresh.
    let kept = cached.as_mut().and_then(|c| c.stat_file.take()).filter(|_| young);
    let (file, stat, uid) = match kept.and_then(|f| read_stat(&f, &mut line).map(|s| (f, s))) {
        Some((file, stat)) => (file, stat, None),
        None => {
            dir.push("stat");
            let opened = open_stat(dir, &mut line, !young);
            dir.pop();
            opened?
        }
    };
    let stat_file = keep.then_some(file);
    let current = cached.filter(|c| young && c.start_ticks == stat.start_ticks && c.comm == stat.comm);
    let mut entry = match current {
        Some(entry) => entry,
        None => {
            let uid = match uid {
                Some(uid) => uid,
                // Cached but changed (an exec, a reused pid): the owner too.
                None => std::fs::metadata(&*dir).ok()?.uid(),
            };
            dir.push("cmdline");
            let more = read_capped(dir, MAX_COMMAND, buf);
            dir.pop();
            let more = more.unwrap_or_else(|_| {
                buf.clear();
                false
            });
            let (command, truncated) = command_text(buf, more, &stat.comm);
            let arg1 = buf
                .split(|b| *b == 0)
                .nth(1)
                .map(|a| String::from_utf8_lossy(&a[..a.len().min(64)]).into_owned())
                .unwrap_or_default();
            CachedCommand {
                start_ticks: stat.start_ticks,
                comm: stat.comm.clone(),
                uid,
                stat_file: None,
                command,
                truncated,
                arg1,
                read_at: now,
            }
        }
    };
    entry.stat_file = stat_file;
    let process = Process {
        stat,
        uid: entry.uid,
        command: entry.command.clone(),
        command_truncated: entry.truncated,
        arg1: entry.arg1.clone(),
    };
    Some((process, entry))
}

/// Who a process belongs to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    Bronzed,
    Service(String),
    /// A plugin compile worker (bronzed's child running `compile-worker`).
    PluginCompile,
    None,
}

impl Owner {
    pub fn kind(&self) -> &'static str {
        match self {
            Owner::Bronzed => "bronzed",
            Owner::Service(_) => "service",
            Owner::PluginCompile => "plugin-compile",
            Owner::None => "",
        }
    }

    pub fn name(&self) -> &str {
        match self {
            Owner::Bronzed => "bronzed",
            Owner::Service(name) => name,
            Owner::PluginCompile => "compile-worker",
            Owner::None => "",
        }
    }
}

/// The owner of each process in `procs` (same order): bronzed itself
/// (`bronzed`), a service's main process (`services`: pid → name) and
/// everything below it, and bronzed's compile workers and their children.
/// Walks up the parents at most 64 steps (a loop in hostile data ends).
pub fn owners(procs: &[Process], bronzed: i32, services: &HashMap<i32, String>) -> Vec<Owner> {
    let index: HashMap<i32, usize> = procs.iter().enumerate().map(|(i, p)| (p.stat.pid, i)).collect();
    let direct = |p: &Process| -> Option<Owner> {
        if p.stat.pid == bronzed {
            Some(Owner::Bronzed)
        } else if let Some(name) = services.get(&p.stat.pid) {
            Some(Owner::Service(name.clone()))
        } else if p.stat.ppid == bronzed && p.arg1 == crate::plugins::compile_worker::COMMAND {
            Some(Owner::PluginCompile)
        } else {
            None
        }
    };
    procs
        .iter()
        .map(|p| {
            let mut at = p;
            for _ in 0..64 {
                if let Some(owner) = direct(at) {
                    // Children of bronzed are not bronzed itself.
                    return if owner == Owner::Bronzed && at.stat.pid != p.stat.pid { Owner::None } else { owner };
                }
                match index.get(&at.stat.ppid) {
                    Some(&i) if at.stat.ppid != at.stat.pid => at = &procs[i],
                    _ => break,
                }
            }
            Owner::None
        })
        .collect()
}

/// As PID 1 a service's processes are the members of its cgroup, which
/// also holds what left its process tree (a daemon that double-forked is
/// reparented to bronzed): those owners replace the tree's.
pub fn with_cgroup_members(owners: &mut [Owner], procs: &[Process], members: &HashMap<i32, String>) {
    for (owner, p) in owners.iter_mut().zip(procs) {
        if let Some(name) = members.get(&p.stat.pid) {
            *owner = Owner::Service(name.clone());
        }
    }
}

/// CPU ticks of each process at the previous reading, by (pid, start).
#[derive(Debug, Clone)]
pub struct CpuBase {
    pub taken: Instant,
    ticks: HashMap<(i32, u64), u64>,
}

impl CpuBase {
    pub fn of(snapshot: &Snapshot) -> CpuBase {
        let ticks = snapshot.processes.iter().map(|p| ((p.stat.pid, p.stat.start_ticks), p.stat.cpu_ticks)).collect();
        CpuBase { taken: snapshot.taken, ticks }
    }
}

/// CPU % of `p` (of one core): over the window since `base` when given
/// (a process started since counts from 0 ticks), else over its lifetime.
pub fn cpu_percent(p: &Stat, units: Units, uptime: Duration, base: Option<(&CpuBase, Duration)>) -> f64 {
    let (ticks, seconds) = match base {
        Some((base, window)) => {
            let before = base.ticks.get(&(p.pid, p.start_ticks)).copied().unwrap_or(0);
            (p.cpu_ticks.saturating_sub(before), window.as_secs_f64())
        }
        None => (p.cpu_ticks, uptime.as_secs_f64() - units.seconds(p.start_ticks)),
    };
    if seconds <= 0.0 { 0.0 } else { 100.0 * units.seconds(ticks) / seconds }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STAT: &str = "4242 (my (odd) name) S 1 4242 4242 0 -1 4194560 1000 0 0 0 150 50 0 0 20 0 3 0 12345 \
                        10000000 256 18446744073709551615 1 1 0 0 0 0 0 0 0 0 0 0 17 1 0 0 0 0 0\n";

    #[test]
    fn stat_fields_after_a_name_with_parentheses() {
        let s = parse_stat(STAT).unwrap();
        assert_eq!(
            s,
            Stat {
                pid: 4242,
                comm: "my (odd) name".into(),
                state: 'S',
                ppid: 1,
                cpu_ticks: 200,
                threads: 3,
                start_ticks: 12345,
                rss_pages: 256
            }
        );
    }

    #[test]
    fn short_or_broken_stat_is_an_error_naming_the_field() {
        assert_eq!(parse_stat("12 (x) S 1 2 3").unwrap_err(), "4 fields after the name; expected at least 24");
        assert!(parse_stat("12 x S").unwrap_err().contains("'('"));
        let bad = STAT.replace(" 150 50 ", " 150 zz ");
        assert!(parse_stat(&bad).unwrap_err().starts_with("field 15 \"zz\""), "{:?}", parse_stat(&bad));
    }

    #[test]
    fn command_lines_are_escaped_joined_and_capped() {
        assert_eq!(command_text(b"/bin/sh\0-c\0echo hi\0", false, "sh"), ("/bin/sh -c echo hi".into(), false));
        assert_eq!(command_text(b"", false, "kthreadd"), ("[kthreadd]".into(), false));
        assert_eq!(command_text(b"", false, "a\x1b[2Jb"), ("[a\\x1b[2Jb]".into(), false));
        let (text, cut) = command_text(b"evil\x1b]0;owned\x07\0a\nb\0back\\slash\0", false, "x");
        assert_eq!((text.as_str(), cut), ("evil\\x1b]0;owned\\x07 a\\nb back\\\\slash", false));
        let huge = vec![0x01u8; MAX_COMMAND];
        let (text, cut) = command_text(&huge, true, "x");
        assert!(cut && text.len() <= MAX_COMMAND && text.starts_with("\\x01\\x01"), "{} {cut}", text.len());
        // Many short arguments past the cap.
        let many: Vec<u8> = std::iter::repeat_n(b"abc\0".as_slice(), 2000).flatten().copied().collect();
        let (text, cut) = command_text(&many, false, "x");
        assert!(cut && text.len() <= MAX_COMMAND, "{} {cut}", text.len());
    }

    fn proc(pid: i32, ppid: i32, arg1: &str) -> Process {
        let stat =
            Stat { pid, comm: "x".into(), state: 'S', ppid, cpu_ticks: 0, threads: 1, start_ticks: 0, rss_pages: 0 };
        Process { stat, uid: 0, command: String::new(), command_truncated: false, arg1: arg1.into() }
    }

    #[test]
    fn owners_follow_parents_up_to_a_service_or_bronzed() {
        let procs = [
            proc(1, 0, ""),
            proc(10, 1, ""),                // bronzed
            proc(20, 10, ""),               // service "web"
            proc(21, 20, ""),               // its child
            proc(22, 21, ""),               // its grandchild
            proc(30, 10, "compile-worker"), // a compile worker
            proc(31, 10, "other"),          // another child of bronzed
            proc(40, 41, ""),               // a loop of parents
            proc(41, 40, ""),
        ];
        let services = HashMap::from([(20, "web".to_string())]);
        let owners = owners(&procs, 10, &services);
        let web = Owner::Service("web".into());
        assert_eq!(
            owners,
            [
                Owner::None,
                Owner::Bronzed,
                web.clone(),
                web.clone(),
                web,
                Owner::PluginCompile,
                Owner::None,
                Owner::None,
                Owner::None
            ]
        );
        // As PID 1: pid 31 left web's tree (reparented to bronzed) but is
        // in web's cgroup.
        let mut owners = owners;
        with_cgroup_members(&mut owners, &procs, &HashMap::from([(31, "web".to_string())]));
        assert_eq!(owners[6], Owner::Service("web".into()));
        assert_eq!(owners[5], Owner::PluginCompile);
    }

    #[test]
    fn cpu_percent_over_a_window_and_over_a_lifetime() {
        let units = Units { clock_ticks: 100, page_size: 4096 };
        let mut snap = Snapshot {
            taken: Instant::now(),
            processes: vec![proc(5, 1, "")],
            truncated: false,
            uptime: Duration::from_secs(100),
        };
        snap.processes[0].stat.cpu_ticks = 1000;
        snap.processes[0].stat.start_ticks = 5000; // started at 50 s
        let base = CpuBase::of(&snap);
        let mut now = snap.processes[0].stat.clone();
        now.cpu_ticks = 1050; // 0.5 s of CPU in 2 s
        let pct = cpu_percent(&now, units, Duration::from_secs(102), Some((&base, Duration::from_secs(2))));
        assert!((pct - 25.0).abs() < 1e-9, "{pct}");
        // A new process with the same pid (another start) counts from zero.
        now.start_ticks = 10_100;
        let pct = cpu_percent(&now, units, Duration::from_secs(102), Some((&base, Duration::from_secs(2))));
        assert!((pct - 525.0).abs() < 1e-9, "{pct}");
        // Lifetime: 10 s of CPU over 50 s.
        let pct = cpu_percent(&snap.processes[0].stat, units, Duration::from_secs(100), None);
        assert!((pct - 20.0).abs() < 1e-9, "{pct}");
    }

    /// A procfs tree with one process.
    fn fake_proc(root: &Path, pid: i32, comm: &str, start: u64, cmdline: &[u8]) {
        let dir = root.join(pid.to_string());
        std::fs::create_dir_all(&dir).unwrap();
        let stat = STAT
            .replacen("4242 (my (odd) name)", &format!("{pid} ({comm})"), 1)
            .replace(" 12345 ", &format!(" {start} "));
        std::fs::write(dir.join("stat"), stat).unwrap();
        std::fs::write(dir.join("cmdline"), cmdline).unwrap();
    }

    #[test]
    fn command_lines_are_cached_by_pid_start_and_name() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("uptime"), "100.00 50.00\n").unwrap();
        fake_proc(root, 7, "app", 500, b"app\0--one\0");
        fake_proc(root, 8, "other", 600, b"other\0");
        let mut cache = CommandCache::default();
        let command = |snap: &Snapshot, pid: i32| {
            snap.processes.iter().find(|p| p.stat.pid == pid).map(|p| (p.command.clone(), p.arg1.clone()))
        };
        let snap = read_cached(root, &mut cache).unwrap();
        assert_eq!(command(&snap, 7), Some(("app --one".into(), "--one".into())));
        assert_eq!(cache.len(), 2);
        // The arguments change without an exec: the cached line stands
        // (until COMMAND_MAX_AGE).
        std::fs::write(root.join("7/cmdline"), b"app\0--two\0").unwrap();
        let snap = read_cached(root, &mut cache).unwrap();
        assert_eq!(command(&snap, 7), Some(("app --one".into(), "--one".into())));
        // An exec changes the name: read again.
        fake_proc(root, 7, "app2", 500, b"app2\0--three\0");
        let snap = read_cached(root, &mut cache).unwrap();
        assert_eq!(command(&snap, 7), Some(("app2 --three".into(), "--three".into())));
        // The pid reused by a process started later: read again.
        fake_proc(root, 7, "app2", 900, b"app2\0--four\0");
        let snap = read_cached(root, &mut cache).unwrap();
        assert_eq!(command(&snap, 7), Some(("app2 --four".into(), "--four".into())));
        // Gone processes leave the cache; a fresh cache reads everything.
        std::fs::remove_dir_all(root.join("8")).unwrap();
        let snap = read_cached(root, &mut cache).unwrap();
        assert_eq!((snap.processes.len(), cache.len()), (1, 1));
        std::fs::write(root.join("7/cmdline"), b"app2\0--five\0").unwrap();
        let snap = read(root).unwrap();
        assert_eq!(command(&snap, 7), Some(("app2 --five".into(), "--five".into())));
    }

    #[test]
    fn stat_files_are_kept_open_within_the_budget_and_read_again() {
        let tmp = tempfile::tempdir().unwrap();
        let root = tmp.path();
        std::fs::write(root.join("uptime"), "100.00 50.00\n").unwrap();
        fake_proc(root, 7, "app", 500, b"app\0");
        fake_proc(root, 8, "other", 600, b"other\0");
        let mut cache = CommandCache::with_budget(1);
        read_cached(root, &mut cache).unwrap();
        assert_eq!((cache.len(), cache.open_files()), (2, 1), "one kept, within the budget");
        // New CPU figures are read through the kept file (pread at 0 reads
        // the file as it is now), and the other through its path.
        for pid in [7, 8] {
            let stat = std::fs::read_to_string(root.join(format!("{pid}/stat"))).unwrap();
            std::fs::write(root.join(format!("{pid}/stat")), stat.replacen(" 150 50 ", " 900 90 ", 1)).unwrap();
        }
        let snap = read_cached(root, &mut cache).unwrap();
        let ticks: Vec<u64> = snap.processes.iter().map(|p| p.stat.cpu_ticks).collect();
        assert_eq!(ticks, [990, 990]);
        // The process behind a kept file is replaced (a reused pid): its
        // start time tells, and its command line is read again.
        fake_proc(root, 7, "app", 700, b"app\0--new\0");
        let snap = read_cached(root, &mut cache).unwrap();
        assert_eq!(snap.processes[0].command, "app --new");
        assert_eq!(CommandCache::with_budget(0).open_files(), 0);
        let mut none = CommandCache::with_budget(0);
        read_cached(root, &mut none).unwrap();
        assert_eq!((none.len(), none.open_files()), (2, 0));
    }

    #[test]
    fn a_kept_stat_file_of_a_process_that_ended_is_not_read_again() {
        let mut cache = CommandCache::with_budget(4096);
        let mut child = std::process::Command::new("sleep").arg("30").spawn().unwrap();
        let pid = child.id() as i32;
        let snap = read_cached(Path::new("/proc"), &mut cache).unwrap();
        assert!(snap.processes.iter().any(|p| p.stat.pid == pid));
        assert!(cache.open_files() >= 2, "kept: {}", cache.open_files());
        child.kill().unwrap();
        child.wait().unwrap();
        let snap = read_cached(Path::new("/proc"), &mut cache).unwrap();
        assert!(!snap.processes.iter().any(|p| p.stat.pid == pid), "the ended child is not listed");
        let me = snap.processes.iter().find(|p| p.stat.pid == std::process::id() as i32).expect("self listed");
        assert!(me.stat.threads >= 1 && me.stat.rss_pages > 0, "{me:?}");
    }

    #[test]
    fn reads_this_process_from_proc() {
        let snap = read(Path::new("/proc")).unwrap();
        let me = snap.processes.iter().find(|p| p.stat.pid == std::process::id() as i32).expect("self listed");
        assert!(me.stat.threads >= 1 && me.stat.rss_pages > 0, "{me:?}");
        assert!(!me.command.is_empty() && !me.command.starts_with('['), "{me:?}");
    }
}
