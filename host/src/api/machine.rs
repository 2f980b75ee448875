//! `MachineService`: turns requests into actions on the node's owners
//! (config manager, power channel, store) and answers.

use super::authz::Caller;
use crate::api::context::ApiContext;
use crate::config::{ApplyError, ApplyMode, DEFAULT_TRY_TIMEOUT};
use crate::lifecycle::PowerAction;
use crate::services::ServiceError;
use crate::services::status::{SERVICE_STATUS, ServiceStatusSpec};
use crate::state::types::{AUDIT_EVENT, AuditEventSpec, MACHINE_EVENT, MachineEventSpec};
use crate::state::{Resource, WatchEvent};
use bronze_api::v1 as pb;
use bronze_api::v1::machine_service_server::MachineService;
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};

/// Largest ApplyConfiguration message accepted at the gRPC layer. Bigger
/// than the config limit on purpose: the config decoder then gives the
/// precise "N bytes; the limit is M" error.
pub const MAX_APPLY_MESSAGE: usize = 16 * 1024 * 1024;

/// How long one upgrade may take to arrive (it holds the slot lock).
const UPGRADE_RECEIVE_LIMIT: Duration = Duration::from_secs(900);

/// Delay before a power action, so the RPC's answer reaches the client.
const POWER_GRACE: Duration = Duration::from_millis(100);

pub struct MachineApi {
    pub node: Arc<ApiContext>,
}

fn caller<T>(req: &Request<T>) -> Result<Caller, Status> {
    req.extensions().get::<Caller>().cloned().ok_or_else(|| Status::internal("request bypassed authorization"))
}

pub fn to_pb_resource(r: &Resource) -> pb::Resource {
    let m = &r.metadata;
    pb::Resource {
        metadata: Some(pb::ResourceMetadata {
            namespace: m.namespace.clone(),
            r#type: m.type_name.clone(),
            id: m.id.clone(),
            version: m.version,
            created: m.created.clone(),
            updated: m.updated.clone(),
        }),
        spec_json: r.spec.to_string(),
    }
}

fn service_status(e: ServiceError) -> Status {
    match e {
        ServiceError::Unknown(_) => Status::not_found(e.to_string()),
        ServiceError::Gone(_) => Status::unavailable(e.to_string()),
    }
}

/// A serde enum's kebab-case name.
fn to_kebab<T: serde::Serialize>(value: &T) -> String {
    serde_json::to_value(value).ok().and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

/// When a resource was created, for ordering events of both rings.
fn created(r: &Resource) -> time::OffsetDateTime {
    time::OffsetDateTime::parse(&r.metadata.created, &time::format_description::well_known::Rfc3339)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
}

/// An audit record or a machine event as an API event.
fn to_event(r: &Resource) -> pb::Event {
    let mut event = pb::Event {
        id: r.metadata.id.clone(),
        time: r.metadata.created.clone(),
        resource: Some(to_pb_resource(r)),
        ..Default::default()
    };
    if r.metadata.type_name == AUDIT_EVENT.type_name {
        if let Ok(s) = serde_json::from_value::<AuditEventSpec>(r.spec.clone()) {
            event.kind = "audit".into();
            event.time = s.time;
            event.message = format!("{} {}: {}", s.subject, s.method, s.result);
            event.audit = Some(pb::AuditEvent {
                subject: s.subject,
                roles: s.roles,
                method: s.method,
                result: s.result,
                message: s.message,
                peer: s.peer,
            });
        }
    } else if let Ok(s) = serde_json::from_value::<MachineEventSpec>(r.spec.clone()) {
        event.kind = s.kind;
        event.time = s.time;
        event.message = s.message;
        event.severity = s.severity;
    }
    event
}

impl MachineApi {
    /// MachineStatus's `config` condition while in maintenance mode.
    fn maintenance_reason(&self) -> String {
        if !self.node.security.is_maintenance() {
            return String::new();
        }
        self.node
            .store
            .get_typed::<crate::state::types::MachineStatusSpec>(crate::controllers::machine_status::MACHINE_ID)
            .and_then(|(_, s)| s.unmet_conditions.into_iter().find(|c| c.name == "config"))
            .map(|c| c.reason)
            .unwrap_or_default()
    }

    fn boot_event(&self, severity: &str, message: String) {
        crate::boot::record_event(&self.node.events, severity, message);
    }

    fn request_power(&self, action: PowerAction) {
        let tx = self.node.power.clone();
        tokio::spawn(async move {
            tokio::time::sleep(POWER_GRACE).await;
            let _ = tx.send(action);
        });
    }
}

type EventStream = Pin<Box<dyn Stream<Item = Result<pb::Event, Status>> + Send>>;

#[tonic::async_trait]
impl MachineService for MachineApi {
    async fn version(&self, _req: Request<pb::VersionRequest>) -> Result<Response<pb::VersionResponse>, Status> {
        let boot = self
            .node
            .store
            .get_typed::<crate::boot::BootStatusSpec>(crate::boot::BOOT_ID)
            .map(|(_, b)| b)
            .unwrap_or_else(|| crate::boot::BootStatusSpec::none("not known yet"));
        Ok(Response::new(pb::VersionResponse {
            slot: boot.running.clone(),
            next_slot: boot.next.clone(),
            slots: boot
                .slots
                .iter()
                .map(|s| pb::BootSlot {
                    slot: s.slot.clone(),
                    state: s.state.clone(),
                    release: s.release.clone(),
                    generation: s.generation,
                })
                .collect(),
            last_upgrade: boot.last_upgrade.as_ref().map(|u| pb::LastUpgrade {
                slot: u.slot.clone(),
                release: u.release.clone(),
                generation: u.generation,
                from_slot: u.from_slot.clone(),
                from_release: u.from_release.clone(),
                time: u.time.clone(),
                outcome: u.outcome.clone(),
                message: u.message.clone(),
            }),
            tag: self.node.release.clone(),
            commit: option_env!("BRONZE_COMMIT").unwrap_or("unknown").into(),
            mode: self.node.mode.as_str().into(),
            maintenance: self.node.security.is_maintenance(),
            arch: std::env::consts::ARCH.into(),
            os: std::env::consts::OS.into(),
            maintenance_reason: self.maintenance_reason(),
        }))
    }

    async fn hostname(&self, _req: Request<pb::HostnameRequest>) -> Result<Response<pb::HostnameResponse>, Status> {
        Ok(Response::new(pb::HostnameResponse { hostname: self.node.hostname() }))
    }

    async fn apply_configuration(
        &self,
        req: Request<pb::ApplyConfigurationRequest>,
    ) -> Result<Response<pb::ApplyConfigurationResponse>, Status> {
        let anonymous = caller(&req)?.maintenance;
        let req = req.into_inner();
        let mode = match pb::ApplyMode::try_from(req.mode) {
            Ok(pb::ApplyMode::Auto) => ApplyMode::Auto,
            Ok(pb::ApplyMode::NoReboot) => ApplyMode::NoReboot,
            Ok(pb::ApplyMode::Staged) => ApplyMode::Staged,
            Ok(pb::ApplyMode::Try) => ApplyMode::Try(match req.try_timeout_ms {
                0 => DEFAULT_TRY_TIMEOUT,
                ms => Duration::from_millis(ms),
            }),
            Err(_) => return Err(Status::invalid_argument(format!("mode: unknown apply mode {}", req.mode))),
        };
        let outcome = self.node.config.apply(&req.data, mode, req.dry_run).await.map_err(|e| match e {
            ApplyError::Invalid(e) => Status::invalid_argument(format!("invalid config: {e}")),
            ApplyError::NeedsReboot(msg) => Status::failed_precondition(msg),
            ApplyError::Unusable(msg) => Status::invalid_argument(format!("invalid config: {msg}")),
            ApplyError::Persist(e) => Status::internal(e.to_string()),
        })?;
        if outcome.reboot {
            self.request_power(PowerAction::Reboot);
        }
        // A dry run also shows what the network would become. Not to the
        // anonymous callers of maintenance mode: the spec names the node's
        // addresses, routes and leases.
        let (network_diff, network_notes) = match (req.dry_run, anonymous) {
            (false, _) => (String::new(), Vec::new()),
            (true, true) => {
                (String::new(), vec!["no network preview in maintenance mode (the caller is anonymous)".to_string()])
            }
            (true, false) => match crate::config::parse(&req.data) {
                Ok((candidate, _)) => super::network::dry_run(&self.node, &candidate.config).await,
                Err(e) => (String::new(), vec![format!("no network preview: {e}")]),
            },
        };
        Ok(Response::new(pb::ApplyConfigurationResponse {
            mode: outcome.mode.into(),
            warnings: outcome.warnings,
            diff: outcome.diff,
            message: outcome.message,
            network_diff,
            network_notes,
        }))
    }

    async fn get_configuration(
        &self,
        _req: Request<pb::GetConfigurationRequest>,
    ) -> Result<Response<pb::GetConfigurationResponse>, Status> {
        let live = self.node.config.live().ok_or_else(|| Status::failed_precondition("the node has no config"))?;
        let staged_pending = self
            .node
            .store
            .get_typed::<crate::state::types::MachineConfigSpec>(crate::config::CONFIG_ID)
            .is_some_and(|(_, s)| s.staged_pending);
        Ok(Response::new(pb::GetConfigurationResponse {
            data: live.text.as_bytes().to_vec(),
            staged_pending,
            try_pending: self.node.config.try_pending().await,
        }))
    }

    async fn generate_client_configuration(
        &self,
        req: Request<pb::GenerateClientConfigurationRequest>,
    ) -> Result<Response<pb::GenerateClientConfigurationResponse>, Status> {
        let caller = caller(&req)?;
        let req = req.into_inner();
        if req.roles.is_empty() {
            return Err(Status::invalid_argument(
                "roles: at least one role is required (os:admin, os:operator, os:reader)",
            ));
        }
        bronze_pki::check_roles(&req.roles).map_err(|e| Status::invalid_argument(format!("roles: {e}")))?;
        let ttl = match req.ttl_seconds {
            0 => bronze_pki::DEFAULT_CLIENT_TTL,
            s => Duration::from_secs(s),
        };
        let key_type = match pb::KeyType::try_from(req.key_type) {
            Ok(pb::KeyType::Unspecified) => bronze_pki::KeyType::default(),
            Ok(pb::KeyType::EcdsaP256) => bronze_pki::KeyType::EcdsaP256,
            Ok(pb::KeyType::Ed25519) => bronze_pki::KeyType::Ed25519,
            Err(_) => return Err(Status::invalid_argument(format!("key_type: unknown key type {}", req.key_type))),
        };
        let live = self.node.config.live().ok_or_else(|| Status::failed_precondition("the node has no config"))?;
        let api = &live.config.machine.api;
        let ca_key = api.ca.key.as_ref().ok_or_else(|| {
            Status::failed_precondition("machine.api.ca.key is not set: this node cannot sign client certificates")
        })?;
        let ca = bronze_pki::CertificateAuthority::from_pem(api.ca.crt.as_str(), ca_key.as_str())
            .map_err(|e| Status::internal(e.to_string()))?;
        let name = format!("client of {}", caller.subject);
        let spec = bronze_pki::ClientCertSpec { key_type, ..bronze_pki::ClientCertSpec::new(&name, &req.roles, ttl) };
        let minted = ca.issue_client(&spec).map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(pb::GenerateClientConfigurationResponse {
            ca: ca.cert_pem().to_string(),
            crt: minted.cert_pem,
            key: minted.key_pem,
        }))
    }

    async fn reboot(&self, _req: Request<pb::RebootRequest>) -> Result<Response<pb::RebootResponse>, Status> {
        self.request_power(PowerAction::Reboot);
        Ok(Response::new(pb::RebootResponse { message: "rebooting".into() }))
    }

    async fn shutdown(&self, _req: Request<pb::ShutdownRequest>) -> Result<Response<pb::ShutdownResponse>, Status> {
        self.request_power(PowerAction::Shutdown);
        Ok(Response::new(pb::ShutdownResponse { message: "shutting down".into() }))
    }

    type EventsStream = EventStream;

    async fn events(&self, req: Request<pb::EventsRequest>) -> Result<Response<Self::EventsStream>, Status> {
        let req = req.into_inner();
        // Both rings, watched from the same moment; replayed oldest first.
        let mut audit = self.node.store.watch(&AUDIT_EVENT, None);
        let mut machine = self.node.store.watch(&MACHINE_EVENT, None);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            let mut replay = Vec::new();
            for watch in [&mut audit, &mut machine] {
                loop {
                    match watch.next().await {
                        Ok(WatchEvent::Change(c)) => replay.push(c.resource),
                        Ok(WatchEvent::Bootstrapped) => break,
                        Err(e) => {
                            let _ = tx.send(Err(Status::aborted(e.to_string()))).await;
                            return;
                        }
                    }
                }
            }
            replay.sort_by_key(|r| created(r));
            let tail = match req.tail_events {
                n if n < 0 => replay.len(),
                n => n as usize,
            };
            let skip = replay.len().saturating_sub(tail);
            for r in &replay[skip..] {
                if tx.send(Ok(to_event(r))).await.is_err() {
                    return;
                }
            }
            if !req.follow {
                return;
            }
            loop {
                let next = tokio::select! {
                    e = audit.next() => e,
                    e = machine.next() => e,
                };
                let event = match next {
                    Ok(WatchEvent::Change(c)) if c.kind == crate::state::ChangeKind::Created => to_event(&c.resource),
                    Ok(_) => continue,
                    Err(e) => {
                        let _ = tx.send(Err(Status::aborted(e.to_string()))).await;
                        return;
                    }
                };
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn memory(&self, _req: Request<pb::MemoryRequest>) -> Result<Response<pb::MemoryResponse>, Status> {
        let m =
            crate::sysinfo::memory(&self.node.paths.proc).map_err(|e| Status::unavailable(format!("meminfo: {e}")))?;
        Ok(Response::new(pb::MemoryResponse {
            total_bytes: m.total,
            free_bytes: m.free,
            available_bytes: m.available,
            buffers_bytes: m.buffers,
            cached_bytes: m.cached,
            swap_total_bytes: m.swap_total,
            swap_free_bytes: m.swap_free,
            process_rss_bytes: crate::sysinfo::own_rss(&self.node.paths.proc).unwrap_or(0),
        }))
    }

    async fn service_list(
        &self,
        _req: Request<pb::ServiceListRequest>,
    ) -> Result<Response<pb::ServiceListResponse>, Status> {
        let services = self
            .node
            .store
            .list(&SERVICE_STATUS)
            .iter()
            .filter_map(|r| serde_json::from_value::<ServiceStatusSpec>(r.spec.clone()).ok())
            .map(|s| pb::ServiceInfo {
                name: s.name,
                state: to_kebab(&s.state),
                message: s.message,
                pid: s.pid,
                restarts: s.restarts,
                last_exit: s.last_exit,
                health: to_kebab(&s.health),
                health_message: s.health_message,
                since: s.since,
            })
            .collect();
        Ok(Response::new(pb::ServiceListResponse { services }))
    }

    async fn service_start(&self, req: Request<pb::ServiceRequest>) -> Result<Response<pb::ServiceResponse>, Status> {
        let name = req.into_inner().name;
        self.node.services.start(&name).await.map_err(service_status)?;
        Ok(Response::new(pb::ServiceResponse { message: format!("service {name} starting") }))
    }

    async fn service_stop(&self, req: Request<pb::ServiceRequest>) -> Result<Response<pb::ServiceResponse>, Status> {
        let name = req.into_inner().name;
        self.node.services.stop(&name).await.map_err(service_status)?;
        Ok(Response::new(pb::ServiceResponse { message: format!("service {name} stopped") }))
    }

    async fn service_restart(&self, req: Request<pb::ServiceRequest>) -> Result<Response<pb::ServiceResponse>, Status> {
        let name = req.into_inner().name;
        self.node.services.restart(&name).await.map_err(service_status)?;
        Ok(Response::new(pb::ServiceResponse { message: format!("service {name} restarted") }))
    }

    type LogsStream = Pin<Box<dyn Stream<Item = Result<pb::LogEntry, Status>> + Send>>;

    async fn logs(&self, req: Request<pb::LogsRequest>) -> Result<Response<Self::LogsStream>, Status> {
        let req = req.into_inner();
        let buffer = self.node.services.logs(&req.service).map_err(service_status)?;
        let tail = usize::try_from(req.tail_lines).ok();
        let (lines, mut follow) = buffer.tail_and_follow(tail);
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::spawn(async move {
            for l in lines {
                if tx.send(Ok(pb::LogEntry { time: l.time, line: l.text })).await.is_err() {
                    return;
                }
            }
            if !req.follow {
                return;
            }
            loop {
                let item = match follow.recv().await {
                    Ok(l) => Ok(pb::LogEntry { time: l.time, line: l.text }),
                    Err(tokio::sync::broadcast::error::RecvError::Lagged(n)) => Ok(pb::LogEntry {
                        time: crate::state::now_rfc3339(),
                        line: format!("[bronzed] {n} lines skipped"),
                    }),
                    // The service was removed.
                    Err(tokio::sync::broadcast::error::RecvError::Closed) => return,
                };
                if tx.send(item).await.is_err() {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    type DmesgStream = Pin<Box<dyn Stream<Item = Result<pb::DmesgEntry, Status>> + Send>>;

    async fn dmesg(&self, req: Request<pb::DmesgRequest>) -> Result<Response<Self::DmesgStream>, Status> {
        let follow = req.into_inner().follow;
        let path = self.node.paths.dev.join("kmsg");
        // Fail early, with the reason, if the log cannot be opened at all.
        std::fs::File::open(&path).map_err(|e| Status::unavailable(format!("cannot read {}: {e}", path.display())))?;
        let (tx, rx) = tokio::sync::mpsc::channel(256);
        tokio::task::spawn_blocking(move || {
            let result = crate::logs::kmsg::read(&path, follow, |r| {
                let entry = pb::DmesgEntry {
                    uptime_seconds: r.micros as f64 / 1e6,
                    priority: r.priority.into(),
                    facility: r.facility,
                    message: r.message,
                };
                tx.blocking_send(Ok(entry)).is_ok()
            });
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(Status::unavailable(format!("reading {}: {e}", path.display()))));
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }

    async fn load_avg(&self, _req: Request<pb::LoadAvgRequest>) -> Result<Response<pb::LoadAvgResponse>, Status> {
        let (load1, load5, load15) =
            crate::sysinfo::loadavg(&self.node.paths.proc).map_err(|e| Status::unavailable(format!("loadavg: {e}")))?;
        Ok(Response::new(pb::LoadAvgResponse { load1, load5, load15 }))
    }

    async fn platform_refresh(
        &self,
        _req: Request<pb::PlatformRefreshRequest>,
    ) -> Result<Response<pb::PlatformRefreshResponse>, Status> {
        use crate::platform::resources::PLATFORM_DETECTION;
        use crate::platform::resources::{PLATFORM_ID, PlatformDetectionSpec};
        let store = &self.node.store;
        let mut changes = store.watch(&PLATFORM_DETECTION, Some(PLATFORM_ID.to_string()));
        let request = self.node.platform.refresh();
        // The controller re-chooses (detection is bounded by its budget);
        // wait for the round that saw this request, not for the fetch,
        // which may retry for long.
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(20);
        loop {
            if let Some((_, spec)) = store.get_typed::<PlatformDetectionSpec>(PLATFORM_ID)
                && spec.refresh >= request
            {
                let message = if !spec.error.is_empty() {
                    spec.error
                } else {
                    format!("platform {} (from {}); metadata is being fetched", spec.platform, spec.source)
                };
                return Ok(Response::new(pb::PlatformRefreshResponse { platform: spec.platform, message }));
            }
            match tokio::time::timeout_at(deadline, changes.next()).await {
                Ok(Ok(_)) => {}
                Ok(Err(e)) => return Err(Status::internal(format!("watching PlatformDetection: {e}"))),
                Err(_) => {
                    return Err(Status::deadline_exceeded(
                        "the platform controller did not choose a platform within 20 s; see `get platformdetection`",
                    ));
                }
            }
        }
    }

    async fn upgrade(
        &self,
        req: Request<Streaming<pb::UpgradeRequest>>,
    ) -> Result<Response<pb::UpgradeResponse>, Status> {
        use crate::boot::upgrade::Upload;
        use pb::upgrade_request::Part;
        let mut stream = req.into_inner();
        let header = match stream.message().await? {
            Some(pb::UpgradeRequest { part: Some(Part::Header(header)) }) => header,
            Some(_) => return Err(Status::invalid_argument("the first message of an upgrade must be the header")),
            None => return Err(Status::invalid_argument("empty upgrade: expected a header, vmlinuz and initrd")),
        };
        let disk = self.node.boot.clone();
        let esp = disk.esp().map_err(Status::failed_precondition)?.clone();
        let Ok(_writing) = disk.writing.try_lock() else {
            return Err(Status::aborted("another upgrade or rollback is being written"));
        };
        let keys = self.node.config.live().map(|l| l.config.machine.upgrade.trusted_keys.clone()).unwrap_or_default();
        let upgrade_status = |e: crate::boot::upgrade::UpgradeRefused| match e {
            e if e.is_caller_error() => Status::failed_precondition(e.to_string()),
            e => Status::internal(e.to_string()),
        };
        // The ESP is a disk: its writes happen off the async workers.
        let mut upload = tokio::task::block_in_place(|| {
            Upload::begin(
                &esp,
                disk.running,
                &header.manifest,
                &header.signature,
                &keys,
                header.tries,
                header.health_timeout_seconds,
            )
        })
        .map_err(upgrade_status)?;
        // A slow or stalled client holds the slot lock: bounded in time.
        let receive = async {
            while let Some(message) = stream.message().await? {
                match message.part {
                    Some(Part::Chunk(chunk)) => tokio::task::block_in_place(|| upload.write(&chunk.part, &chunk.data))
                        .map_err(upgrade_status)?,
                    Some(Part::Header(_)) => return Err(Status::invalid_argument("a second header in one upgrade")),
                    None => return Err(Status::invalid_argument("an upgrade message with neither header nor chunk")),
                }
            }
            Ok(())
        };
        tokio::time::timeout(UPGRADE_RECEIVE_LIMIT, receive).await.map_err(|_| {
            Status::deadline_exceeded(format!(
                "the upgrade was not received within {} s; nothing was switched",
                UPGRADE_RECEIVE_LIMIT.as_secs()
            ))
        })??;
        let written = tokio::task::block_in_place(|| upload.finish()).map_err(upgrade_status)?;
        disk.wrote();
        let rebooting = !header.stage;
        self.boot_event(
            "info",
            format!(
                "upgrade: slot {} now holds {} (generation {}, {} tries); {}",
                written.slot,
                written.release,
                written.generation,
                written.tries,
                if rebooting { "rebooting into it" } else { "staged for the next boot" }
            ),
        );
        if rebooting {
            self.request_power(PowerAction::Reboot);
        }
        Ok(Response::new(pb::UpgradeResponse {
            slot: written.slot.name().into(),
            release: written.release,
            generation: written.generation,
            tries: written.tries,
            rebooting,
        }))
    }

    async fn reset(&self, req: Request<pb::ResetRequest>) -> Result<Response<pb::ResetResponse>, Status> {
        let pb::ResetRequest { wipe, ungraceful } = req.into_inner();
        let all = match wipe.as_str() {
            "" | "state" => false,
            "all" => true,
            other => {
                return Err(Status::invalid_argument(format!(
                    "wipe {:?}: expected state or all",
                    bronze_bundle::text::escape_within(other, 40)
                )));
            }
        };
        if self.node.mode != crate::lifecycle::Mode::Pid1 {
            return Err(Status::failed_precondition(
                "reset wipes the state partition at the next boot: PID 1 only (in process mode, stop bronzed and remove its state dir)",
            ));
        }
        if all {
            let disk = self.node.boot.clone();
            let esp = disk.esp().map_err(Status::failed_precondition)?.clone();
            let Some(running) = disk.running else {
                return Err(Status::failed_precondition("wipe all: not booted from a Bronze disk"));
            };
            let Ok(_writing) = disk.writing.try_lock() else {
                return Err(Status::aborted("an upgrade or rollback is being written"));
            };
            tokio::task::block_in_place(|| crate::boot::upgrade::empty_slot(&esp, running.other()))
                .map_err(|e| Status::internal(e.to_string()))?;
            disk.wrote();
        }
        if let Err(e) = self.node.state_dir.request_reset() {
            return Err(Status::internal(format!("cannot ask for the reset: {e}")));
        }
        self.boot_event(
            "warning",
            format!(
                "reset: the state partition is wiped at the next boot{}; rebooting into maintenance mode{}",
                if all { " and the other slot was emptied" } else { "" },
                if ungraceful { " now (not graceful: services are killed)" } else { "" }
            ),
        );
        self.request_power(if ungraceful { PowerAction::RebootNow } else { PowerAction::Reboot });
        Ok(Response::new(pb::ResetResponse { message: "resetting: rebooting into maintenance mode".into() }))
    }

    async fn rollback(&self, req: Request<pb::RollbackRequest>) -> Result<Response<pb::RollbackResponse>, Status> {
        let stage = req.into_inner().stage;
        let disk = self.node.boot.clone();
        let esp = disk.esp().map_err(Status::failed_precondition)?.clone();
        let Ok(_writing) = disk.writing.try_lock() else {
            return Err(Status::aborted("another upgrade or rollback is being written"));
        };
        let written = tokio::task::block_in_place(|| crate::boot::upgrade::rollback(&esp, disk.running, 0))
            .map_err(|e| Status::failed_precondition(e.to_string()))?;
        disk.wrote();
        self.boot_event(
            "info",
            format!(
                "rollback requested: slot {} ({}) boots next{}",
                written.slot,
                written.release,
                if stage { "" } else { "; rebooting" }
            ),
        );
        if !stage {
            self.request_power(PowerAction::Reboot);
        }
        Ok(Response::new(pb::RollbackResponse {
            slot: written.slot.name().into(),
            release: written.release,
            rebooting: !stage,
        }))
    }
}
