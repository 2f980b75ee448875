//! `network-configurator`: `plan(links, metadata) -> result<plan, string>`.
//! It has no mutating import: the host validates and applies the plan.

use super::{Prepared, Step, World, escaped, escaped_all, strings_size};
use crate::platform::metadata::PlatformMetadata;
use crate::plugins::context::PluginState;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use wasmtime::Store;
use wasmtime::component::InstancePre;

/// Generated bindings of the world.
pub mod bindings {
    crate::plugins::bindings::plugin_world!(
        "bronze:plugin/network-configurator",
        "bronze:plugin/metadata" => crate::plugins::worlds::metadata::bindings::bronze::plugin::metadata
    );
}

pub use bindings::bronze::plugin::network::{
    Addressing, Bond, BondMode, Ethernet, LinkMatch, NetworkPlan, Route, Vlan,
};

pub struct Network;

impl World for Network {
    const WORLD: bronze_bundle::World = bronze_bundle::World::NetworkConfigurator;
    type Pre = bindings::NetworkConfiguratorPre<PluginState>;
    /// The platform's metadata to plan from, when a provider answered.
    type Input = Option<PlatformMetadata>;
    type Raw = Result<NetworkPlan, String>;
    type Output = Result<NetworkPlan, String>;

    fn link(pre: InstancePre<PluginState>) -> wasmtime::Result<Prepared> {
        Ok(Prepared::Network(bindings::NetworkConfiguratorPre::new(pre)?))
    }

    fn pre(prepared: &Prepared) -> Option<&Self::Pre> {
        match prepared {
            Prepared::Network(pre) => Some(pre),
            _ => None,
        }
    }

    fn invoke<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<PluginState>,
        metadata: Option<PlatformMetadata>,
    ) -> BoxFuture<'a, Result<Self::Raw, Step>> {
        Box::pin(async move {
            let plugin = pre.instantiate_async(&mut *store).await.map_err(Step::Instantiate)?;
            let links = store.data().links();
            let metadata = metadata.as_ref().map(super::metadata::to_wit);
            plugin.call_plan(&mut *store, &links, metadata.as_ref()).await.map_err(Step::Call)
        })
    }

    fn raw_size(raw: &Self::Raw) -> usize {
        fn addressing(a: &Addressing) -> usize {
            strings_size(&a.addresses)
                + a.routes.iter().map(|r| r.to.len() + r.via.as_ref().map_or(0, String::len) + 16).sum::<usize>()
                + 32
        }
        fn matched(m: &LinkMatch) -> usize {
            match m {
                LinkMatch::Name(s) | LinkMatch::Mac(s) | LinkMatch::Driver(s) | LinkMatch::BusPath(s) => s.len() + 8,
            }
        }
        match raw {
            Ok(plan) => {
                strings_size(&plan.nameservers)
                    + strings_size(&plan.search)
                    + strings_size(&plan.time_servers)
                    + plan.hostname.as_ref().map_or(0, String::len)
                    + plan.ethernets.iter().map(|e| matched(&e.match_) + addressing(&e.addressing)).sum::<usize>()
                    + plan
                        .bonds
                        .iter()
                        .map(|b| {
                            b.name.len()
                                + b.members.iter().map(matched).sum::<usize>()
                                + b.transmit_hash_policy.as_ref().map_or(0, String::len)
                                + addressing(&b.addressing)
                        })
                        .sum::<usize>()
                    + plan
                        .vlans
                        .iter()
                        .map(|v| v.name.len() + matched(&v.parent) + addressing(&v.addressing))
                        .sum::<usize>()
            }
            Err(e) => e.len(),
        }
    }

    fn check(raw: Self::Raw) -> Result<Self::Output, String> {
        Ok(match raw {
            Ok(plan) => Ok(escape_plan(plan)),
            Err(e) => Err(escaped(e)),
        })
    }

    fn to_json(out: &Self::Output) -> Value {
        match out {
            Ok(plan) => json!({ "ok": plan_json(plan) }),
            Err(e) => json!({ "error": e }),
        }
    }
}

fn escape_match(m: LinkMatch) -> LinkMatch {
    match m {
        LinkMatch::Name(n) => LinkMatch::Name(escaped(n)),
        LinkMatch::Mac(m) => LinkMatch::Mac(escaped(m)),
        LinkMatch::Driver(d) => LinkMatch::Driver(escaped(d)),
        LinkMatch::BusPath(p) => LinkMatch::BusPath(escaped(p)),
    }
}

fn escape_addressing(a: Addressing) -> Addressing {
    Addressing {
        addresses: escaped_all(a.addresses),
        routes: a
            .routes
            .into_iter()
            .map(|r| Route { to: escaped(r.to), via: r.via.map(escaped), metric: r.metric, on_link: r.on_link })
            .collect(),
        ..a
    }
}

fn escape_plan(plan: NetworkPlan) -> NetworkPlan {
    NetworkPlan {
        ethernets: plan
            .ethernets
            .into_iter()
            .map(|e| Ethernet { match_: escape_match(e.match_), addressing: escape_addressing(e.addressing) })
            .collect(),
        bonds: plan
            .bonds
            .into_iter()
            .map(|b| Bond {
                name: escaped(b.name),
                members: b.members.into_iter().map(escape_match).collect(),
                transmit_hash_policy: b.transmit_hash_policy.map(escaped),
                addressing: escape_addressing(b.addressing),
                ..b
            })
            .collect(),
        vlans: plan
            .vlans
            .into_iter()
            .map(|v| Vlan {
                name: escaped(v.name),
                parent: escape_match(v.parent),
                addressing: escape_addressing(v.addressing),
                ..v
            })
            .collect(),
        nameservers: escaped_all(plan.nameservers),
        search: escaped_all(plan.search),
        hostname: plan.hostname.map(escaped),
        time_servers: escaped_all(plan.time_servers),
    }
}

pub fn match_json(m: &LinkMatch) -> Value {
    match m {
        LinkMatch::Name(n) => json!({ "name": n }),
        LinkMatch::Mac(m) => json!({ "macaddress": m }),
        LinkMatch::Driver(d) => json!({ "driver": d }),
        LinkMatch::BusPath(p) => json!({ "busPath": p }),
    }
}

fn addressing_json(a: &Addressing) -> Value {
    json!({
        "dhcp4": a.dhcp4,
        "dhcp6": a.dhcp6,
        "dhcpRouteMetric": a.dhcp_route_metric,
        "addresses": a.addresses,
        "routes": a.routes.iter().map(|r| json!({ "to": r.to, "via": r.via, "metric": r.metric, "onLink": r.on_link })).collect::<Vec<_>>(),
        "mtu": a.mtu,
    })
}

/// A plugin's bond mode as the config's (which carries the kernel's names).
impl From<BondMode> for bronze_config::BondMode {
    fn from(mode: BondMode) -> Self {
        use bronze_config::BondMode as C;
        match mode {
            BondMode::BalanceRr => C::BalanceRr,
            BondMode::ActiveBackup => C::ActiveBackup,
            BondMode::BalanceXor => C::BalanceXor,
            BondMode::Broadcast => C::Broadcast,
            BondMode::Lacp => C::Lacp,
            BondMode::BalanceTlb => C::BalanceTlb,
            BondMode::BalanceAlb => C::BalanceAlb,
        }
    }
}

fn plan_json(plan: &NetworkPlan) -> Value {
    json!({
        "ethernets": plan.ethernets.iter().map(|e| json!({
            "match": match_json(&e.match_),
            "addressing": addressing_json(&e.addressing),
        })).collect::<Vec<_>>(),
        "bonds": plan.bonds.iter().map(|b| json!({
            "name": b.name,
            "members": b.members.iter().map(match_json).collect::<Vec<_>>(),
            "mode": bronze_config::BondMode::from(b.mode).as_str(),
            "miimon": b.miimon,
            "updelay": b.updelay,
            "downdelay": b.downdelay,
            "lacpRateFast": b.lacp_rate_fast,
            "transmitHashPolicy": b.transmit_hash_policy,
            "addressing": addressing_json(&b.addressing),
        })).collect::<Vec<_>>(),
        "vlans": plan.vlans.iter().map(|v| json!({
            "name": v.name,
            "id": v.id,
            "parent": match_json(&v.parent),
            "addressing": addressing_json(&v.addressing),
        })).collect::<Vec<_>>(),
        "nameservers": plan.nameservers,
        "search": plan.search,
        "hostname": plan.hostname,
        "timeServers": plan.time_servers,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::worlds::metadata::tests::{ESCAPED, HOSTILE};

    #[test]
    fn every_string_of_plans_and_errors_is_escaped() {
        let out = Network::check(Err(HOSTILE.into())).unwrap();
        assert_eq!(Network::to_json(&out)["error"], ESCAPED);
        let addressing = || Addressing {
            dhcp4: false,
            dhcp6: false,
            dhcp_route_metric: None,
            addresses: vec![HOSTILE.into()],
            routes: vec![Route { to: HOSTILE.into(), via: Some(HOSTILE.into()), metric: None, on_link: false }],
            mtu: None,
        };
        let plan = NetworkPlan {
            ethernets: vec![Ethernet { match_: LinkMatch::Name(HOSTILE.into()), addressing: addressing() }],
            bonds: vec![Bond {
                name: HOSTILE.into(),
                members: vec![LinkMatch::Driver(HOSTILE.into())],
                mode: BondMode::Lacp,
                miimon: None,
                updelay: None,
                downdelay: None,
                lacp_rate_fast: true,
                transmit_hash_policy: Some(HOSTILE.into()),
                addressing: addressing(),
            }],
            vlans: vec![Vlan {
                name: HOSTILE.into(),
                id: 5,
                parent: LinkMatch::BusPath(HOSTILE.into()),
                addressing: addressing(),
            }],
            nameservers: vec![HOSTILE.into()],
            search: vec![HOSTILE.into()],
            hostname: Some(HOSTILE.into()),
            time_servers: vec![HOSTILE.into()],
        };
        let out = Network::check(Ok(plan)).unwrap();
        let json = Network::to_json(&out).to_string();
        assert!(!json.contains("\\u001b") && !json.contains('\u{9b}'), "{json}");
        assert_eq!(Network::to_json(&out)["ok"]["ethernets"][0]["match"]["name"], ESCAPED);
        assert_eq!(json.matches("admin authenticated").count(), 19, "{json}");
    }
}
