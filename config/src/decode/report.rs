//! Turns serde_yaml errors into `DecodeError`s: the path from
//! serde_path_to_error, the bare message (serde_yaml's own path prefix and
//! position suffix removed), and the most precise line and column known.

use serde_path_to_error::Segment as SpteSegment;

use crate::decode::locate::{Point, Segment, locate};
use crate::error::{DOCUMENT_PATH, DecodeError};

/// Stands in for a key that is not a string (e.g. a sequence used as a key).
const UNKNOWN_KEY: &str = "?";

/// Converts serde_path_to_error's path into our segments.
pub(crate) fn segments(path: &serde_path_to_error::Path) -> Vec<Segment> {
    path.iter()
        .map(|segment| match segment {
            SpteSegment::Seq { index } => Segment::Index(*index),
            SpteSegment::Map { key } => Segment::Key(key.clone()),
            SpteSegment::Enum { variant } => Segment::Key(variant.clone()),
            SpteSegment::Unknown => Segment::Key(UNKNOWN_KEY.to_owned()),
        })
        .collect()
}

/// Renders a path the way users see it: `machine.services[0].env`.
pub(crate) fn render(path: &[Segment]) -> String {
    let mut out = String::new();
    for segment in path {
        match segment {
            Segment::Key(key) if is_plain_key(key) => {
                if !out.is_empty() {
                    out.push('.');
                }
                out.push_str(key);
            }
            // Keys that would read ambiguously after a dot, like sysctl
            // names, are bracketed and quoted.
            Segment::Key(key) => out.push_str(&format!("[{key:?}]")),
            Segment::Index(index) => out.push_str(&format!("[{index}]")),
        }
    }
    if out.is_empty() { DOCUMENT_PATH.to_owned() } else { out }
}

fn is_plain_key(key: &str) -> bool {
    key == UNKNOWN_KEY || !key.is_empty() && key.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-')
}

/// serde_yaml's error text is `<its path>: <message> at line L column C`.
/// Its path is some prefix of ours (it is recorded where the error was
/// first stamped), so try each prefix, longest first.
fn bare_message(text: &str, path: &[Segment], position: Option<(usize, usize)>) -> String {
    let mut text = text;
    if let Some((line, column)) = position {
        let suffix = format!(" at line {line} column {column}");
        text = text.strip_suffix(suffix.as_str()).unwrap_or(text);
    }
    // The prefix can appear twice when serde_path_to_error re-wraps.
    'strip: loop {
        for len in (1..=path.len()).rev() {
            let prefix = format!("{}: ", render(&path[..len]));
            if let Some(rest) = text.strip_prefix(prefix.as_str()) {
                text = rest;
                continue 'strip;
            }
        }
        break;
    }
    polish(text)
}

/// Replaces serde's Rust-flavoured words with YAML ones.
fn polish(message: &str) -> String {
    message.replace("unit value", "null").replace("expected u32", "expected an integer from 0 to 4294967295")
}

/// The key named by a duplicate-key message, from either serde's derive
/// (``duplicate field `x` ``) or `UniqueMap` (`duplicate key "x"`).
fn duplicate_key(message: &str) -> Option<String> {
    if let Some(rest) = message.strip_prefix("duplicate field `") {
        return rest.strip_suffix('`').map(str::to_owned);
    }
    let quoted = message.strip_prefix("duplicate key \"")?.strip_suffix('"')?;
    (!quoted.contains('\\')).then(|| quoted.to_owned())
}

/// Builds the `DecodeError` for a schema error in `src`.
pub(crate) fn schema_error(src: &str, err: serde_path_to_error::Error<serde_yaml::Error>) -> DecodeError {
    let path = segments(err.path());
    let err = err.into_inner();
    let mut position = err.location().map(|loc| (loc.line(), loc.column()));
    let message = bare_message(&err.to_string(), &path, position);
    if let Some(key) = duplicate_key(&message) {
        // Point at the second occurrence rather than the mapping's start.
        let mut target = path.clone();
        target.push(Segment::Key(key));
        position = locate(src, &target, 2, Point::Key).or(position);
    } else if position.is_none() {
        position = locate(src, &path, 1, Point::Value);
    }
    DecodeError { path: render(&path), line: None, column: None, message }.at(position)
}

/// Builds the `DecodeError` for a YAML-level failure (syntax, several
/// documents, nesting too deep), which has no schema path.
pub(crate) fn yaml_error(err: &serde_yaml::Error) -> DecodeError {
    let position = err.location().map(|loc| (loc.line(), loc.column()));
    let text = err.to_string();
    let message = if text.starts_with("deserializing from YAML containing more than one document") {
        "expected a single YAML document, found several".to_owned()
    } else if text.starts_with("recursion limit exceeded") {
        "the document is nested too deeply".to_owned()
    } else if text.starts_with("repetition limit exceeded") {
        "the document expands too many aliases".to_owned()
    } else {
        let mut detail = text.clone();
        if let Some((line, column)) = position {
            detail = detail.replacen(&format!(" at line {line} column {column}"), "", 1);
        }
        format!("not valid YAML: {detail}")
    };
    DecodeError::document(message).at(position)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(k: &str) -> Segment {
        Segment::Key(k.to_owned())
    }

    #[test]
    fn renders_paths() {
        assert_eq!(render(&[]), "(document)");
        let path =
            [key("machine"), key("network"), key("interfaces"), Segment::Index(0), key("addresses"), Segment::Index(1)];
        assert_eq!(render(&path), "machine.network.interfaces[0].addresses[1]");
        let path = [key("machine"), key("sysctls"), key("net.ipv4.ip_forward")];
        assert_eq!(render(&path), "machine.sysctls[\"net.ipv4.ip_forward\"]");
    }

    #[test]
    fn strips_yaml_path_and_position() {
        let path = [key("machine"), key("list"), Segment::Index(1), key("x")];
        assert_eq!(bare_message("machine.list[1]: bad value at line 5 column 7", &path, Some((5, 7))), "bad value");
        assert_eq!(bare_message("missing field `version`", &[], Some((1, 1))), "missing field `version`");
        assert_eq!(
            bare_message("machine: invalid type: unit value, expected a sequence", &path, None),
            "invalid type: null, expected a sequence"
        );
    }

    #[test]
    fn finds_duplicate_keys() {
        assert_eq!(duplicate_key("duplicate field `hostname`").as_deref(), Some("hostname"));
        assert_eq!(duplicate_key("duplicate key \"A\"").as_deref(), Some("A"));
        assert_eq!(duplicate_key("duplicate key \"a\\\"b\""), None);
        assert_eq!(duplicate_key("unknown field `x`"), None);
    }
}
