//! Rules for `machine.api`: the node needs a server certificate, given or
//! mintable.

use crate::schema::Api;
use crate::validate::Validation;

pub(super) fn check(api: &Api, out: &mut Validation) {
    match (&api.crt, &api.key) {
        (Some(_), None) => out.error("machine.api.key", "required when machine.api.crt is set"),
        (None, Some(_)) => out.error("machine.api.crt", "required when machine.api.key is set"),
        (None, None) if api.ca.key.is_none() => out.error(
            "machine.api.ca.key",
            "required to mint the node's server certificate when machine.api.crt is not set",
        ),
        _ => {}
    }
}
