//! `Role`: what a client certificate lets its holder do on the node API.
//! Carried in client certificates (not in the machine config itself).

use std::fmt;
use std::str::FromStr;

use crate::error::ValueError;
use crate::types::serde_util::text_serde;

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Role {
    /// Everything, including applying configs and rebooting.
    Admin,
    /// Day-to-day operations (restart services, read logs), no config changes.
    Operator,
    /// Read-only access.
    Reader,
}

impl Role {
    pub const ALL: [Role; 3] = [Role::Admin, Role::Operator, Role::Reader];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Admin => "os:admin",
            Role::Operator => "os:operator",
            Role::Reader => "os:reader",
        }
    }
}

impl FromStr for Role {
    type Err = ValueError;

    fn from_str(s: &str) -> Result<Self, ValueError> {
        Role::ALL
            .into_iter()
            .find(|role| role.as_str() == s)
            .ok_or_else(|| ValueError::invalid("role", s, "expected one of os:admin, os:operator, os:reader"))
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

text_serde!(Role, "a role: os:admin, os:operator or os:reader");

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips() {
        for role in Role::ALL {
            assert_eq!(role.to_string().parse::<Role>().unwrap(), role);
        }
        let err = "os:root".parse::<Role>().unwrap_err().to_string();
        assert_eq!(err, "invalid role \"os:root\": expected one of os:admin, os:operator, os:reader");
    }
}
