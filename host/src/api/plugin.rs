//! `PluginService`: install (streamed upload, validated before anything is
//! stored), list, status, run and remove plugins.

use crate::plugins::PluginManager;
use crate::plugins::instance::InstanceView;
use crate::plugins::manager::{PluginError, PluginView};
use crate::plugins::outcome::Outcome;
use bronze_api::v1 as pb;
use bronze_api::v1::plugin_service_server::PluginService;
use std::sync::Arc;
use tokio_stream::StreamExt;
use tonic::{Request, Response, Status, Streaming};

/// Largest plugin.wasm an upload may carry.
pub const MAX_UPLOAD_BYTES: u64 = bronze_bundle::MAX_WASM_BYTES;
/// Largest single message (a chunk or the header).
pub const MAX_MESSAGE: usize = 4 << 20;

pub struct PluginApi {
    pub plugins: Arc<PluginManager>,
}

fn status(e: PluginError) -> Status {
    match e {
        PluginError::Invalid(m) => Status::invalid_argument(m),
        PluginError::Precondition(m) => Status::failed_precondition(m),
        PluginError::NotFound(m) => Status::not_found(m),
        PluginError::Limit(m) => Status::resource_exhausted(m),
        PluginError::Internal(m) => Status::internal(m),
    }
}

fn rfc3339(at: std::time::SystemTime) -> String {
    time::OffsetDateTime::from(at).format(&time::format_description::well_known::Rfc3339).unwrap_or_default()
}

fn outcome(o: &Outcome) -> pb::PluginOutcome {
    pb::PluginOutcome {
        kind: o.kind.as_str().to_string(),
        message: o.message.clone(),
        started: o.started.clone(),
        duration_us: o.duration.as_micros() as u64,
    }
}

fn instance(view: &InstanceView) -> pb::PluginInstanceStatus {
    pb::PluginInstanceStatus {
        id: view.id.clone(),
        plugin: view.plugin.clone(),
        state: view.state.to_string(),
        reason: view.reason.clone(),
        runs: view.runs,
        failures: view.failures,
        consecutive_failures: view.consecutive_failures,
        last_outcome: view.last.as_ref().map(outcome),
        next_run: view.next_run.map(rfc3339).unwrap_or_default(),
        capabilities: view.capabilities.clone(),
        log_dropped: view.log_dropped,
    }
}

fn info(view: &PluginView) -> pb::PluginInfo {
    pb::PluginInfo {
        id: view.entry.id.clone(),
        version: view.entry.version.clone(),
        world: view.entry.world.clone(),
        sha256: view.entry.sha256.clone(),
        signed_by: view.entry.signed_by.clone().unwrap_or_default(),
        installed_at: view.entry.installed_at.clone(),
        wasm_bytes: view.entry.wasm_bytes,
        imports: view.imports.clone(),
        instances: view.instances.iter().map(instance).collect(),
        artifact: view.artifact.clone(),
        source: view.entry.source.clone(),
    }
}

/// Reads the upload: the header first, then exactly `wasm_size` bytes.
async fn receive(
    mut stream: Streaming<pb::PluginInstallRequest>,
) -> Result<(pb::PluginInstallHeader, Vec<u8>), Status> {
    use pb::plugin_install_request::Part;
    let header = match stream.next().await {
        Some(Ok(pb::PluginInstallRequest { part: Some(Part::Header(header)) })) => header,
        Some(Ok(_)) => return Err(Status::invalid_argument("the first message of an install must be the header")),
        Some(Err(e)) => return Err(e),
        None => return Err(Status::invalid_argument("empty upload: expected a header and the component")),
    };
    if header.wasm_size > MAX_UPLOAD_BYTES {
        return Err(Status::invalid_argument(format!(
            "header.wasm_size: plugin.wasm is {} bytes; the limit is {MAX_UPLOAD_BYTES} bytes",
            header.wasm_size
        )));
    }
    let mut wasm = Vec::with_capacity(header.wasm_size as usize);
    while let Some(message) = stream.next().await {
        match message?.part {
            Some(Part::Chunk(chunk)) => {
                if wasm.len() as u64 + chunk.len() as u64 > header.wasm_size {
                    return Err(Status::invalid_argument(format!(
                        "upload exceeds header.wasm_size ({} bytes) at byte {}",
                        header.wasm_size,
                        header.wasm_size.min(wasm.len() as u64 + chunk.len() as u64)
                    )));
                }
                wasm.extend_from_slice(&chunk);
            }
            Some(Part::Header(_)) => return Err(Status::invalid_argument("a second header in one upload")),
            None => return Err(Status::invalid_argument("an upload message with neither header nor chunk")),
        }
    }
    if wasm.len() as u64 != header.wasm_size {
        return Err(Status::invalid_argument(format!(
            "upload ended after {} of {} bytes (header.wasm_size)",
            wasm.len(),
            header.wasm_size
        )));
    }
    if !header.wasm_sha256.is_empty() {
        let actual = bronze_bundle::sha256_hex(&wasm);
        if actual != header.wasm_sha256 {
            return Err(Status::invalid_argument(format!(
                "header.wasm_sha256: the upload's sha256 is {actual}, the header says {}",
                header.wasm_sha256
            )));
        }
    }
    Ok((header, wasm))
}

#[tonic::async_trait]
impl PluginService for PluginApi {
    async fn install(
        &self,
        req: Request<Streaming<pb::PluginInstallRequest>>,
    ) -> Result<Response<pb::PluginInstallResponse>, Status> {
        let (header, wasm) = receive(req.into_inner()).await?;
        let report = self.plugins.install(header.manifest, header.signature, wasm).await.map_err(status)?;
        Ok(Response::new(pb::PluginInstallResponse {
            id: report.id,
            version: report.version,
            previous_version: report.previous_version.unwrap_or_default(),
            sha256: report.sha256,
            signed_by: report.signed_by.unwrap_or_default(),
            compile_ms: report.compile_ms,
            instances: report.instances,
        }))
    }

    async fn list(&self, _req: Request<pb::PluginListRequest>) -> Result<Response<pb::PluginListResponse>, Status> {
        Ok(Response::new(pb::PluginListResponse { plugins: self.plugins.list().iter().map(info).collect() }))
    }

    async fn remove(
        &self,
        req: Request<pb::PluginRemoveRequest>,
    ) -> Result<Response<pb::PluginRemoveResponse>, Status> {
        let entry = self.plugins.remove(&req.into_inner().id).await.map_err(status)?;
        Ok(Response::new(pb::PluginRemoveResponse { id: entry.id, version: entry.version }))
    }

    async fn status(
        &self,
        req: Request<pb::PluginStatusRequest>,
    ) -> Result<Response<pb::PluginStatusResponse>, Status> {
        let (view, log) = self.plugins.status(&req.into_inner().id).map_err(status)?;
        Ok(Response::new(pb::PluginStatusResponse {
            plugin: Some(info(&view)),
            log: log
                .into_iter()
                .map(|(instance, line)| pb::PluginLogLine {
                    instance,
                    time: line.time,
                    level: line.level.as_str().to_string(),
                    message: line.message,
                })
                .collect(),
        }))
    }

    async fn run(&self, req: Request<pb::PluginRunRequest>) -> Result<Response<pb::PluginRunResponse>, Status> {
        let (instance, result, value) = self.plugins.run(&req.into_inner().id).await.map_err(status)?;
        Ok(Response::new(pb::PluginRunResponse {
            instance,
            outcome: Some(outcome(&result)),
            result_json: value.map(|v| v.to_string()).unwrap_or_default(),
        }))
    }
}
