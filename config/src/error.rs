//! The error and issue types every caller sees: what went wrong, where in
//! the document, and (for decode errors) on which line.

use std::fmt;

use thiserror::Error;

/// The path used for problems with the document as a whole.
pub const DOCUMENT_PATH: &str = "(document)";

/// A value that does not parse as its type, e.g. a CIDR without a prefix
/// length. The message names the offending text.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{0}")]
pub struct ValueError(String);

impl ValueError {
    pub(crate) fn new(message: impl Into<String>) -> Self {
        ValueError(message.into())
    }

    /// Builds the usual `invalid <what> "<text>": <reason>` message, the
    /// text shortened so a megabyte of garbage makes a readable error.
    pub(crate) fn invalid(what: &str, text: &str, reason: impl fmt::Display) -> Self {
        const SHOWN: usize = 80;
        match text.char_indices().nth(SHOWN) {
            Some((cut, _)) => ValueError(format!("invalid {what} {:?}...: {reason}", &text[..cut])),
            None => ValueError(format!("invalid {what} {text:?}: {reason}")),
        }
    }
}

/// A validation finding tied to a field, e.g.
/// `machine.time.minPoll: must not be greater than maxPoll (1024s)`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{path}: {message}")]
pub struct Issue {
    /// Dotted YAML path with `[index]` for sequence items.
    pub path: String,
    pub message: String,
}

impl Issue {
    pub(crate) fn new(path: impl Into<String>, message: impl Into<String>) -> Self {
        Issue { path: path.into(), message: message.into() }
    }
}

/// Why a document could not be decoded into a `MachineConfig`.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub struct DecodeError {
    /// Dotted YAML path with `[index]` for sequence items, or `(document)`.
    pub path: String,
    /// 1-based line of the offending node, when it exists in the document.
    pub line: Option<usize>,
    /// 1-based column of the offending node.
    pub column: Option<usize>,
    pub message: String,
}

impl DecodeError {
    pub(crate) fn document(message: impl Into<String>) -> Self {
        DecodeError { path: DOCUMENT_PATH.to_owned(), line: None, column: None, message: message.into() }
    }

    pub(crate) fn at(mut self, position: Option<(usize, usize)>) -> Self {
        if let Some((line, column)) = position {
            self.line = Some(line);
            self.column = Some(column);
        }
        self
    }
}

impl fmt::Display for DecodeError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&self.path)?;
        match (self.line, self.column) {
            (Some(line), Some(column)) => write!(f, " (line {line}, column {column})")?,
            (Some(line), None) => write!(f, " (line {line})")?,
            _ => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// Why `load` refused a config.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
pub enum ConfigError {
    #[error(transparent)]
    Decode(#[from] DecodeError),
    #[error("{}", join_issues(.0))]
    Invalid(Vec<Issue>),
}

fn join_issues(issues: &[Issue]) -> String {
    issues.iter().map(Issue::to_string).collect::<Vec<_>>().join("; ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_values_are_shortened() {
        let err = ValueError::invalid("hostname", &"é".repeat(100), "too long");
        assert_eq!(err.to_string(), format!("invalid hostname {:?}...: too long", "é".repeat(80)));
        let err = ValueError::invalid("hostname", "a_b", "bad");
        assert_eq!(err.to_string(), "invalid hostname \"a_b\": bad");
    }

    #[test]
    fn displays() {
        let err =
            DecodeError { path: "machine.hostname".into(), line: Some(3), column: Some(13), message: "bad".into() };
        assert_eq!(err.to_string(), "machine.hostname (line 3, column 13): bad");
        let err = DecodeError { column: None, ..err };
        assert_eq!(err.to_string(), "machine.hostname (line 3): bad");
        assert_eq!(DecodeError::document("empty").to_string(), "(document): empty");
        let invalid = ConfigError::Invalid(vec![Issue::new("a", "x"), Issue::new("b", "y")]);
        assert_eq!(invalid.to_string(), "a: x; b: y");
    }
}
