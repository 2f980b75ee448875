//! The audit trail: one `AuditEvent` resource per mutating call (and per
//! denied call), kept as a bounded ring in the resource store.

use super::authz::{Caller, short_name};
use crate::state::ring::Ring;
use crate::state::types::AuditEventSpec;
use crate::state::{Writer, now_rfc3339};
use tonic::{Code, Status};

/// Events kept; older ones are dropped from the store.
pub const AUDIT_RING: u64 = 1000;

pub struct AuditLog {
    ring: Ring<AuditEventSpec>,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog").finish_non_exhaustive()
    }
}

/// "permission-denied" from `Code::PermissionDenied`.
pub fn code_name(code: Code) -> String {
    let debug = format!("{code:?}");
    let mut out = String::new();
    for (i, ch) in debug.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            out.push('-');
        }
        out.push(ch.to_ascii_lowercase());
    }
    out
}

impl AuditLog {
    pub fn new(writer: Writer<AuditEventSpec>, keep: u64) -> Self {
        Self { ring: Ring::new(writer, keep) }
    }

    pub fn record(&self, caller: &Caller, method: &str, status: &Status) {
        let result = if status.code() == Code::Ok { "ok".to_string() } else { code_name(status.code()) };
        let spec = AuditEventSpec {
            time: now_rfc3339(),
            subject: caller.subject.clone(),
            roles: caller.role_names(),
            method: method.to_string(),
            result: result.clone(),
            message: status.message().to_string(),
            peer: caller.peer.clone(),
        };
        tracing::info!(target: "audit", subject = %spec.subject, method = short_name(method), %result, "api call");
        self.ring.push(&spec);
    }
}

impl AuditLog {
    /// Records a change the node made on its own behalf, like applying a
    /// platform's user data: `source` stands where an API caller would.
    pub fn record_source(&self, source: &str, method: &str, result: &str, message: &str) {
        let spec = AuditEventSpec {
            time: now_rfc3339(),
            subject: source.to_string(),
            roles: Vec::new(),
            method: method.to_string(),
            result: result.to_string(),
            message: message.to_string(),
            peer: String::new(),
        };
        tracing::info!(target: "audit", subject = %spec.subject, method = %spec.method, %result, "node change");
        self.ring.push(&spec);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::Store;
    use crate::state::ring::ring_id as event_id;
    use crate::state::types::AUDIT_EVENT;

    #[test]
    fn ring_keeps_the_newest() {
        let store = Store::new();
        let log = AuditLog::new(store.writer().unwrap(), 3);
        let caller = Caller { subject: "CN=a".into(), roles: vec![], peer: "p".into(), maintenance: false };
        for _ in 0..5 {
            log.record(&caller, "/x.Y/Z", &Status::permission_denied("no"));
        }
        let ids: Vec<_> = store.list(&AUDIT_EVENT).iter().map(|r| r.metadata.id.clone()).collect();
        assert_eq!(ids, [event_id(3), event_id(4), event_id(5)]);
        assert_eq!(store.list(&AUDIT_EVENT)[0].spec["result"], "permission-denied");
    }
}
