//! Build facts compiled into bronzed: the git commit (for Version) and the
//! build time (NTP replies claiming an earlier time are impossible).

fn main() {
    let commit = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=BRONZE_COMMIT={commit}");
    // SOURCE_DATE_EPOCH keeps reproducible builds reproducible.
    let built = std::env::var("SOURCE_DATE_EPOCH").ok().and_then(|s| s.parse::<u64>().ok()).unwrap_or_else(|| {
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
    });
    // A day of slack for clocks a little behind the build machine.
    println!("cargo:rustc-env=BRONZE_BUILD_UNIX={}", built.saturating_sub(86_400));
    println!("cargo:rerun-if-env-changed=SOURCE_DATE_EPOCH");
    println!("cargo:rerun-if-changed=../.git/HEAD");
}
