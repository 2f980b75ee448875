//! `plugin.toml`: what a plugin is (id, version, world), which `bronze:host`
//! interfaces it may import, the config keys it reads and the limits it
//! needs. Decoded strictly: unknown keys are errors, and every error names
//! the field, its line and column, and what was expected.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt;
use std::str::FromStr;

use bronze_config::{ByteSize, Duration, Fact, PluginId};
use serde::de::{self, Visitor};
use serde::{Deserialize, Deserializer, Serialize};

use crate::capability::Capability;
use crate::text::escape;
pub(crate) use crate::version::Version;

/// The manifest's file name inside a bundle.
pub const MANIFEST_FILE: &str = "plugin.toml";

/// Largest accepted `plugin.toml`; a manifest is a few hundred bytes, so
/// anything near this is a mistake, not a plugin.
pub const MAX_MANIFEST_BYTES: usize = 64 * 1024;

/// The WIT package every capability interface lives in.
pub const HOST_PACKAGE: &str = "bronze:host";

/// Interfaces (without version) that only define types: importing them
/// needs no capability, and a host links them as empty instances.
pub const TYPE_ONLY_INTERFACES: &[&str] =
    &["bronze:host/types", "bronze:plugin/health", "bronze:plugin/metadata", "bronze:plugin/network"];

/// A decoded `plugin.toml`.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a TOML document")]
pub struct Manifest {
    pub id: PluginId,
    pub version: Version,
    pub world: World,
    #[serde(default, deserialize_with = "one_line")]
    pub description: Option<String>,
    #[serde(default)]
    pub capabilities: Capabilities,
    /// The config keys the plugin reads, by name.
    #[serde(default, deserialize_with = "config_keys")]
    pub config: BTreeMap<String, ConfigKey>,
    #[serde(default)]
    pub limits: ManifestLimits,
    /// `[grants]`: what a first-party plugin shipped in the image is
    /// granted while no machine config says otherwise (same shape as
    /// `machine.plugins.instances[].grants`). Each grant must be for a
    /// capability the manifest requests. Installed plugins get only what
    /// the operator grants; this table is ignored for them.
    #[serde(default)]
    pub grants: Option<bronze_config::Grants>,
}

/// The world a plugin's component targets (see `wit/plugin.wit`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum World {
    HealthCheck,
    MetadataProvider,
    NetworkConfigurator,
}

impl World {
    pub const ALL: &'static [World] = &[World::HealthCheck, World::MetadataProvider, World::NetworkConfigurator];

    pub const fn as_str(self) -> &'static str {
        match self {
            World::HealthCheck => "health-check",
            World::MetadataProvider => "metadata-provider",
            World::NetworkConfigurator => "network-configurator",
        }
    }
}

/// Why a world name was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown world {0:?}, expected one of health-check, metadata-provider, network-configurator")]
pub struct UnknownWorld(String);

impl FromStr for World {
    type Err = UnknownWorld;

    fn from_str(s: &str) -> Result<Self, UnknownWorld> {
        World::ALL.iter().copied().find(|w| w.as_str() == s).ok_or_else(|| UnknownWorld(s.chars().take(80).collect()))
    }
}

impl fmt::Display for World {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

struct WorldVisitor;

impl Visitor<'_> for WorldVisitor {
    type Value = World;

    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str("a world name: health-check, metadata-provider or network-configurator")
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<World, E> {
        v.parse().map_err(E::custom)
    }
}

impl<'de> Deserialize<'de> for World {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_str(WorldVisitor)
    }
}

impl Serialize for World {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(self.as_str())
    }
}

/// `[capabilities]`: the `bronze:host` interfaces the component may import
/// beyond `log`, which is always allowed.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [capabilities] table")]
pub struct Capabilities {
    #[serde(default)]
    pub config: bool,
    #[serde(default, deserialize_with = "unique_facts")]
    pub facts: Vec<Fact>,
    #[serde(default)]
    pub http: bool,
    #[serde(default)]
    pub probe: bool,
    #[serde(default)]
    pub volumes: bool,
}

/// One `[config.<key>]` table.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(try_from = "RawConfigKey")]
pub struct ConfigKey {
    /// The instance must set it.
    pub required: bool,
    /// Used when the instance does not set it.
    pub default: Option<String>,
    pub description: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [config.<key>] table")]
struct RawConfigKey {
    #[serde(default)]
    required: bool,
    #[serde(default)]
    default: Option<String>,
    #[serde(default, deserialize_with = "one_line")]
    description: Option<String>,
}

impl TryFrom<RawConfigKey> for ConfigKey {
    type Error = String;

    fn try_from(raw: RawConfigKey) -> Result<Self, String> {
        if raw.required && raw.default.is_some() {
            return Err("a key with `required = true` cannot have a `default` (the default would never be used)".into());
        }
        Ok(ConfigKey { required: raw.required, default: raw.default, description: raw.description })
    }
}

/// `[limits]`: what the plugin needs per instance; the operator's machine
/// config may override each of them.
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, expecting = "a [limits] table")]
pub struct ManifestLimits {
    #[serde(default, deserialize_with = "nonzero_size")]
    pub memory: Option<ByteSize>,
    /// Per call.
    #[serde(default, deserialize_with = "nonzero_duration")]
    pub timeout: Option<Duration>,
    /// Calls running at once.
    #[serde(default, deserialize_with = "at_least_one")]
    pub concurrency: Option<u32>,
}

impl ManifestLimits {
    /// The same limits in the machine config's type, for merging with the
    /// operator's overrides.
    pub fn to_config_limits(&self) -> bronze_config::Limits {
        bronze_config::Limits { memory: self.memory, concurrency: self.concurrency, timeout: self.timeout.clone() }
    }
}

/// Longest `description` accepted, in characters.
const MAX_DESCRIPTION: usize = 256;

fn one_line<'de, D: Deserializer<'de>>(d: D) -> Result<Option<String>, D::Error> {
    let text = String::deserialize(d)?;
    if text.chars().any(crate::text::is_unsafe) {
        return Err(de::Error::custom("expected one line of text without control or bidirectional characters"));
    }
    if text.chars().count() > MAX_DESCRIPTION {
        return Err(de::Error::custom(format!("expected at most {MAX_DESCRIPTION} characters")));
    }
    Ok(Some(text))
}

fn unique_facts<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<Fact>, D::Error> {
    let facts = Vec::<Fact>::deserialize(d)?;
    let mut seen = BTreeSet::new();
    for fact in &facts {
        if !seen.insert(fact) {
            return Err(de::Error::custom(format!("fact {:?} is listed twice", fact.as_str())));
        }
    }
    Ok(facts)
}

fn nonzero_size<'de, D: Deserializer<'de>>(d: D) -> Result<Option<ByteSize>, D::Error> {
    let size = ByteSize::deserialize(d)?;
    if size.as_u64() == 0 {
        return Err(de::Error::custom("expected a size above zero, like 16MiB"));
    }
    Ok(Some(size))
}

fn nonzero_duration<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Duration>, D::Error> {
    let duration = Duration::deserialize(d)?;
    if duration.is_zero() {
        return Err(de::Error::custom("expected a duration above zero, like 2s"));
    }
    Ok(Some(duration))
}

fn at_least_one<'de, D: Deserializer<'de>>(d: D) -> Result<Option<u32>, D::Error> {
    // Read wide so a negative number gets the same sentence as zero.
    let n = i64::deserialize(d)?;
    if n < 1 {
        return Err(de::Error::custom(format!("{n} is not allowed: expected at least 1")));
    }
    u32::try_from(n)
        .map(Some)
        .map_err(|_| de::Error::custom(format!("{n} is too large: expected at most {}", u32::MAX)))
}

/// Longest config key name accepted.
const MAX_KEY_LEN: usize = 128;

/// A config key name, checked while decoding so the error points at it.
struct KeyName(String);

fn is_key_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= MAX_KEY_LEN
        && s.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'-' | b'_' | b'.'))
}

impl<'de> Deserialize<'de> for KeyName {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let name = String::deserialize(d)?;
        if !is_key_name(&name) {
            let shown: String = name.chars().take(80).collect();
            return Err(de::Error::custom(format!(
                "invalid config key {shown:?}: expected 1-{MAX_KEY_LEN} lowercase letters, digits, '-', '_' or '.'"
            )));
        }
        Ok(KeyName(name))
    }
}

fn config_keys<'de, D: Deserializer<'de>>(d: D) -> Result<BTreeMap<String, ConfigKey>, D::Error> {
    let keys = BTreeMap::<KeyName, ConfigKey>::deserialize(d)?;
    Ok(keys.into_iter().map(|(k, v)| (k.0, v)).collect())
}

// BTreeMap keys need Ord; names compare as their text.
impl PartialEq for KeyName {
    fn eq(&self, other: &Self) -> bool {
        self.0 == other.0
    }
}
impl Eq for KeyName {}
impl PartialOrd for KeyName {
    fn partial_cmp(&self, other: &Self) -> Option<std::cmp::Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for KeyName {
    fn cmp(&self, other: &Self) -> std::cmp::Ordering {
        self.0.cmp(&other.0)
    }
}

/// Why `plugin.toml` was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ManifestError {
    #[error("plugin.toml is {size} bytes, more than the limit of {MAX_MANIFEST_BYTES} bytes")]
    TooLarge { size: usize },
    #[error("plugin.toml is not UTF-8 text (invalid byte at offset {offset})")]
    NotUtf8 { offset: usize },
    #[error("{}", describe_invalid(*.line, *.column, .field.as_deref(), .message))]
    Invalid {
        /// 1-based line of the offending text, when known.
        line: Option<usize>,
        /// 1-based column (in characters).
        column: Option<usize>,
        /// Dotted path of the field, like `limits.memory`, when known.
        field: Option<String>,
        message: String,
    },
}

fn describe_invalid(line: Option<usize>, column: Option<usize>, field: Option<&str>, message: &str) -> String {
    let mut text = String::from("plugin.toml");
    match (line, column) {
        (Some(line), Some(column)) => text.push_str(&format!(" line {line}, column {column}")),
        (Some(line), None) => text.push_str(&format!(" line {line}")),
        _ => {}
    }
    text.push_str(": ");
    if let Some(field) = field {
        text.push_str(field);
        text.push_str(": ");
    }
    text.push_str(message);
    text
}

/// 1-based line and column (in characters) of byte `offset` in `text`.
fn position(text: &str, offset: usize) -> (usize, usize) {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = &text[..offset];
    let line = before.matches('\n').count() + 1;
    let line_start = before.rfind('\n').map_or(0, |i| i + 1);
    (line, before[line_start..].chars().count() + 1)
}

impl Manifest {
    /// Decodes `plugin.toml` as written.
    pub fn parse(bytes: &[u8]) -> Result<Manifest, ManifestError> {
        if bytes.len() > MAX_MANIFEST_BYTES {
            return Err(ManifestError::TooLarge { size: bytes.len() });
        }
        let text = std::str::from_utf8(bytes).map_err(|e| ManifestError::NotUtf8 { offset: e.valid_up_to() })?;
        let invalid = |error: &toml::de::Error, field: Option<String>| {
            let (line, column) = match error.span() {
                Some(span) => {
                    let (line, column) = position(text, span.start);
                    (Some(line), Some(column))
                }
                None => (None, None),
            };
            // toml's syntax messages span lines; keep the error on one.
            let message = error.message().trim().lines().map(str::trim).collect::<Vec<_>>().join("; ");
            // Messages quote what the file says (an unknown key, a bad
            // value): the node logs and returns them, so escape them.
            let message = escape(&message).into_owned();
            let field = field.map(|f| escape(&f).into_owned());
            ManifestError::Invalid { line, column, field, message }
        };
        let deserializer = toml::Deserializer::parse(text).map_err(|e| invalid(&e, None))?;
        let manifest: Manifest = serde_path_to_error::deserialize(deserializer).map_err(|e| {
            let path = e.path().to_string();
            let field = (!path.is_empty() && path != ".").then_some(path);
            invalid(e.inner(), field)
        })?;
        if let Some(grants) = &manifest.grants {
            let requested = manifest.capabilities();
            let extra: Vec<&str> = crate::capability::TABLE
                .iter()
                .filter(|row| (row.granted)(grants) && !requested.contains(&row.capability))
                .map(|row| row.interface)
                .collect();
            if !extra.is_empty() {
                return Err(ManifestError::Invalid {
                    line: None,
                    column: None,
                    field: Some("grants".into()),
                    message: format!("[grants] grants {} but [capabilities] does not request it", extra.join(", ")),
                });
            }
        }
        if !manifest.config.is_empty() && !manifest.capabilities.config {
            return Err(ManifestError::Invalid {
                line: None,
                column: None,
                field: Some("config".into()),
                message: "config keys are declared but the plugin cannot read them: add `config = true` under \
                          [capabilities]"
                    .into(),
            });
        }
        Ok(manifest)
    }

    /// Every capability the manifest requests, `log` included.
    pub fn capabilities(&self) -> BTreeSet<Capability> {
        crate::capability::TABLE
            .iter()
            .filter(|row| (row.requested)(&self.capabilities))
            .map(|row| row.capability)
            .collect()
    }

    /// The `bronze:host` imports of a component that this manifest does not
    /// allow, given the names of everything it imports (e.g.
    /// `bronze:host/http@0.1.0`, `wasi:io/streams@0.2.6`). Other packages
    /// are not ours to judge and are skipped.
    pub fn unrequested_imports<I, S>(&self, imports: I) -> Vec<UnrequestedImport>
    where
        I: IntoIterator<Item = S>,
        S: AsRef<str>,
    {
        let requested = self.capabilities();
        let mut problems = Vec::new();
        for name in imports {
            let name = name.as_ref();
            if !is_host_interface(name) || TYPE_ONLY_INTERFACES.contains(&strip_version(name).0) {
                continue;
            }
            let problem = match Capability::from_interface(name) {
                Some(cap) if requested.contains(&cap) => continue,
                Some(cap) => UnrequestedImport::NotRequested(cap),
                None => UnrequestedImport::Unknown(name.to_string()),
            };
            if !problems.contains(&problem) {
                problems.push(problem);
            }
        }
        problems
    }

    /// Checks an instance's config values against the declared keys:
    /// every required key set, no undeclared key. One message per problem.
    pub fn check_config(&self, values: &BTreeMap<String, String>) -> Result<(), Vec<String>> {
        let mut problems = Vec::new();
        for (key, spec) in &self.config {
            if spec.required && !values.contains_key(key) {
                let mut message = format!("config key {key:?} is required by plugin {} but not set", self.id);
                if let Some(description) = &spec.description {
                    message.push_str(&format!(" ({description})"));
                }
                problems.push(message);
            }
        }
        for key in values.keys().filter(|k| !self.config.contains_key(*k)) {
            let declared = if self.config.is_empty() {
                format!("plugin {} declares no config keys", self.id)
            } else {
                let names: Vec<&str> = self.config.keys().map(String::as_str).collect();
                format!("plugin {} declares {}", self.id, names.join(", "))
            };
            problems.push(format!("unknown config key {key:?}: {declared}"));
        }
        if problems.is_empty() { Ok(()) } else { Err(problems) }
    }

    /// `values` with the declared defaults filled in for unset keys.
    pub fn effective_config(&self, values: &BTreeMap<String, String>) -> BTreeMap<String, String> {
        let mut out = values.clone();
        for (key, spec) in &self.config {
            if let (Some(default), false) = (&spec.default, values.contains_key(key)) {
                out.insert(key.clone(), default.clone());
            }
        }
        out
    }
}

/// Splits `pkg:name/iface@ver` into the name without version and the version.
pub(crate) fn strip_version(name: &str) -> (&str, Option<&str>) {
    match name.split_once('@') {
        Some((base, version)) => (base, Some(version)),
        None => (name, None),
    }
}

fn is_host_interface(name: &str) -> bool {
    name.strip_prefix(HOST_PACKAGE).is_some_and(|rest| rest.starts_with('/') || rest.starts_with('@'))
}

/// A `bronze:host` import the manifest does not allow.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UnrequestedImport {
    #[error("the component imports {} but plugin.toml does not request it ({})", .0.interface(), .0.manifest_hint())]
    NotRequested(Capability),
    #[error("the component imports {0}, which this host does not provide (it implements bronze:host 0.1.x)")]
    Unknown(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    const FULL: &str = r#"id = "health-tcp"
version = "0.1.0"
world = "health-check"
description = "One line."

[capabilities]
config = true
facts = ["time", "dmi"]
http = true
probe = true

[config.host]
required = true
description = "Host to connect to."

[config.port]
default = "80"

[limits]
memory = "16MiB"
timeout = "2s"
concurrency = 1
"#;

    fn parse(text: &str) -> Result<Manifest, ManifestError> {
        Manifest::parse(text.as_bytes())
    }

    fn err(text: &str) -> String {
        match parse(text) {
            Ok(m) => panic!("accepted {text:?} as {m:?}"),
            Err(e) => e.to_string(),
        }
    }

    const MINIMAL: &str = "id = \"p\"\nversion = \"1.0.0\"\nworld = \"health-check\"\n";

    #[test]
    fn parses_the_full_format() {
        let m = parse(FULL).unwrap();
        assert_eq!(m.id.as_str(), "health-tcp");
        assert_eq!(m.version, "0.1.0".parse().unwrap());
        assert_eq!(m.world, World::HealthCheck);
        assert_eq!(m.description.as_deref(), Some("One line."));
        assert_eq!(m.capabilities.facts, vec![Fact::Time, Fact::Dmi]);
        assert!(m.config["host"].required);
        assert_eq!(m.config["host"].description.as_deref(), Some("Host to connect to."));
        assert_eq!(m.config["port"].default.as_deref(), Some("80"));
        assert_eq!(m.limits.memory, Some(ByteSize::mib(16)));
        assert_eq!(m.limits.timeout, Some(Duration::from_secs(2)));
        assert_eq!(m.limits.concurrency, Some(1));
        let limits = m.limits.to_config_limits();
        assert_eq!(limits.memory, Some(ByteSize::mib(16)));
        assert_eq!(limits.concurrency, Some(1));
    }

    #[test]
    fn minimal_manifest_has_only_log() {
        let m = parse(MINIMAL).unwrap();
        assert_eq!(m.capabilities(), BTreeSet::from([Capability::Log]));
        assert!(m.config.is_empty());
        assert_eq!(m.limits, ManifestLimits::default());
        assert_eq!(m.description, None);
    }

    #[test]
    fn unknown_world_names_line_column_and_choices() {
        let text = "id = \"p\"\nversion = \"1.0.0\"\nworld = \"health\"\n";
        assert_eq!(
            err(text),
            "plugin.toml line 3, column 9: world: unknown world \"health\", expected one of health-check, \
             metadata-provider, network-configurator"
        );
    }

    #[test]
    fn bad_manifests_one_by_one() {
        let with = |extra: &str| format!("{MINIMAL}{extra}");
        let cases: Vec<(String, &str)> = vec![
            ("version = \"1.0.0\"\nworld = \"health-check\"\n".into(), "missing field `id`"),
            (
                "id = \"P\"\nversion = \"1.0.0\"\nworld = \"health-check\"\n".into(),
                "line 1, column 6: id: invalid plugin id \"P\"",
            ),
            (
                "id = \"p\"\nversion = \"1.0\"\nworld = \"health-check\"\n".into(),
                "line 2, column 11: version: invalid version \"1.0\"",
            ),
            (
                "id = \"p\"\nversion = 1\nworld = \"health-check\"\n".into(),
                "line 2, column 11: version: invalid type: integer `1`, expected a semantic version",
            ),
            (with("colour = \"red\"\n"), "line 4, column 1: colour: unknown field `colour`, expected one of `id`"),
            (
                with("[capabilities]\nnetwork = true\n"),
                "line 5, column 1: capabilities.network: unknown field `network`, expected one of `config`",
            ),
            (
                with("[capabilities]\nfacts = [\"uptime\"]\n"),
                "line 5, column 10: capabilities.facts[0]: invalid fact \"uptime\": expected one of dmi, links, cmdline, time",
            ),
            (
                with("[capabilities]\nfacts = [\"time\", \"time\"]\n"),
                "line 5, column 9: capabilities.facts: fact \"time\" is listed twice",
            ),
            (
                with("[capabilities]\nhttp = \"yes\"\n"),
                "line 5, column 8: capabilities.http: invalid type: string \"yes\", expected a boolean",
            ),
            (
                with("[capabilities]\nconfig = true\n[config.Host]\n"),
                "line 6, column 9: config.Host: invalid config key \"Host\": expected 1-128 lowercase",
            ),
            (
                with("[capabilities]\nconfig = true\n[config.host]\nrequired = true\ndefault = \"x\"\n"),
                "config.host: a key with `required = true` cannot have a `default`",
            ),
            (
                with("[capabilities]\nconfig = true\n[config.host]\nhelp = \"x\"\n"),
                "line 7, column 1: config.host.help: unknown field `help`",
            ),
            (with("[config.host]\n"), "plugin.toml: config: config keys are declared but the plugin cannot read them"),
            (
                with("[limits]\nmemory = \"16 parsecs\"\n"),
                "line 5, column 10: limits.memory: invalid size \"16 parsecs\"",
            ),
            (with("[limits]\nmemory = 0\n"), "limits.memory: expected a size above zero"),
            (with("[limits]\ntimeout = \"2\"\n"), "line 5, column 11: limits.timeout: invalid duration \"2\""),
            (with("[limits]\ntimeout = \"0s\"\n"), "limits.timeout: expected a duration above zero"),
            (
                with("[limits]\nconcurrency = 0\n"),
                "line 5, column 15: limits.concurrency: 0 is not allowed: expected at least 1",
            ),
            (with("[limits]\nconcurrency = -1\n"), "limits.concurrency: -1 is not allowed: expected at least 1"),
            (
                with("[limits]\nconcurrency = 5000000000\n"),
                "limits.concurrency: 5000000000 is too large: expected at most 4294967295",
            ),
            (with("limits = 5\n"), "line 4, column 10: limits: invalid type: integer `5`, expected a [limits] table"),
            (
                with("[capabilities]\nfacts = \"time\"\n"),
                "capabilities.facts: invalid type: string \"time\", expected a sequence",
            ),
            (with("[limits]\ncpu = 1\n"), "line 5, column 1: limits.cpu: unknown field `cpu`"),
            (with("description = \"two\\nlines\"\n"), "description: expected one line of text"),
            (with("description = \"\u{202e}gnp.exe\"\n"), "description: expected one line of text without control"),
            // What the file says is quoted escaped: one line, no controls.
            (
                with("[limits]\n\"\\u001B[2J\\nforged\" = 1\n"),
                "line 5, column 1: limits.\\x1b[2J\\nforged: unknown field `\\x1b[2J; forged`",
            ),
            (with("description = \"\"\"\n"), "plugin.toml line 5, column 1: invalid multi-line basic string"),
            (with("world = \"health-check\"\n"), "plugin.toml line 4"),
            ("id = \"p\"\nversion = \"1.0.0\"\n".into(), "missing field `world`"),
        ];
        let mut wrong = Vec::new();
        for (text, want) in cases {
            let got = err(&text);
            if !got.starts_with("plugin.toml") || !got.contains(want) {
                wrong.push(format!("for {text:?}\n got: {got}\nwant: {want}"));
            }
        }
        assert!(wrong.is_empty(), "{}", wrong.join("\n\n"));
    }

    #[test]
    fn size_and_encoding_limits() {
        let big = format!("{MINIMAL}# {}\n", "x".repeat(MAX_MANIFEST_BYTES));
        assert_eq!(
            err(&big),
            format!("plugin.toml is {} bytes, more than the limit of {MAX_MANIFEST_BYTES} bytes", big.len())
        );
        let e = Manifest::parse(b"id = \"p\xff\"").unwrap_err();
        assert_eq!(e, ManifestError::NotUtf8 { offset: 7 });
    }

    #[test]
    fn capabilities_map_to_interfaces() {
        let m = parse(FULL).unwrap();
        let names: Vec<&str> = m.capabilities().into_iter().map(Capability::interface).collect();
        assert_eq!(
            names,
            [
                "bronze:host/log",
                "bronze:host/config",
                "bronze:host/facts-dmi",
                "bronze:host/facts-time",
                "bronze:host/http",
                "bronze:host/probe"
            ]
        );
        for cap in Capability::all() {
            assert_eq!(Capability::from_interface(cap.interface()), Some(cap));
            assert_eq!(Capability::from_interface(&format!("{cap}@0.1.0")), Some(cap));
            assert_eq!(Capability::from_interface(&format!("{cap}@0.1.7")), Some(cap));
            assert_eq!(Capability::from_interface(&format!("{cap}@0.2.0")), None);
            assert_eq!(Capability::from_interface(&format!("{cap}@1.1.0")), None);
        }
        assert_eq!(Capability::from_interface("bronze:host/facts-time"), Some(Capability::Facts(Fact::Time)));
        for other in [
            "wasi:io/streams@0.2.6",
            "bronze:host/types@0.1.0",
            "bronze:host/facts-uptime",
            "bronze:hostx/log",
            "",
            "bronze:host/log@x",
        ] {
            assert_eq!(Capability::from_interface(other), None, "{other}");
        }
    }

    #[test]
    fn imports_outside_the_manifest_are_named() {
        let m = parse(&format!("{MINIMAL}[capabilities]\nfacts = [\"time\"]\n")).unwrap();
        let imports = [
            "wasi:io/streams@0.2.6",
            "bronze:host/log@0.1.0",
            "bronze:host/types@0.1.0",
            "bronze:host/facts-time@0.1.0",
            "bronze:host/http@0.1.0",
            "bronze:host/http@0.1.1",
            "bronze:host/facts-dmi@0.1.0",
            "bronze:host/teleport@0.1.0",
        ];
        let problems: Vec<String> = m.unrequested_imports(imports).iter().map(ToString::to_string).collect();
        assert_eq!(
            problems,
            [
                "the component imports bronze:host/http but plugin.toml does not request it (add `http = true` under \
                 [capabilities])",
                "the component imports bronze:host/facts-dmi but plugin.toml does not request it (add \"dmi\" to \
                 `facts` under [capabilities])",
                "the component imports bronze:host/teleport@0.1.0, which this host does not provide (it implements \
                 bronze:host 0.1.x)",
            ]
        );
        assert!(parse(FULL).unwrap().unrequested_imports(["bronze:host/http@0.1.0", "bronze:host/probe"]).is_empty());
    }

    #[test]
    fn config_values_are_checked_by_key() {
        let m = parse(FULL).unwrap();
        let values = |pairs: &[(&str, &str)]| -> BTreeMap<String, String> {
            pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
        };
        assert_eq!(m.check_config(&values(&[("host", "db")])), Ok(()));
        assert_eq!(m.check_config(&values(&[("host", "db"), ("port", "5432")])), Ok(()));
        let problems = m.check_config(&values(&[("hots", "db")])).unwrap_err();
        assert_eq!(
            problems,
            [
                "config key \"host\" is required by plugin health-tcp but not set (Host to connect to.)",
                "unknown config key \"hots\": plugin health-tcp declares host, port",
            ]
        );
        let bare = parse(MINIMAL).unwrap();
        assert_eq!(
            bare.check_config(&values(&[("x", "1")])),
            Err(vec!["unknown config key \"x\": plugin p declares no config keys".to_string()])
        );
        let effective = m.effective_config(&values(&[("host", "db")]));
        assert_eq!(effective, values(&[("host", "db"), ("port", "80")]));
    }

    #[test]
    fn positions_count_characters() {
        assert_eq!(position("ab\ncd", 0), (1, 1));
        assert_eq!(position("ab\ncd", 3), (2, 1));
        assert_eq!(position("ab\ncd", 4), (2, 2));
        assert_eq!(position("é = x", 3), (1, 3));
        assert_eq!(position("x", 99), (1, 2));
    }

    proptest::proptest! {
        #[test]
        fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(proptest::num::u8::ANY, 0..512)) {
            // Reaching the assertion at all means no panic; every refusal
            // must still read as a plugin.toml error.
            if let Err(e) = Manifest::parse(&bytes) {
                proptest::prop_assert!(e.to_string().starts_with("plugin.toml"), "{}", e);
            }
        }

        #[test]
        fn mutated_manifests_never_panic(cut in 0..FULL.len(), insert in "[ -~\n]{0,8}") {
            let mut text = FULL.as_bytes().to_vec();
            text.splice(cut..cut, insert.bytes());
            if let Err(e) = Manifest::parse(&text) {
                proptest::prop_assert!(e.to_string().starts_with("plugin.toml"), "{}", e);
            }
        }
    }
}
