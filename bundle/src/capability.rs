//! The one capability table: every `bronze:host` interface a plugin may
//! import, how `plugin.toml` requests it and how the machine config grants
//! it. The bundle checker, the host's linker and status displays all read
//! this table; adding a capability is one row here plus its host impl.

use bronze_config::{Fact, Grants};
use std::fmt;

use crate::manifest::{Capabilities, Version};

/// A `bronze:host` interface a plugin may import.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Capability {
    /// Always allowed.
    Log,
    Config,
    Facts(Fact),
    Http,
    Probe,
    Volumes,
}

/// One row of [`TABLE`].
pub struct Row {
    pub capability: Capability,
    /// The WIT interface without version, like `bronze:host/facts-time`.
    pub interface: &'static str,
    /// How `plugin.toml` requests it.
    pub manifest_hint: &'static str,
    /// How `machine.plugins.instances[].grants` grants it (after `grants.`).
    pub grant_hint: &'static str,
    /// Whether a manifest's `[capabilities]` requests it.
    pub requested: fn(&Capabilities) -> bool,
    /// Whether an operator's grant covers it.
    pub granted: fn(&Grants) -> bool,
    /// The grant is a list of allowed targets (URLs, probes, labels):
    /// linked with an empty list, every use is denied at run time.
    pub scoped: bool,
}

/// Every capability, in the order of `world capabilities` in `host.wit`.
pub const TABLE: &[Row] = &[
    Row {
        capability: Capability::Log,
        interface: "bronze:host/log",
        manifest_hint: "it is always allowed",
        grant_hint: "",
        requested: |_| true,
        granted: |_| true,
        scoped: false,
    },
    Row {
        capability: Capability::Config,
        interface: "bronze:host/config",
        manifest_hint: "add `config = true` under [capabilities]",
        grant_hint: "config: true",
        requested: |c| c.config,
        granted: |g| g.config,
        scoped: false,
    },
    Row {
        capability: Capability::Facts(Fact::Dmi),
        interface: "bronze:host/facts-dmi",
        manifest_hint: "add \"dmi\" to `facts` under [capabilities]",
        grant_hint: "facts: [dmi]",
        requested: |c| c.facts.contains(&Fact::Dmi),
        granted: |g| g.facts.contains(&Fact::Dmi),
        scoped: false,
    },
    Row {
        capability: Capability::Facts(Fact::Links),
        interface: "bronze:host/facts-links",
        manifest_hint: "add \"links\" to `facts` under [capabilities]",
        grant_hint: "facts: [links]",
        requested: |c| c.facts.contains(&Fact::Links),
        granted: |g| g.facts.contains(&Fact::Links),
        scoped: false,
    },
    Row {
        capability: Capability::Facts(Fact::Cmdline),
        interface: "bronze:host/facts-cmdline",
        manifest_hint: "add \"cmdline\" to `facts` under [capabilities]",
        grant_hint: "facts: [cmdline]",
        requested: |c| c.facts.contains(&Fact::Cmdline),
        granted: |g| g.facts.contains(&Fact::Cmdline),
        scoped: false,
    },
    Row {
        capability: Capability::Facts(Fact::Time),
        interface: "bronze:host/facts-time",
        manifest_hint: "add \"time\" to `facts` under [capabilities]",
        grant_hint: "facts: [time]",
        requested: |c| c.facts.contains(&Fact::Time),
        granted: |g| g.facts.contains(&Fact::Time),
        scoped: false,
    },
    Row {
        capability: Capability::Http,
        interface: "bronze:host/http",
        manifest_hint: "add `http = true` under [capabilities]",
        grant_hint: "http: [{url: ...}]",
        requested: |c| c.http,
        granted: |g| !g.http.is_empty(),
        scoped: true,
    },
    Row {
        capability: Capability::Probe,
        interface: "bronze:host/probe",
        manifest_hint: "add `probe = true` under [capabilities]",
        grant_hint: "probe: [target]",
        requested: |c| c.probe,
        granted: |g| !g.probe.is_empty(),
        scoped: true,
    },
    Row {
        capability: Capability::Volumes,
        interface: "bronze:host/volumes",
        manifest_hint: "add `volumes = true` under [capabilities]",
        grant_hint: "volumes: [label]",
        requested: |c| c.volumes,
        granted: |g| !g.volumes.is_empty(),
        scoped: true,
    },
];

impl Capability {
    /// Every capability, in table order.
    pub fn all() -> impl Iterator<Item = Capability> {
        TABLE.iter().map(|row| row.capability)
    }

    /// This capability's row.
    pub fn row(self) -> &'static Row {
        // Every variant has a row: `table_covers_every_variant` checks it.
        TABLE.iter().find(|row| row.capability == self).unwrap_or(&TABLE[0])
    }

    /// The WIT interface name without version, like `bronze:host/facts-time`.
    pub fn interface(self) -> &'static str {
        self.row().interface
    }

    /// The capability behind an interface name, with or without an
    /// `@0.1.x` version; None for other packages, other versions (this host
    /// implements the 0.1 track) and unknown interfaces.
    pub fn from_interface(name: &str) -> Option<Capability> {
        let (base, version) = crate::manifest::strip_version(name);
        if let Some(version) = version {
            let version: Version = version.parse().ok()?;
            if (version.major, version.minor) != (0, 1) {
                return None;
            }
        }
        TABLE.iter().find(|row| row.interface == base).map(|row| row.capability)
    }

    /// How to request this capability in `plugin.toml`.
    pub fn manifest_hint(self) -> &'static str {
        self.row().manifest_hint
    }

    /// Whether the operator's grant covers this capability.
    pub fn granted_by(self, grants: &Grants) -> bool {
        (self.row().granted)(grants)
    }

    /// A sentence for an import the grant does not cover; `at` is the
    /// instance's config path.
    pub fn missing_grant(self, at: &str) -> String {
        format!("{} is imported but not granted (set {at}.grants.{})", self.interface(), self.row().grant_hint)
    }
}

impl fmt::Display for Capability {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.interface())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const HOST_WIT: &str = include_str!("../../wit/deps/host/host.wit");

    #[test]
    fn table_covers_every_variant() {
        let variants = [Capability::Log, Capability::Config, Capability::Http, Capability::Probe, Capability::Volumes]
            .into_iter()
            .chain(Fact::ALL.iter().map(|f| Capability::Facts(*f)));
        for variant in variants {
            assert!(TABLE.iter().any(|row| row.capability == variant), "{variant:?} has no row");
        }
        let mut interfaces: Vec<_> = TABLE.iter().map(|r| r.interface).collect();
        interfaces.dedup();
        assert_eq!(interfaces.len(), TABLE.len(), "an interface is listed twice");
    }

    /// The table and `world capabilities` in host.wit list the same
    /// interfaces, in the same order.
    #[test]
    fn table_matches_the_wit_world() {
        let world = HOST_WIT.split("world capabilities {").nth(1).expect("world capabilities in host.wit");
        let world = &world[..world.find('}').expect("end of world")];
        let imported: Vec<String> = world
            .lines()
            .filter_map(|line| line.trim().strip_prefix("import "))
            .map(|name| format!("bronze:host/{}", name.trim_end_matches(';')))
            .collect();
        let table: Vec<String> = TABLE.iter().map(|r| r.interface.to_string()).collect();
        assert_eq!(imported, table);
    }

    /// Each row's `requested` and `granted` look at that row's own field:
    /// a manifest or grant with only that capability set selects exactly it
    /// (and log, which is always allowed).
    #[test]
    fn each_row_reads_its_own_field() {
        for row in TABLE.iter().filter(|r| r.capability != Capability::Log) {
            let mut caps = Capabilities::default();
            let mut grants = Grants::default();
            match row.capability {
                Capability::Config => {
                    caps.config = true;
                    grants.config = true;
                }
                Capability::Facts(fact) => {
                    caps.facts = vec![fact];
                    grants.facts = vec![fact];
                }
                Capability::Http => {
                    caps.http = true;
                    grants.http = vec![bronze_config::HttpGrant::new("http://127.0.0.1/".parse().unwrap())];
                }
                Capability::Probe => {
                    caps.probe = true;
                    grants.probe = vec!["tcp://127.0.0.1:1".parse().unwrap()];
                }
                Capability::Volumes => {
                    caps.volumes = true;
                    grants.volumes = vec!["cidata".parse().unwrap()];
                }
                Capability::Log => unreachable!(),
            }
            let requested: Vec<_> = TABLE.iter().filter(|r| (r.requested)(&caps)).map(|r| r.capability).collect();
            let granted: Vec<_> = TABLE.iter().filter(|r| (r.granted)(&grants)).map(|r| r.capability).collect();
            assert_eq!(requested, vec![Capability::Log, row.capability], "{}", row.interface);
            assert_eq!(granted, vec![Capability::Log, row.capability], "{}", row.interface);
            assert!(row.capability.missing_grant("machine.plugins.instances[0]").contains(row.grant_hint));
        }
    }
}
