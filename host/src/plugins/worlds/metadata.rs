//! `metadata-provider`: `detect() -> bool` (facts only: the host refuses
//! network imports during it) and `fetch() -> result<instance-metadata,
//! fetch-error>`. The answer becomes a validated
//! [`PlatformMetadata`](crate::platform::metadata::PlatformMetadata).

use super::{Prepared, Step, World, escaped, pairs_size, strings_size};
use crate::platform::metadata::PlatformMetadata;
use crate::plugins::context::PluginState;
use futures::future::BoxFuture;
use serde_json::{Value, json};
use wasmtime::Store;
use wasmtime::component::InstancePre;

/// Generated bindings of the world.
pub mod bindings {
    crate::plugins::bindings::plugin_world!("bronze:plugin/metadata-provider");
}

/// The world's record types.
pub use bindings::bronze::plugin::metadata as wit;

pub struct Metadata;

/// Which exports to call.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MetadataInput {
    /// `detect()` only.
    Detect,
    /// `fetch()` only (the platform is known).
    Fetch,
    /// `detect()`, then `fetch()` if it said yes (`plugins run`).
    DetectThenFetch,
}

/// What the guest returned.
pub struct RawMetadata {
    pub detected: Option<bool>,
    pub fetched: Option<Result<wit::InstanceMetadata, wit::FetchError>>,
}

/// Why a fetch gave no metadata, as the host keeps it (texts escaped).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FetchFailure {
    NotDetected,
    /// The service did not answer or refused; retried.
    Unavailable(String),
    /// The answer could not be used (the provider said so, or the host's
    /// validation refused it); retried too.
    Invalid(String),
}

impl FetchFailure {
    pub fn kind(&self) -> &'static str {
        match self {
            FetchFailure::NotDetected => "not-detected",
            FetchFailure::Unavailable(_) => "unavailable",
            FetchFailure::Invalid(_) => "invalid",
        }
    }

    pub fn message(&self) -> &str {
        match self {
            FetchFailure::NotDetected => "the provider says this is not its platform",
            FetchFailure::Unavailable(m) | FetchFailure::Invalid(m) => m,
        }
    }
}

impl std::fmt::Display for FetchFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}: {}", self.kind(), self.message())
    }
}

/// The checked result.
#[derive(Debug, Clone)]
pub struct MetadataOutput {
    pub detected: Option<bool>,
    pub fetched: Option<Result<PlatformMetadata, FetchFailure>>,
}

impl World for Metadata {
    const WORLD: bronze_bundle::World = bronze_bundle::World::MetadataProvider;
    type Pre = bindings::MetadataProviderPre<PluginState>;
    type Input = MetadataInput;
    type Raw = RawMetadata;
    type Output = MetadataOutput;

    fn link(pre: InstancePre<PluginState>) -> wasmtime::Result<Prepared> {
        Ok(Prepared::Metadata(bindings::MetadataProviderPre::new(pre)?))
    }

    fn pre(prepared: &Prepared) -> Option<&Self::Pre> {
        match prepared {
            Prepared::Metadata(pre) => Some(pre),
            _ => None,
        }
    }

    fn invoke<'a>(
        pre: &'a Self::Pre,
        store: &'a mut Store<PluginState>,
        input: MetadataInput,
    ) -> BoxFuture<'a, Result<RawMetadata, Step>> {
        Box::pin(async move {
            let plugin = pre.instantiate_async(&mut *store).await.map_err(Step::Instantiate)?;
            let detected = match input {
                MetadataInput::Fetch => None,
                MetadataInput::Detect | MetadataInput::DetectThenFetch => {
                    // Facts only: http and probe refuse while detecting.
                    store.data_mut().offline = true;
                    let detected = plugin.call_detect(&mut *store).await.map_err(Step::Call)?;
                    store.data_mut().offline = false;
                    Some(detected)
                }
            };
            let fetch = match input {
                MetadataInput::Detect => false,
                MetadataInput::Fetch => true,
                MetadataInput::DetectThenFetch => detected == Some(true),
            };
            let fetched = if fetch { Some(plugin.call_fetch(&mut *store).await.map_err(Step::Call)?) } else { None };
            Ok(RawMetadata { detected, fetched })
        })
    }

    fn raw_size(raw: &RawMetadata) -> usize {
        match &raw.fetched {
            Some(Ok(m)) => metadata_size(m),
            Some(Err(wit::FetchError::Unavailable(m) | wit::FetchError::Invalid(m))) => m.len(),
            _ => 0,
        }
    }

    fn check(raw: RawMetadata) -> Result<MetadataOutput, String> {
        let fetched = raw.fetched.map(|fetched| match fetched {
            Ok(m) => PlatformMetadata::from_wit(m)
                .map_err(|e| FetchFailure::Invalid(format!("the host refused the answer: {e}"))),
            Err(wit::FetchError::NotDetected) => Err(FetchFailure::NotDetected),
            Err(wit::FetchError::Unavailable(m)) => Err(FetchFailure::Unavailable(escaped(m))),
            Err(wit::FetchError::Invalid(m)) => Err(FetchFailure::Invalid(escaped(m))),
        });
        Ok(MetadataOutput { detected: raw.detected, fetched })
    }

    fn to_json(out: &MetadataOutput) -> Value {
        let fetched = match &out.fetched {
            None => Value::Null,
            Some(Ok(m)) => json!({ "ok": metadata_json(m) }),
            Some(Err(FetchFailure::NotDetected)) => json!({ "error": "not-detected" }),
            Some(Err(e)) => json!({ "error": e.kind(), "message": e.message() }),
        };
        json!({ "detected": out.detected, "fetch": fetched })
    }
}

/// Metadata as JSON for people: user data is for the machine, never
/// printed; only its size is shown.
pub fn metadata_json(m: &PlatformMetadata) -> Value {
    let mut value = serde_json::to_value(m).unwrap_or(Value::Null);
    if let Some(map) = value.as_object_mut() {
        map.remove("userData");
        map.insert("userDataBytes".into(), json!(m.user_data.as_ref().map(Vec::len)));
    }
    value
}

fn metadata_size(m: &wit::InstanceMetadata) -> usize {
    let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    opt(&m.instance_id)
        + opt(&m.instance_type)
        + opt(&m.hostname)
        + opt(&m.region)
        + opt(&m.zone)
        + opt(&m.provider_id)
        + m.platform.len()
        + pairs_size(&m.tags)
        + strings_size(&m.external_ips)
        + strings_size(&m.public_ipv4)
        + strings_size(&m.private_ipv4)
        + strings_size(&m.public_ipv6)
        + strings_size(&m.nameservers)
        + strings_size(&m.search_domains)
        + strings_size(&m.time_servers)
        + m.network_config.as_ref().map_or(0, |n| n.body.len())
        + m.interfaces
            .iter()
            .map(|i| opt(&i.mac) + opt(&i.name) + strings_size(&i.addresses) + i.routes.len() * 64 + 32)
            .sum::<usize>()
        + m.user_data.as_ref().map_or(0, Vec::len)
        + pairs_size(&m.attributes)
}

/// Host metadata back into the WIT record (the network configurator's
/// input). Everything in it was validated and escaped already.
pub fn to_wit(m: &PlatformMetadata) -> wit::InstanceMetadata {
    let family = |f: &str| if f == "ipv6" { wit::IpFamily::Ipv6 } else { wit::IpFamily::Ipv4 };
    wit::InstanceMetadata {
        platform: m.platform.clone(),
        provider_id: m.provider_id.clone(),
        instance_id: m.instance_id.clone(),
        instance_type: m.instance_type.clone(),
        hostname: m.hostname.clone(),
        region: m.region.clone(),
        zone: m.zone.clone(),
        spot: m.spot,
        tags: m.tags.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
        external_ips: m.external_ips.clone(),
        public_ipv4: m.public_ipv4.clone(),
        private_ipv4: m.private_ipv4.clone(),
        public_ipv6: m.public_ipv6.clone(),
        interfaces: m
            .interfaces
            .iter()
            .map(|i| wit::PlatformInterface {
                mac: i.mac.clone(),
                name: i.name.clone(),
                addresses: i.addresses.clone(),
                routes: i
                    .routes
                    .iter()
                    .map(|r| wit::PlatformRoute {
                        to: r.to.clone(),
                        gateway: r.gateway.clone(),
                        on_link: r.on_link,
                        metric: r.metric,
                    })
                    .collect(),
                mtu: i.mtu,
                dhcp: i
                    .dhcp
                    .iter()
                    .map(|d| wit::DhcpOperator {
                        family: family(&d.family),
                        route_metric: d.route_metric,
                        skip_hostname: d.skip_hostname,
                    })
                    .collect(),
            })
            .collect(),
        nameservers: m.nameservers.clone(),
        search_domains: m.search_domains.clone(),
        time_servers: m.time_servers.clone(),
        network_config: m.network_config.as_ref().map(|n| wit::NetworkConfig {
            format: match n.format.as_str() {
                "cloud-init-v1" => wit::NetworkConfigFormat::CloudInitV1,
                "openstack" => wit::NetworkConfigFormat::Openstack,
                _ => wit::NetworkConfigFormat::CloudInitV2,
            },
            body: n.body.clone(),
        }),
        user_data: m.user_data.clone(),
        attributes: m.attributes.iter().map(|(k, v)| (k.clone(), v.clone())).collect(),
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    pub const HOSTILE: &str =
        "\x1b[2J\u{9b}31m\rup\x07\n2026-12-05T12:00:00Z  INFO bronze_host::api: admin authenticated";
    pub const ESCAPED: &str =
        "\\x1b[2J\\u{9b}31m\\rup\\x07\\n2026-12-05T12:00:00Z  INFO bronze_host::api: admin authenticated";

    fn checked(m: wit::InstanceMetadata) -> MetadataOutput {
        Metadata::check(RawMetadata { detected: Some(true), fetched: Some(Ok(m)) }).unwrap()
    }

    #[test]
    fn every_string_of_metadata_and_errors_is_escaped() {
        let mut m = crate::platform::metadata::tests::empty("aws");
        m.zone = Some(HOSTILE.into());
        m.instance_id = Some(HOSTILE.into());
        m.region = Some(HOSTILE.into());
        m.tags = vec![(HOSTILE.into(), HOSTILE.into())];
        m.user_data = Some(HOSTILE.as_bytes().to_vec());
        m.attributes = vec![(HOSTILE.into(), HOSTILE.into())];
        let out = checked(m);
        let json = Metadata::to_json(&out).to_string();
        assert!(!json.contains("\\u001b") && !json.contains('\u{9b}'), "{json}");
        assert_eq!(json.matches("admin authenticated").count(), 7, "{json}");
        assert_eq!(Metadata::to_json(&out)["fetch"]["ok"]["region"], ESCAPED);
        assert_eq!(Metadata::to_json(&out)["fetch"]["ok"]["userDataBytes"], HOSTILE.len());

        // A host name that is not one is refused, its text escaped.
        let mut m = crate::platform::metadata::tests::empty("aws");
        m.hostname = Some(HOSTILE.into());
        let out = Metadata::to_json(&checked(m));
        assert_eq!(out["fetch"]["error"], "invalid");
        let message = out["fetch"]["message"].as_str().unwrap().to_string();
        assert!(
            message.starts_with("the host refused the answer: hostname: ") && !message.contains('\x1b'),
            "{message}"
        );

        let raw =
            RawMetadata { detected: Some(true), fetched: Some(Err(wit::FetchError::Unavailable(HOSTILE.into()))) };
        let out = Metadata::to_json(&Metadata::check(raw).unwrap());
        assert_eq!(out["fetch"]["message"], ESCAPED);
    }

    #[test]
    fn metadata_survives_the_round_trip_to_wit() {
        let mut m = crate::platform::metadata::tests::empty("aws");
        m.hostname = Some("node-1.example".into());
        m.interfaces = vec![wit::PlatformInterface {
            mac: Some("0a:1b:2c:3d:4e:5f".into()),
            name: Some("eth0".into()),
            addresses: vec!["10.0.0.5/24".into()],
            routes: vec![wit::PlatformRoute {
                to: "0.0.0.0/0".into(),
                gateway: Some("10.0.0.1".into()),
                on_link: true,
                metric: Some(1024),
            }],
            mtu: Some(9001),
            dhcp: vec![wit::DhcpOperator { family: wit::IpFamily::Ipv6, route_metric: None, skip_hostname: true }],
        }];
        m.network_config = Some(wit::NetworkConfig { format: wit::NetworkConfigFormat::CloudInitV1, body: "x".into() });
        let Some(Ok(first)) = checked(m).fetched else { panic!() };
        let Some(Ok(again)) = checked(to_wit(&first)).fetched else { panic!() };
        assert_eq!(first, again);
    }
}
