//! Kernel config fragments (`images/kernel/*.config`) and the check that a
//! resolved `.config` sets every option the fragment asks for.
//!
//! kconfig drops an option silently when its dependencies are not met (and
//! `make olddefconfig` then leaves it unset), so a fragment alone proves
//! nothing: [`Fragment::check`] compares it with the `.config` the build
//! used, and the build fails naming each option that is not as asked.

use crate::{Error, Result};
use std::collections::BTreeMap;
use std::path::Path;

/// What a fragment asks of one option.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Want {
    /// `CONFIG_X=value` (`y`, a number, or a quoted string as written).
    Value(String),
    /// `# CONFIG_X is not set`.
    Off,
}

impl std::fmt::Display for Want {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Want::Value(v) => f.write_str(v),
            Want::Off => f.write_str("not set"),
        }
    }
}

/// One option of a fragment that the resolved config does not set as asked.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    /// `CONFIG_...`.
    pub name: String,
    /// The fragment's line.
    pub line: usize,
    pub wanted: Want,
    /// What the `.config` has (`Off` when unset or absent).
    pub got: Want,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "line {}: {} asked {}, got {}", self.line, self.name, self.wanted, self.got)?;
        if self.wanted != Want::Off && self.got == Want::Off {
            f.write_str(" (a dependency is off or the option does not exist in this kernel)")?;
        }
        Ok(())
    }
}

/// A parsed fragment: each option once, with the line that asks for it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fragment {
    pub options: BTreeMap<String, (usize, Want)>,
}

/// Whether `name` is an option name (`CONFIG_` and then `[A-Za-z0-9_]+`).
fn is_option(name: &str) -> bool {
    name.strip_prefix("CONFIG_")
        .is_some_and(|rest| !rest.is_empty() && rest.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_'))
}

impl Fragment {
    /// Parses a fragment. Lines are blank, comments, `CONFIG_X=value` or
    /// `# CONFIG_X is not set`; anything else, an option asked twice, or
    /// `CONFIG_X=n` (spelled `# ... is not set` in kconfig) is an error naming
    /// the line.
    pub fn parse(text: &str, path: &Path) -> Result<Fragment> {
        let mut options = BTreeMap::new();
        for (i, raw) in text.lines().enumerate() {
            let line = i + 1;
            let err = |reason: String| Error::Fragment { path: path.to_path_buf(), line, reason };
            let trimmed = raw.trim();
            let (name, want) = if let Some(comment) = trimmed.strip_prefix('#') {
                match comment.trim().strip_suffix(" is not set") {
                    Some(name) if is_option(name.trim()) => (name.trim().to_string(), Want::Off),
                    _ => continue,
                }
            } else if trimmed.is_empty() {
                continue;
            } else {
                let Some((name, value)) = trimmed.split_once('=') else {
                    return Err(err(format!("expected CONFIG_NAME=value or a comment, found {trimmed:?}")));
                };
                if !is_option(name) {
                    return Err(err(format!("{name:?} is not an option name (CONFIG_ and letters, digits, _)")));
                }
                if value.is_empty() {
                    return Err(err(format!("{name} has no value")));
                }
                if value == "n" {
                    return Err(err(format!("write `# {name} is not set` instead of {name}=n")));
                }
                if value == "m" {
                    return Err(err(format!("{name}=m: Bronze's kernel builds no modules; use y")));
                }
                (name.to_string(), Want::Value(value.to_string()))
            };
            if let Some((first, _)) = options.get(&name) {
                return Err(err(format!("{name} is already asked for on line {first}")));
            }
            options.insert(name, (line, want));
        }
        Ok(Fragment { options })
    }

    /// Reads and parses the fragment at `path`.
    pub fn read(path: &Path) -> Result<Fragment> {
        let text = std::fs::read_to_string(path).map_err(|e| Error::io("read", path, e))?;
        Fragment::parse(&text, path)
    }

    /// Every option whose value in the resolved `.config` text differs from
    /// what the fragment asks, in name order.
    pub fn check(&self, config: &str) -> Vec<Mismatch> {
        let resolved = resolved_values(config);
        self.options
            .iter()
            .filter_map(|(name, (line, wanted))| {
                let got = resolved.get(name.as_str()).map_or(Want::Off, |v| Want::Value(v.to_string()));
                (got != *wanted).then(|| Mismatch { name: name.clone(), line: *line, wanted: wanted.clone(), got })
            })
            .collect()
    }
}

/// The set options of a `.config` (`CONFIG_X=value` lines).
pub fn resolved_values(config: &str) -> BTreeMap<&str, &str> {
    config.lines().filter_map(|line| line.split_once('=')).filter(|(name, _)| is_option(name)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<Fragment> {
        Fragment::parse(text, Path::new("frag.config"))
    }

    #[test]
    fn fragments_parse_values_and_offs_and_skip_comments() {
        let f = parse("# a comment\n\nCONFIG_A=y\nCONFIG_B=\"-bronze\"\n# CONFIG_C is not set\nCONFIG_D=64\n").unwrap();
        assert_eq!(f.options.len(), 4);
        assert_eq!(f.options["CONFIG_A"], (3, Want::Value("y".into())));
        assert_eq!(f.options["CONFIG_B"], (4, Want::Value("\"-bronze\"".into())));
        assert_eq!(f.options["CONFIG_C"], (5, Want::Off));
    }

    #[test]
    fn bad_fragment_lines_are_errors_naming_the_line() {
        let cases = [
            ("CONFIG_A=y\nCONFIG_A=y\n", "frag.config:2: CONFIG_A is already asked for on line 1"),
            ("CONFIG_A=y\nBPF=y\n", "frag.config:2: \"BPF\" is not an option name"),
            ("CONFIG_A\n", "frag.config:1: expected CONFIG_NAME=value"),
            ("CONFIG_A=n\n", "frag.config:1: write `# CONFIG_A is not set` instead of CONFIG_A=n"),
            ("CONFIG_A=m\n", "frag.config:1: CONFIG_A=m: Bronze's kernel builds no modules"),
            ("CONFIG_A=\n", "frag.config:1: CONFIG_A has no value"),
            ("CONFIG_A=y\n# CONFIG_A is not set\n", "frag.config:2: CONFIG_A is already asked"),
        ];
        for (text, want) in cases {
            let err = parse(text).unwrap_err().to_string();
            assert!(err.starts_with(want), "{text:?}: {err}");
        }
    }

    #[test]
    fn check_names_dropped_wrong_and_unwanted_options() {
        let f =
            parse("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=\"x\"\n# CONFIG_D is not set\n# CONFIG_E is not set\n").unwrap();
        let config = "CONFIG_A=y\n# CONFIG_B is not set\nCONFIG_C=\"y\"\nCONFIG_D=y\n";
        let bad = f.check(config);
        let text: Vec<String> = bad.iter().map(ToString::to_string).collect();
        assert_eq!(
            text,
            [
                "line 2: CONFIG_B asked y, got not set (a dependency is off or the option does not exist in this kernel)",
                "line 3: CONFIG_C asked \"x\", got \"y\"",
                "line 4: CONFIG_D asked not set, got y",
            ]
        );
        assert!(f.check("CONFIG_A=y\nCONFIG_B=y\nCONFIG_C=\"x\"\n").is_empty());
    }

    #[test]
    fn the_repo_fragment_parses() {
        let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("kernel/bronze.config");
        let f = Fragment::read(&path).unwrap();
        for name in ["CONFIG_PVH", "CONFIG_EFI_STUB", "CONFIG_VIRTIO_NET", "CONFIG_EXT4_FS", "CONFIG_BONDING"] {
            assert_eq!(f.options[name].1, Want::Value("y".into()), "{name}");
        }
        assert_eq!(f.options["CONFIG_MODULES"].1, Want::Off);
    }
}
