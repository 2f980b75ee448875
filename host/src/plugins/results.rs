//! What plugin calls return: size checks (a guest must not make the host
//! keep megabytes), escaping (every string a plugin returns is untrusted
//! text: see `bronze_bundle::text`), truncation to what operators can read,
//! and JSON for `plugins run`.

use super::bindings::{health, metadata, network};
use crate::platform::metadata::PlatformMetadata;
use bronze_bundle::text::{escape, escape_within};
use serde_json::{Value, json};

use health::bronze::plugin::health::{Report, Status};
use metadata::bronze::plugin::metadata::{FetchError, InstanceMetadata};
use network::bronze::plugin::network::{Ethernet, LinkMatch, NetworkPlan, Route};

/// A result larger than this (strings and lists, in bytes) is refused.
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// Kept of a health report's summary.
pub const MAX_SUMMARY: usize = 1024;
/// Kept of a health report's details.
pub const MAX_DETAILS: usize = 32;
pub const MAX_DETAIL_BYTES: usize = 1024;

/// What a call returned, as the guest handed it over.
pub enum RawResult {
    Health(Report),
    Metadata { detected: bool, fetched: Option<Box<Result<InstanceMetadata, FetchError>>> },
    Plan(Result<NetworkPlan, String>),
}

/// What a call returned, checked: sizes, escaping, and for metadata the
/// host's validation ([`PlatformMetadata`]).
pub enum CallResult {
    Health(Report),
    Metadata { detected: bool, fetched: Option<Box<Result<PlatformMetadata, FetchError>>> },
    Plan(Result<NetworkPlan, String>),
}

/// A health report as the host keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub status: &'static str,
    pub summary: String,
    pub details: Vec<(String, String)>,
}

/// Refuses oversized results, escapes every string in the rest, and trims
/// health reports to what is kept (the limits apply to the escaped text).
/// Escaping can make a metadata or plan result up to eight times the
/// [`MAX_RESULT_BYTES`] it was checked against; it is dropped after the call.
pub fn check_result(result: RawResult) -> Result<CallResult, String> {
    let size = result_size(&result);
    if size > MAX_RESULT_BYTES {
        return Err(format!("result too large: {size} bytes; the limit is {MAX_RESULT_BYTES} bytes"));
    }
    Ok(match result {
        RawResult::Health(mut report) => {
            report.summary = escape_within(&report.summary, MAX_SUMMARY).into_owned();
            report.details.truncate(MAX_DETAILS);
            for (k, v) in &mut report.details {
                *k = escape_within(k, MAX_DETAIL_BYTES).into_owned();
                *v = escape_within(v, MAX_DETAIL_BYTES).into_owned();
            }
            CallResult::Health(report)
        }
        RawResult::Metadata { detected, fetched } => {
            let fetched = fetched.map(|fetched| {
                Box::new(match *fetched {
                    Ok(m) => PlatformMetadata::from_wit(m)
                        .map_err(|e| FetchError::Invalid(format!("the host refused the answer: {e}"))),
                    Err(FetchError::NotDetected) => Err(FetchError::NotDetected),
                    Err(FetchError::Unavailable(m)) => Err(FetchError::Unavailable(escaped(m))),
                    Err(FetchError::Invalid(m)) => Err(FetchError::Invalid(escaped(m))),
                })
            });
            CallResult::Metadata { detected, fetched }
        }
        RawResult::Plan(Ok(plan)) => CallResult::Plan(Ok(escape_plan(plan))),
        RawResult::Plan(Err(e)) => CallResult::Plan(Err(escaped(e))),
    })
}

/// `text` escaped, reusing it when nothing needed escaping.
fn escaped(text: String) -> String {
    match escape(&text) {
        std::borrow::Cow::Borrowed(_) => text,
        std::borrow::Cow::Owned(escaped) => escaped,
    }
}

fn escaped_all(list: Vec<String>) -> Vec<String> {
    list.into_iter().map(escaped).collect()
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

fn pairs_size(pairs: &[(String, String)]) -> usize {
    pairs.iter().map(|(k, v)| k.len() + v.len() + 16).sum()
}

fn strings_size(list: &[String]) -> usize {
    list.iter().map(|s| s.len() + 8).sum()
}

fn result_size(result: &RawResult) -> usize {
    match result {
        RawResult::Health(r) => r.summary.len() + pairs_size(&r.details),
        RawResult::Metadata { fetched: Some(fetched), .. } => match fetched.as_ref() {
            Ok(m) => metadata_size(m),
            Err(FetchError::NotDetected) => 0,
            Err(FetchError::Unavailable(m) | FetchError::Invalid(m)) => m.len(),
        },
        RawResult::Metadata { fetched: None, .. } => 0,
        RawResult::Plan(Ok(plan)) => {
            strings_size(&plan.nameservers)
                + strings_size(&plan.search)
                + plan.ethernets.iter().map(|e| strings_size(&e.addresses) + e.routes.len() * 64 + 64).sum::<usize>()
        }
        RawResult::Plan(Err(e)) => e.len(),
    }
}

fn metadata_size(m: &InstanceMetadata) -> usize {
    let opt = |o: &Option<String>| o.as_ref().map_or(0, String::len);
    opt(&m.instance_id)
        + opt(&m.instance_type)
        + opt(&m.hostname)
        + opt(&m.region)
        + opt(&m.zone)
        + m.platform.len()
        + strings_size(&m.public_ipv4)
        + strings_size(&m.private_ipv4)
        + strings_size(&m.public_ipv6)
        + strings_size(&m.nameservers)
        + opt(&m.provider_id)
        + pairs_size(&m.tags)
        + strings_size(&m.external_ips)
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

impl HealthReport {
    pub fn from_wit(report: &Report) -> Self {
        HealthReport {
            status: status_str(report.status),
            summary: report.summary.clone(),
            details: report.details.clone(),
        }
    }
}

pub fn status_str(status: Status) -> &'static str {
    match status {
        Status::Healthy => "healthy",
        Status::Degraded => "degraded",
        Status::Unhealthy => "unhealthy",
        Status::Unknown => "unknown",
    }
}

/// The result as JSON for `plugins run`.
pub fn to_json(result: &CallResult) -> Value {
    match result {
        CallResult::Health(r) => json!({
            "status": status_str(r.status),
            "summary": r.summary,
            "details": r.details.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
        }),
        CallResult::Metadata { detected, fetched } => {
            let fetched = match fetched.as_deref() {
                None => Value::Null,
                Some(Ok(m)) => json!({ "ok": metadata_json(m) }),
                Some(Err(FetchError::NotDetected)) => json!({ "error": "not-detected" }),
                Some(Err(FetchError::Unavailable(m))) => json!({ "error": "unavailable", "message": m }),
                Some(Err(FetchError::Invalid(m))) => json!({ "error": "invalid", "message": m }),
            };
            json!({ "detected": detected, "fetch": fetched })
        }
        CallResult::Plan(Ok(plan)) => json!({ "ok": plan_json(plan) }),
        CallResult::Plan(Err(e)) => json!({ "error": e }),
    }
}

fn metadata_json(m: &PlatformMetadata) -> Value {
    let mut value = serde_json::to_value(m).unwrap_or(Value::Null);
    // User data is for the machine, never printed: only its size is shown.
    if let Some(map) = value.as_object_mut() {
        map.remove("userData");
        map.insert("userDataBytes".into(), json!(m.user_data.as_ref().map(Vec::len)));
    }
    value
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

    const HOSTILE: &str = "\x1b[2J\u{9b}31m\rup\x07\n2026-12-05T12:00:00Z  INFO bronze_host::api: admin authenticated";
    const ESCAPED: &str =
        "\\x1b[2J\\u{9b}31m\\rup\\x07\\n2026-12-05T12:00:00Z  INFO bronze_host::api: admin authenticated";

    #[test]
    fn health_reports_are_escaped_then_cut() {
        let report = Report {
            status: Status::Healthy,
            summary: HOSTILE.into(),
            details: vec![(HOSTILE.into(), HOSTILE.into()), ("bells".into(), "\x07".repeat(MAX_DETAIL_BYTES))],
        };
        let Ok(CallResult::Health(report)) = check_result(RawResult::Health(report)) else { panic!() };
        assert_eq!(report.summary, ESCAPED);
        assert_eq!(report.details[0], (ESCAPED.to_string(), ESCAPED.to_string()));
        assert_eq!(report.details[1].1, "\\x07".repeat(MAX_DETAIL_BYTES / 4));
    }

    #[test]
    fn every_string_of_metadata_plans_and_errors_is_escaped() {
        let mut metadata = crate::platform::metadata::tests::empty("aws");
        metadata.zone = Some(HOSTILE.into());
        metadata.instance_id = Some(HOSTILE.into());
        metadata.region = Some(HOSTILE.into());
        metadata.tags = vec![(HOSTILE.into(), HOSTILE.into())];
        metadata.user_data = Some(HOSTILE.as_bytes().to_vec());
        metadata.attributes = vec![(HOSTILE.into(), HOSTILE.into())];
        let fetched = Some(Box::new(Ok(metadata)));
        let Ok(result) = check_result(RawResult::Metadata { detected: true, fetched }) else { panic!() };
        let json = to_json(&result).to_string();
        assert!(!json.contains("\\u001b") && !json.contains('\u{9b}'), "{json}");
        assert_eq!(json.matches("admin authenticated").count(), 7, "{json}");
        assert_eq!(to_json(&result)["fetch"]["ok"]["region"], ESCAPED);
        assert_eq!(to_json(&result)["fetch"]["ok"]["userDataBytes"], HOSTILE.len());

        // A host name that is not one is refused, its text escaped.
        let mut metadata = crate::platform::metadata::tests::empty("aws");
        metadata.hostname = Some(HOSTILE.into());
        let fetched = Some(Box::new(Ok(metadata)));
        let Ok(result) = check_result(RawResult::Metadata { detected: true, fetched }) else { panic!() };
        assert_eq!(to_json(&result)["fetch"]["error"], "invalid");
        let message = to_json(&result)["fetch"]["message"].as_str().unwrap().to_string();
        assert!(
            message.starts_with("the host refused the answer: hostname: ") && !message.contains('\x1b'),
            "{message}"
        );

        let unavailable = Some(Box::new(Err(FetchError::Unavailable(HOSTILE.into()))));
        let Ok(result) = check_result(RawResult::Metadata { detected: true, fetched: unavailable }) else { panic!() };
        assert_eq!(to_json(&result)["fetch"]["message"], ESCAPED);
        let Ok(result) = check_result(RawResult::Plan(Err(HOSTILE.into()))) else { panic!() };
        assert_eq!(to_json(&result)["error"], ESCAPED);
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
        let Ok(result) = check_result(RawResult::Plan(Ok(plan))) else { panic!() };
        let json = to_json(&result).to_string();
        assert!(!json.contains("\\u001b") && !json.contains('\u{9b}'), "{json}");
        assert_eq!(to_json(&result)["ok"]["ethernets"][0]["match"]["name"], ESCAPED);
        assert_eq!(json.matches("admin authenticated").count(), 7, "{json}");
    }
}
