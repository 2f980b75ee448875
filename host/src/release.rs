//! The release this system reports (`Version.tag`, the support bundle):
//! as PID 1, the image's release file (`/etc/bronze-release`, written by the
//! image builder, replaced by an upgrade's initramfs), so an upgraded node
//! says what it runs; otherwise, or if that file is missing or malformed,
//! the version `bronzed` was compiled as.

use crate::lifecycle::Mode;
use std::path::Path;

/// The version `bronzed` was compiled as.
pub const COMPILED: &str = concat!("v", env!("CARGO_PKG_VERSION"));
/// Where the image keeps its release name (see
/// `bronze_images::initramfs::RELEASE_PATH`).
pub const RELEASE_FILE: &str = "/etc/bronze-release";
/// More than a release line can be; a larger file is not read.
const MAX_BYTES: u64 = 256;

/// The release a node in `mode` reports.
pub fn for_mode(mode: Mode) -> String {
    match mode {
        Mode::Pid1 => read(Path::new(RELEASE_FILE)),
        Mode::Process => COMPILED.to_string(),
    }
}

/// The release in `path` (one line, the upgrade manifest's grammar), or
/// [`COMPILED`] with a warning saying why not.
pub fn read(path: &Path) -> String {
    use std::io::Read;
    let mut text = String::new();
    let read = std::fs::File::open(path).and_then(|f| f.take(MAX_BYTES).read_to_string(&mut text));
    let line = text.strip_suffix('\n').unwrap_or(&text);
    let problem = match read {
        Err(e) => e.to_string(),
        Ok(_) => match bronze_bundle::upgrade::check_release(line) {
            Ok(()) => return line.to_string(),
            Err(e) => e,
        },
    };
    tracing::warn!(path = %path.display(), "no release from the image ({problem}): reporting {COMPILED}");
    COMPILED.to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_image_release_file_wins_when_it_is_one_good_line() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("bronze-release");
        std::fs::write(&path, "v0.2.0-rc.1+build7\n").unwrap();
        assert_eq!(read(&path), "v0.2.0-rc.1+build7");
        for bad in ["", "\n", "v1 two words\n", "v1\nv2\n", "v1\u{1b}[2J\n", &"9".repeat(65)] {
            std::fs::write(&path, bad).unwrap();
            assert_eq!(read(&path), COMPILED, "{bad:?}");
        }
        std::fs::write(&path, "v".repeat(10_000)).unwrap();
        assert_eq!(read(&path), COMPILED, "a large file");
        assert_eq!(read(&dir.path().join("missing")), COMPILED);
        assert_eq!(for_mode(Mode::Process), COMPILED);
    }
}
