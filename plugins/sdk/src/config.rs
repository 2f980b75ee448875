//! This instance's configuration through `bronze:host/config` (manifest:
//! `config = true`).
//!
//! Error messages name the key, so a check can hand them straight to
//! [`Report::unknown`](crate::Report::unknown).

use std::str::FromStr;

/// The value of `key`, or `None` when the operator did not set it.
pub fn get(key: &str) -> Option<String> {
    crate::host::bronze::host::config::get(key)
}

/// Every key and value, sorted by key.
pub fn entries() -> Vec<(String, String)> {
    crate::host::bronze::host::config::entries()
}

/// The value of `key`, or `default` when it is not set.
pub fn get_or(key: &str, default: &str) -> String {
    get(key).unwrap_or_else(|| default.to_string())
}

/// The value of `key`; an error naming the key when it is unset or empty
/// (an empty value is never a useful host, URL or port).
pub fn require(key: &str) -> Result<String, String> {
    match get(key) {
        Some(value) if !value.trim().is_empty() => Ok(value),
        Some(_) => Err(format!("config key `{key}` is empty")),
        None => Err(format!("config key `{key}` is required but not set")),
    }
}

/// The value of `key` parsed as `T` (surrounding whitespace ignored), `None`
/// when unset; an error naming the key and the expected type when it does
/// not parse.
pub fn get_parsed<T: FromStr>(key: &str) -> Result<Option<T>, String> {
    get(key).map(|value| parse(key, &value)).transpose()
}

/// Like [`get_parsed`], with `default` when the key is unset.
pub fn get_parsed_or<T: FromStr>(key: &str, default: T) -> Result<T, String> {
    Ok(get_parsed(key)?.unwrap_or(default))
}

/// Like [`get_parsed`], but an unset key is an error too.
pub fn require_parsed<T: FromStr>(key: &str) -> Result<T, String> {
    parse(key, &require(key)?)
}

fn parse<T: FromStr>(key: &str, value: &str) -> Result<T, String> {
    value.trim().parse().map_err(|_| format!("config key `{key}`: {value:?} is not a valid {}", type_label::<T>()))
}

/// `u16` rather than the full path for plain types, for readable messages.
fn type_label<T>() -> &'static str {
    let name = std::any::type_name::<T>();
    if name.contains('<') { name } else { name.rsplit("::").next().unwrap_or(name) }
}
