//! Strict decoding of a machine config document: size and encoding checks,
//! a plain YAML pass, a version check, then the schema pass. Every error
//! names a path and, when the node exists in the document, its line.

mod depth;
mod locate;
mod report;
mod shape;

use serde::Deserialize;

use crate::error::DecodeError;
use crate::schema::{MachineConfig, Version};
use shape::Shape;

/// Configs larger than this are refused before parsing.
pub const MAX_CONFIG_BYTES: usize = 1024 * 1024;

/// Decodes one `v1alpha1` document. Unknown keys, duplicate keys and
/// malformed values are errors; cross-field rules are left to `validate`.
pub fn decode(bytes: &[u8]) -> Result<MachineConfig, DecodeError> {
    if bytes.len() > MAX_CONFIG_BYTES {
        return Err(DecodeError::document(format!(
            "config is {} bytes; the limit is {MAX_CONFIG_BYTES} bytes",
            bytes.len()
        )));
    }
    let src = std::str::from_utf8(bytes).map_err(|err| utf8_error(bytes, err.valid_up_to()))?;
    // Editors on some systems start files with a byte order mark.
    let src = src.strip_prefix('\u{feff}').unwrap_or(src);
    if let Some(position) = depth::too_deep(src) {
        return Err(DecodeError::document(format!("brackets nest more than {} levels deep", depth::MAX_FLOW_DEPTH))
            .at(Some(position)));
    }
    match shape::shape(src).map_err(|err| report::yaml_error(&err))? {
        Shape::Mapping => {}
        Shape::Empty => {
            return Err(DecodeError::document("the config is empty; expected a mapping with `version: v1alpha1`"));
        }
        Shape::Other(found) => {
            return Err(DecodeError::document(format!(
                "expected a mapping with `version: v1alpha1` at the top level, found {found}"
            ))
            .at(locate::locate(src, &[], 1, locate::Point::Value)));
        }
    }
    check_version(src)?;
    serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(src))
        .map_err(|err| report::schema_error(src, err))
}

/// Just the `version` key, so an unsupported version is reported as such
/// rather than as whatever schema difference comes first.
#[derive(Deserialize)]
struct VersionProbe {
    #[serde(default)]
    version: Option<Version>,
}

fn check_version(src: &str) -> Result<(), DecodeError> {
    let probe: VersionProbe = serde_path_to_error::deserialize(serde_yaml::Deserializer::from_str(src))
        .map_err(|err| report::schema_error(src, err))?;
    match probe.version {
        Some(_) => Ok(()),
        None => Err(DecodeError::document("missing field `version`; expected `version: v1alpha1`")),
    }
}

fn utf8_error(bytes: &[u8], offset: usize) -> DecodeError {
    let valid = &bytes[..offset];
    let line = valid.iter().filter(|&&b| b == b'\n').count() + 1;
    let line_start = valid.iter().rposition(|&b| b == b'\n').map_or(0, |i| i + 1);
    DecodeError::document(format!("invalid UTF-8 at byte offset {offset}")).at(Some((line, offset - line_start + 1)))
}
