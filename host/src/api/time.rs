//! `TimeService`: the time sync status, and a one-shot check against any
//! server that changes nothing on the node.

use crate::state::Store;
use crate::state::types::TimeStatusSpec;
use crate::time::controller::{SharedHoldOffs, TIME_STATUS_ID, resolve};
use crate::time::exchange;
use bronze_api::v1 as pb;
use bronze_api::v1::time_service_server::TimeService;
use bronze_config::HostPort;
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long a TimeCheck waits for its reply.
const CHECK_TIMEOUT: Duration = Duration::from_secs(2);

pub struct TimeApi {
    pub store: Store,
    /// Addresses held off after a kiss-o'-death: never asked early, not
    /// even for a check.
    pub holds: SharedHoldOffs,
}

fn rfc3339(unix: f64) -> String {
    time::OffsetDateTime::from_unix_timestamp_nanos((unix * 1e9) as i128)
        .ok()
        .and_then(|t| t.format(&time::format_description::well_known::Rfc3339).ok())
        .unwrap_or_default()
}

#[tonic::async_trait]
impl TimeService for TimeApi {
    async fn time(&self, _req: Request<pb::TimeRequest>) -> Result<Response<pb::TimeResponse>, Status> {
        let s = self.store.get_typed::<TimeStatusSpec>(TIME_STATUS_ID).map(|(_, s)| s).unwrap_or_default();
        Ok(Response::new(pb::TimeResponse {
            enabled: s.enabled,
            synced: s.synced,
            synced_by_timeout: s.synced_by_timeout,
            epoch: s.epoch,
            mode: s.mode,
            server: s.current_server,
            address: s.current_address,
            offset_seconds: s.last_offset_seconds,
            rtt_seconds: s.last_rtt_seconds,
            jitter_seconds: s.jitter_seconds,
            poll_seconds: s.poll_interval_seconds,
            last_sync: s.last_sync,
            last_error: s.last_error,
            last_decision: s.last_decision,
            spikes: s.spikes,
            steps: s.steps,
            servers: s.servers,
        }))
    }

    async fn time_check(&self, req: Request<pb::TimeCheckRequest>) -> Result<Response<pb::TimeCheckResponse>, Status> {
        let text = req.into_inner().server;
        let server: HostPort = text.parse().map_err(|e| Status::invalid_argument(format!("server: {e}")))?;
        let addrs = resolve(&server).await.map_err(Status::unavailable)?;
        let addr = {
            let holds = self.holds.lock().unwrap_or_else(|e| e.into_inner());
            let now = std::time::Instant::now();
            match addrs.iter().find(|a| holds.active(**a, now).is_none()) {
                Some(addr) => *addr,
                None => {
                    let held = addrs
                        .iter()
                        .filter_map(|a| holds.active(*a, now).map(|h| (a, h)))
                        .map(|(a, h)| {
                            let left = h.until.map_or("for good".to_string(), |until| {
                                format!("for another {} s", until.saturating_duration_since(now).as_secs())
                            });
                            format!("{a} after kiss-o'-death {} {left}", h.code)
                        })
                        .collect::<Vec<_>>()
                        .join(", ");
                    return Err(Status::failed_precondition(format!(
                        "{} is held off ({held}): not asked before the hold-off ends",
                        server.as_str()
                    )));
                }
            }
        };
        let m = exchange::exchange(addr, CHECK_TIMEOUT)
            .await
            .map_err(|e| Status::unavailable(format!("{} ({addr}): {e}", server.as_str())))?;
        Ok(Response::new(pb::TimeCheckResponse {
            server: server.as_str().into(),
            address: addr.to_string(),
            local_time: rfc3339(m.local_time),
            remote_time: rfc3339(m.server_time),
            offset_seconds: m.sample.offset,
            rtt_seconds: m.sample.rtt,
            stratum: m.sample.stratum.into(),
            leap: m.sample.leap.into(),
        }))
    }
}
