//! User data: when it is a Bronze machine config and the node has none,
//! it is applied like an API apply (strict decode, validation, atomic
//! write, audit), so a cloud node comes up secured without any client.
//! Anything else (`#cloud-config`, a script, MIME multipart) is ignored
//! with a warning; a stored config is never replaced.

/// What user data looks like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    None,
    /// A YAML mapping with `version:` or `machine:` at the top: meant for
    /// Bronze (it may still be invalid).
    MachineConfig,
    CloudConfig,
    Script,
    Other,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::None => "none",
            Kind::MachineConfig => "machine-config",
            Kind::CloudConfig => "cloud-config",
            Kind::Script => "script",
            Kind::Other => "other",
        }
    }
}

/// Classifies user data without decoding it.
pub fn classify(bytes: &[u8]) -> Kind {
    let text = match std::str::from_utf8(bytes) {
        Ok(text) => text.trim_start_matches('\u{feff}'),
        Err(_) => return if bytes.is_empty() { Kind::None } else { Kind::Other },
    };
    let first = text.lines().map(str::trim_end).find(|l| !l.trim().is_empty());
    let Some(first) = first else { return Kind::None };
    if first.starts_with("#cloud-config") || first.starts_with("#include") || first.starts_with("#cloud-boothook") {
        return Kind::CloudConfig;
    }
    if first.starts_with("#!") {
        return Kind::Script;
    }
    if first.to_ascii_lowercase().starts_with("content-type:") || first.starts_with("MIME-Version") {
        return Kind::Other;
    }
    // A machine config's top-level keys are `version` and `machine`.
    let top_level = text
        .lines()
        .filter(|l| !l.starts_with([' ', '\t', '#', '-']) && !l.trim().is_empty())
        .filter_map(|l| l.split_once(':').map(|(k, _)| k.trim()));
    for key in top_level {
        if key == "version" || key == "machine" {
            return Kind::MachineConfig;
        }
    }
    Kind::Other
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn classifies() {
        assert_eq!(classify(b""), Kind::None);
        assert_eq!(classify(b"\n  \n"), Kind::None);
        assert_eq!(classify(b"#cloud-config\nusers: []\n"), Kind::CloudConfig);
        assert_eq!(classify(b"#!/bin/sh\necho hi\n"), Kind::Script);
        assert_eq!(classify(b"Content-Type: multipart/mixed; boundary=x\n"), Kind::Other);
        assert_eq!(classify(b"version: v1alpha1\nmachine:\n  hostname: a\n"), Kind::MachineConfig);
        assert_eq!(classify(b"# a comment\nmachine:\n  api: {}\n"), Kind::MachineConfig);
        assert_eq!(classify(b"machine: [\n"), Kind::MachineConfig, "invalid but meant for Bronze");
        assert_eq!(classify(b"hello: world\n"), Kind::Other);
        assert_eq!(classify(&[0xff, 0xfe, 0x00]), Kind::Other);
    }
}
