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

pub use bindings::bronze::plugin::network::{Ethernet, LinkMatch, NetworkPlan, Route};

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
        match raw {
            Ok(plan) => {
                strings_size(&plan.nameservers)
                    + strings_size(&plan.search)
                    + plan
                        .ethernets
                        .iter()
                        .map(|e| strings_size(&e.addresses) + e.routes.len() * 64 + 64)
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

fn escape_plan(plan: NetworkPlan) -> NetworkPlan {
    NetworkPlan {
        ethernets: plan
            .ethernets
            .into_iter()
            .map(|e| Ethernet {
                match_: match e.match_ {
                    LinkMatch::Name(n) => LinkMatch::Name(escaped(n)),
                    LinkMatch::Mac(m) => LinkMatch::Mac(escaped(m)),
                },
                set_name: e.set_name.map(escaped),
                dhcp4: e.dhcp4,
                dhcp6: e.dhcp6,
                addresses: escaped_all(e.addresses),
                routes: e
                    .routes
                    .into_iter()
                    .map(|r| Route { to: escaped(r.to), via: r.via.map(escaped), metric: r.metric })
                    .collect(),
                mtu: e.mtu,
            })
            .collect(),
        nameservers: escaped_all(plan.nameservers),
        search: escaped_all(plan.search),
    }
}

fn plan_json(plan: &NetworkPlan) -> Value {
    json!({
        "ethernets": plan.ethernets.iter().map(|e| json!({
            "match": match &e.match_ { LinkMatch::Name(n) => json!({ "name": n }), LinkMatch::Mac(m) => json!({ "macaddress": m }) },
            "setName": e.set_name,
            "dhcp4": e.dhcp4,
            "dhcp6": e.dhcp6,
            "addresses": e.addresses,
            "routes": e.routes.iter().map(|r| json!({ "to": r.to, "via": r.via, "metric": r.metric })).collect::<Vec<_>>(),
            "mtu": e.mtu,
        })).collect::<Vec<_>>(),
        "nameservers": plan.nameservers,
        "search": plan.search,
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
        let plan = NetworkPlan {
            ethernets: vec![Ethernet {
                match_: LinkMatch::Name(HOSTILE.into()),
                set_name: Some(HOSTILE.into()),
                dhcp4: false,
                dhcp6: false,
                addresses: vec![HOSTILE.into()],
                routes: vec![Route { to: HOSTILE.into(), via: Some(HOSTILE.into()), metric: None }],
                mtu: None,
            }],
            nameservers: vec![HOSTILE.into()],
            search: vec![HOSTILE.into()],
        };
        let out = Network::check(Ok(plan)).unwrap();
        let json = Network::to_json(&out).to_string();
        assert!(!json.contains("\\u001b") && !json.contains('\u{9b}'), "{json}");
        assert_eq!(Network::to_json(&out)["ok"]["ethernets"][0]["match"]["name"], ESCAPED);
        assert_eq!(json.matches("admin authenticated").count(), 7, "{json}");
    }
}
