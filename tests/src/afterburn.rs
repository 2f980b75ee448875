//! Afterburn (the metadata agent of Fedora CoreOS and Flatcar) as an
//! independent peer of Bronze's provider plugins: installed from crates.io
//! on first use into `target/afterburn` (idempotent, one installer at a
//! time across test processes), run inside a network namespace whose `lo`
//! holds 169.254.169.254, where a mock cloud (`mockcloud`) answers.
//!
//! Afterburn asks each cloud's real endpoint with its own paths (aws uses
//! dated paths like `/2021-01-03/meta-data/...`) and writes its
//! attributes as `AFTERBURN_<NAME>=<value>` lines.

use crate::netns::NetNs;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The Afterburn release the comparison is made with.
pub const VERSION: &str = "5.11.0";

/// `target/`, from the running executable (tests and bench binaries).
fn target_dir() -> PathBuf {
    let bronzed = crate::bin("bronzed");
    bronzed.parent().and_then(Path::parent).expect("target/<profile>/bronzed").to_path_buf()
}

/// The `afterburn` binary, installed with `cargo install afterburn --locked
/// --version 5.11.0 --root target/afterburn` when it is not there yet
/// (about 7 minutes on two cores; later calls return at once). Concurrent
/// callers wait for one installer (a lock file).
pub fn binary() -> PathBuf {
    let root = target_dir().join("afterburn");
    let bin = root.join("bin/afterburn");
    if installed(&bin) {
        return bin;
    }
    std::fs::create_dir_all(&root).expect("mkdir target/afterburn");
    let lock = std::fs::File::create(root.join(".install.lock")).expect("lock file");
    lock.lock().expect("lock target/afterburn");
    if !installed(&bin) {
        eprintln!("installing afterburn {VERSION} into {} (once; several minutes)", root.display());
        let status = Command::new(env!("CARGO"))
            .args(["install", "afterburn", "--locked", "--version", VERSION, "--root"])
            .arg(&root)
            .arg("--target-dir")
            .arg(target_dir().join("afterburn-build"))
            .stdout(Stdio::null())
            .status()
            .expect("run cargo install afterburn");
        assert!(status.success(), "cargo install afterburn {VERSION} failed: {status}");
    }
    drop(lock);
    assert!(installed(&bin), "{} is not afterburn {VERSION} after installing it", bin.display());
    bin
}

fn installed(bin: &Path) -> bool {
    Command::new(bin)
        .arg("--version")
        .output()
        .is_ok_and(|out| out.status.success() && String::from_utf8_lossy(&out.stdout).contains(VERSION))
}

/// The namespace for a side-by-side run: `lo` up holding 169.254.169.254;
/// None (after a loud line) where namespaces cannot be made.
pub fn namespace() -> Option<NetNs> {
    crate::provider::imds_namespace("an Afterburn comparison", &["169.254.169.254/32"])
}

pub use crate::provider::NsMock;

/// One Afterburn run.
#[derive(Debug)]
pub struct Run {
    pub success: bool,
    /// Process start to exit, attributes written.
    pub elapsed: Duration,
    /// `AFTERBURN_` prefix removed.
    pub attributes: BTreeMap<String, String>,
    pub stderr: String,
    /// From its first request to its last answer, by its own log's
    /// millisecond timestamps (its requests alone, without its start).
    pub requests_span: Option<Duration>,
}

/// `ip netns exec NS afterburn --provider PROVIDER --attributes FILE`.
pub fn run(afterburn: &Path, ns: &NetNs, provider: &str) -> Run {
    let dir = tempfile::tempdir().expect("tempdir");
    let file = dir.path().join("attributes");
    let started = Instant::now();
    let out = Command::new("ip")
        .args(["netns", "exec", ns.name()])
        .arg(afterburn)
        .args(["--provider", provider, "--attributes"])
        .arg(&file)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .output()
        .expect("run afterburn");
    let elapsed = started.elapsed();
    let text = std::fs::read_to_string(&file).unwrap_or_default();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    Run {
        success: out.status.success(),
        elapsed,
        attributes: parse_attributes(&text),
        requests_span: requests_span(&stderr),
        stderr,
    }
}

/// The time from the first `Fetching`/`Putting` line of Afterburn's log
/// (`Dec 05 16:05:04.447 INFO Fetching ...`) to its last `Fetch successful`.
pub fn requests_span(log: &str) -> Option<Duration> {
    let stamp = |line: &str| -> Option<u64> {
        let time = line.split_whitespace().nth(2)?;
        let (hms, millis) = time.split_once('.')?;
        let mut parts = hms.split(':').map(|p| p.parse::<u64>().ok());
        let (h, m, s) = (parts.next()??, parts.next()??, parts.next()??);
        Some(((h * 60 + m) * 60 + s) * 1000 + millis.parse::<u64>().ok()?)
    };
    let first = log.lines().find(|l| l.contains(" Fetching ") || l.contains(" Putting ")).and_then(stamp)?;
    let last = log.lines().rev().find(|l| l.contains("Fetch successful")).and_then(stamp)?;
    last.checked_sub(first).map(Duration::from_millis)
}

/// `AFTERBURN_KEY=value` lines as KEY → value.
pub fn parse_attributes(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once('='))
        .map(|(k, v)| (k.trim_start_matches("AFTERBURN_").to_string(), v.to_string()))
        .collect()
}

/// The two sides' differences, one sorted line each: a key only one side
/// has, or a value that differs.
pub fn compare(afterburn: &BTreeMap<String, String>, bronze: &BTreeMap<String, String>) -> Vec<String> {
    let mut out = Vec::new();
    for (k, v) in afterburn {
        match bronze.get(k) {
            None => out.push(format!("{k}: afterburn {v:?}, bronze none")),
            Some(b) if b != v => out.push(format!("{k}: afterburn {v:?}, bronze {b:?}")),
            Some(_) => {}
        }
    }
    for (k, v) in bronze {
        if !afterburn.contains_key(k) {
            out.push(format!("{k}: afterburn none, bronze {v:?}"));
        }
    }
    out.sort();
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn attributes_parse_and_compare() {
        let a = parse_attributes("AFTERBURN_AWS_REGION=us-east-1\nAFTERBURN_AWS_HOSTNAME=a=b\n\n");
        assert_eq!(a["AWS_REGION"], "us-east-1");
        assert_eq!(a["AWS_HOSTNAME"], "a=b");
        let log = "Dec 05 16:05:04.447 INFO Putting http://x/latest/api/token: Attempt #1\n\
                   Dec 05 16:05:04.450 INFO Fetch successful\n\
                   Dec 05 16:05:04.451 INFO Fetching http://x/a: Attempt #1\n\
                   Dec 05 16:05:05.012 INFO Fetch successful\n";
        assert_eq!(requests_span(log), Some(Duration::from_millis(565)));
        assert_eq!(requests_span("nothing"), None);
        let mut b = a.clone();
        b.insert("AWS_REGION".into(), "eu-west-1".into());
        b.insert("AWS_ZONE".into(), "x".into());
        b.remove("AWS_HOSTNAME");
        assert_eq!(
            compare(&a, &b),
            [
                r#"AWS_HOSTNAME: afterburn "a=b", bronze none"#,
                r#"AWS_REGION: afterburn "us-east-1", bronze "eu-west-1""#,
                r#"AWS_ZONE: afterburn none, bronze "x""#,
            ]
        );
    }
}
