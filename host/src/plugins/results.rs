//! What plugin calls return: size checks (a guest must not make the host
//! keep megabytes), truncation to what operators can read, and JSON for
//! `plugins run`.

use super::bindings::{health, metadata, network};
use super::log::truncate;
use serde_json::{Value, json};

use health::bronze::plugin::health::{Report, Status};
use metadata::bronze::plugin::metadata::{FetchError, InstanceMetadata};
use network::bronze::plugin::network::{LinkMatch, NetworkPlan};

/// A result larger than this (strings and lists, in bytes) is refused.
pub const MAX_RESULT_BYTES: usize = 1 << 20;
/// Kept of a health report's summary.
pub const MAX_SUMMARY: usize = 1024;
/// Kept of a health report's details.
pub const MAX_DETAILS: usize = 32;
pub const MAX_DETAIL_BYTES: usize = 1024;

pub enum CallResult {
    Health(Report),
    Metadata { detected: bool, fetched: Option<Box<Result<InstanceMetadata, FetchError>>> },
    Plan(Result<NetworkPlan, String>),
}

/// A health report as the host keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HealthReport {
    pub status: &'static str,
    pub summary: String,
    pub details: Vec<(String, String)>,
}

/// Refuses oversized results; trims health reports to what is kept.
pub fn check_result(result: CallResult) -> Result<CallResult, String> {
    let size = result_size(&result);
    if size > MAX_RESULT_BYTES {
        return Err(format!("result too large: {size} bytes; the limit is {MAX_RESULT_BYTES} bytes"));
    }
    Ok(match result {
        CallResult::Health(mut report) => {
            report.summary = truncate(&report.summary, MAX_SUMMARY).to_string();
            report.details.truncate(MAX_DETAILS);
            for (k, v) in &mut report.details {
                *k = truncate(k, MAX_DETAIL_BYTES).to_string();
                *v = truncate(v, MAX_DETAIL_BYTES).to_string();
            }
            CallResult::Health(report)
        }
        other => other,
    })
}

fn pairs_size(pairs: &[(String, String)]) -> usize {
    pairs.iter().map(|(k, v)| k.len() + v.len() + 16).sum()
}

fn strings_size(list: &[String]) -> usize {
    list.iter().map(|s| s.len() + 8).sum()
}

fn result_size(result: &CallResult) -> usize {
    match result {
        CallResult::Health(r) => r.summary.len() + pairs_size(&r.details),
        CallResult::Metadata { fetched: Some(fetched), .. } => match fetched.as_ref() {
            Ok(m) => metadata_size(m),
            Err(FetchError::NotDetected) => 0,
            Err(FetchError::Unavailable(m) | FetchError::Invalid(m)) => m.len(),
        },
        CallResult::Metadata { fetched: None, .. } => 0,
        CallResult::Plan(Ok(plan)) => {
            strings_size(&plan.nameservers)
                + strings_size(&plan.search)
                + plan.ethernets.iter().map(|e| strings_size(&e.addresses) + e.routes.len() * 64 + 64).sum::<usize>()
        }
        CallResult::Plan(Err(e)) => e.len(),
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
        + m.interfaces.iter().map(|i| i.mac.len() + strings_size(&i.addresses) + 32).sum::<usize>()
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

fn metadata_json(m: &InstanceMetadata) -> Value {
    json!({
        "platform": m.platform,
        "instanceId": m.instance_id,
        "instanceType": m.instance_type,
        "hostname": m.hostname,
        "region": m.region,
        "zone": m.zone,
        "publicIpv4": m.public_ipv4,
        "privateIpv4": m.private_ipv4,
        "publicIpv6": m.public_ipv6,
        "interfaces": m.interfaces.iter().map(|i| json!({
            "mac": i.mac, "addresses": i.addresses, "gateway": i.gateway, "mtu": i.mtu,
        })).collect::<Vec<_>>(),
        "nameservers": m.nameservers,
        "userDataBytes": m.user_data.as_ref().map(Vec::len),
        "attributes": m.attributes.iter().map(|(k, v)| (k.clone(), Value::String(v.clone()))).collect::<serde_json::Map<_, _>>(),
    })
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
