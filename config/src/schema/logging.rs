//! `machine.logging`: how verbose the node daemon is.

use serde::{Deserialize, Serialize};

use crate::types::serde_util::{is_default, keyword_enum};

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase", deny_unknown_fields, default, expecting = "a mapping")]
pub struct Logging {
    #[serde(skip_serializing_if = "is_default")]
    pub level: LogLevel,
}

keyword_enum! {
    #[derive(Default)]
    pub enum LogLevel ("log level", "a log level") {
        Trace => "trace",
        Debug => "debug",
        #[default]
        Info => "info",
        Warn => "warn",
        Error => "error",
    }
}
