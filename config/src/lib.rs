//! The Bronze machine config: one YAML document (`version: v1alpha1`)
//! describing a node. This crate owns its schema and its strict decoding
//! (every error names a path and a line), cross-field validation, encoding,
//! diffing and the default template.

mod decode;
mod diff;
mod encode;
mod error;
mod schema;
mod template;
mod types;
mod validate;

pub use decode::{MAX_CONFIG_BYTES, decode};
pub use diff::diff;
pub use error::{ConfigError, DOCUMENT_PATH, DecodeError, Issue, ValueError};
pub use schema::*;
pub use template::{default_template, render_default};
pub use types::*;
pub use validate::{Loaded, Validation, load, validate};
