//! `version`, `reboot`, `shutdown`, `health`: one call per node, no
//! arguments. The answers are shaped by pure functions.

use crate::client::{NodeClient, call};
use crate::output::{Output, obj};
use bronze_api::v1 as pb;
use serde_json::json;

pub const VERSION_COLUMNS: &[&str] = &["tag", "mode", "maintenance", "arch", "slot", "slots", "lastUpgrade"];
pub const VERSION_REASON_COLUMNS: &[&str] =
    &["tag", "mode", "maintenance", "arch", "slot", "slots", "lastUpgrade", "maintenanceReason"];
/// Where the last upgrade's cell is in a row.
const LAST_UPGRADE_CELL: usize = 6;

pub async fn version(mut c: NodeClient) -> Result<Output, String> {
    Ok(version_output(&call(c.machine.version(pb::VersionRequest {})).await?))
}

pub fn version_output(v: &pb::VersionResponse) -> Output {
    // "a: v0.1.0 good, b: v0.2.0 bad" (node text: escaped for the terminal).
    let slots: Vec<String> = v
        .slots
        .iter()
        .map(|s| {
            let what = if s.release.is_empty() { s.state.clone() } else { format!("{} {}", s.release, s.state) };
            bronze_bundle::text::printable(&format!("{}: {what}", s.slot)).into_owned()
        })
        .collect();
    let mut fields = obj(json!({
        "tag": v.tag, "commit": v.commit, "mode": v.mode, "maintenance": v.maintenance, "arch": v.arch, "os": v.os,
        "maintenanceReason": v.maintenance_reason, "slot": v.slot, "nextSlot": v.next_slot,
        "slots": slots.join(", "),
    }));
    // The last upgrade: the whole record in JSON and YAML, "b v0.2.0:
    // succeeded" in the table.
    let last = v.last_upgrade.as_ref().map(|u| {
        let p = |s: &str| bronze_bundle::text::printable(s).into_owned();
        fields.insert(
            "lastUpgrade".into(),
            json!({
                "slot": p(&u.slot), "release": p(&u.release), "generation": u.generation,
                "fromSlot": p(&u.from_slot), "fromRelease": p(&u.from_release), "time": p(&u.time),
                "outcome": p(&u.outcome), "message": p(&u.message),
            }),
        );
        p(&format!("{} {}: {}", u.slot, u.release, u.outcome))
    });
    // Why a node sits in maintenance mode is worth a column only then.
    let columns = if v.maintenance_reason.is_empty() { VERSION_COLUMNS } else { VERSION_REASON_COLUMNS };
    let mut out = Output::single(fields, columns);
    out.rows[0][LAST_UPGRADE_CELL] = last.unwrap_or_default();
    out
}

pub const MESSAGE_COLUMNS: &[&str] = &["message"];

/// A node's one-sentence answer.
pub fn message_output(message: &str) -> Output {
    Output::single(obj(json!({ "message": message })), MESSAGE_COLUMNS)
}

pub async fn reboot(mut c: NodeClient) -> Result<Output, String> {
    Ok(message_output(&call(c.machine.reboot(pb::RebootRequest {})).await?.message))
}

pub async fn shutdown(mut c: NodeClient) -> Result<Output, String> {
    Ok(message_output(&call(c.machine.shutdown(pb::ShutdownRequest {})).await?.message))
}

pub const HEALTH_COLUMNS: &[&str] = &["status"];

/// The gRPC health check; a node that is not serving is a failure.
pub async fn health(c: NodeClient) -> Result<Output, String> {
    use tonic_health::pb::HealthCheckRequest;
    use tonic_health::pb::health_client::HealthClient;
    let mut client = HealthClient::new(c.channel.clone());
    let r = call(client.check(HealthCheckRequest { service: String::new() })).await?;
    health_output(r.status)
}

pub fn health_output(status: i32) -> Result<Output, String> {
    let name = tonic_health::pb::health_check_response::ServingStatus::try_from(status)
        .map(|s| s.as_str_name().to_string())
        .unwrap_or_else(|_| format!("UNKNOWN({status})"));
    if name != "SERVING" {
        return Err(format!("not serving: {name}"));
    }
    Ok(Output::single(obj(json!({ "status": name })), HEALTH_COLUMNS))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_maintenance_reason_is_a_column_only_when_there_is_one() {
        let v = pb::VersionResponse { tag: "v1".into(), mode: "process".into(), ..Default::default() };
        assert_eq!(version_output(&v).rows, [["v1", "process", "false", "", "", "", ""]]);
        let v = pb::VersionResponse { maintenance: true, maintenance_reason: "no config".into(), ..v };
        assert_eq!(version_output(&v).rows, [["v1", "process", "true", "", "", "", "", "no config"]]);
        assert_eq!(version_output(&v).fields["maintenanceReason"], "no config");
    }

    #[test]
    fn the_slots_are_one_escaped_cell() {
        let slot = |slot: &str, state: &str, release: &str| pb::BootSlot {
            slot: slot.into(),
            state: state.into(),
            release: release.into(),
            generation: 1,
        };
        let v = pb::VersionResponse {
            tag: "v1".into(),
            slot: "a".into(),
            slots: vec![slot("a", "good", "v0.1.0"), slot("b", "bad", "v0.2\u{1b}[2J")],
            ..Default::default()
        };
        let out = version_output(&v);
        assert_eq!(out.rows[0][4..], ["a", "a: v0.1.0 good, b: v0.2\\x1b[2J bad", ""]);
        let v = pb::VersionResponse { slots: vec![slot("b", "empty", "")], ..v };
        assert_eq!(version_output(&v).rows[0][5], "b: empty");
    }

    #[test]
    fn the_last_upgrade_is_a_column_when_there_is_one() {
        let v = pb::VersionResponse {
            tag: "v0.2.0".into(),
            slot: "b".into(),
            last_upgrade: Some(pb::LastUpgrade {
                slot: "b".into(),
                release: "v0.2.0".into(),
                generation: 2,
                from_slot: "a".into(),
                from_release: "v0.1.0".into(),
                time: "2026-12-06T07:00:00Z".into(),
                outcome: "succeeded\u{1b}[2J".into(),
                message: "slot b (v0.2.0) booted and was marked good".into(),
            }),
            ..Default::default()
        };
        let out = version_output(&v);
        assert_eq!(VERSION_COLUMNS[LAST_UPGRADE_CELL], "lastUpgrade");
        assert_eq!(out.rows[0][LAST_UPGRADE_CELL], "b v0.2.0: succeeded\\x1b[2J");
        assert_eq!(out.fields["lastUpgrade"]["fromRelease"], "v0.1.0");
        assert_eq!(out.fields["lastUpgrade"]["message"], "slot b (v0.2.0) booted and was marked good");
    }

    #[test]
    fn only_serving_is_healthy() {
        assert_eq!(health_output(1).unwrap().rows, [["SERVING"]]);
        assert_eq!(health_output(2).unwrap_err(), "not serving: NOT_SERVING");
        assert_eq!(health_output(9).unwrap_err(), "not serving: UNKNOWN(9)");
    }
}
