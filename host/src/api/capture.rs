//! CaptureService: packet capture on a link, streamed as a pcap file (see
//! [`crate::capture`]). Admin only and audited (the authz table); the end of
//! each capture is audited too, with what was captured and why it stopped.

use super::audit::AuditLog;
use super::authz::Caller;
use crate::capture::{self, Busy, CaptureError, Limits};
use bronze_api::v1 as pb;
use bronze_api::v1::capture_service_server::{CaptureService, CaptureServiceServer};
use std::pin::Pin;
use std::sync::Arc;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

const METHOD: &str = "/bronze.v1.CaptureService/Capture";

pub struct CaptureApi {
    pub audit: Arc<AuditLog>,
    /// The links being captured on.
    pub busy: Busy,
}

impl CaptureApi {
    pub fn new(audit: Arc<AuditLog>) -> Self {
        Self { audit, busy: Busy::default() }
    }
}

fn status(e: CaptureError) -> Status {
    match e {
        CaptureError::NoSuchLink { .. } => Status::not_found(e.to_string()),
        CaptureError::Busy { .. } => Status::resource_exhausted(e.to_string()),
        e if e.is_invalid_request() => Status::invalid_argument(e.to_string()),
        e => Status::internal(e.to_string()),
    }
}

/// The service, as `api::serve` registers it.
pub fn server(node: &super::context::ApiContext) -> CaptureServiceServer<CaptureApi> {
    CaptureServiceServer::new(CaptureApi::new(node.audit.clone()))
}

#[tonic::async_trait]
impl CaptureService for CaptureApi {
    type CaptureStream = Pin<Box<dyn Stream<Item = Result<pb::CaptureChunk, Status>> + Send>>;

    async fn capture(&self, req: Request<pb::CaptureRequest>) -> Result<Response<Self::CaptureStream>, Status> {
        let caller = req
            .extensions()
            .get::<Caller>()
            .cloned()
            .ok_or_else(|| Status::internal("request bypassed authorization"))?;
        let req = req.into_inner();
        let limits = Limits::new(req.duration_ms, req.max_bytes, req.snaplen).map_err(status)?;
        let filter =
            capture::filter(req.filter.iter().map(|i| (i.code, i.jt, i.jf, i.k)).collect::<Vec<_>>().into_iter())
                .map_err(status)?;
        let link = capture::lookup(&req.link).await.map_err(status)?;
        if !filter.is_empty() && req.filter_link_type != link.link_type {
            return Err(status(CaptureError::FilterLinkType {
                link: link.name.clone(),
                link_type: link.link_type,
                filter: req.filter_link_type,
            }));
        }
        let guard = self.busy.claim(&link.name).map_err(status)?;
        let socket = capture::open(&link, &filter, limits.snaplen).map_err(status)?;
        let expression = crate::network::dhcp::escaped(&req.filter_expression);
        let (tx, rx) = tokio::sync::mpsc::channel(8);
        let audit = self.audit.clone();
        tokio::task::spawn_blocking(move || {
            let _guard = guard;
            let sink = |data: Vec<u8>| {
                if data.is_empty() {
                    return !tx.is_closed();
                }
                tx.blocking_send(Ok(pb::CaptureChunk { data, summary: None })).is_ok()
            };
            let summary = capture::run(&socket, &link, limits, sink);
            let dropped = summary.kernel.map_or(0, |k| k.dropped);
            let message = format!(
                "capture on {} (filter {expression:?}): {} packets, {} bytes, {dropped} dropped by the kernel, stopped by {}{}",
                link.name,
                summary.packets,
                summary.bytes,
                summary.stopped_by,
                summary.error.as_deref().map(|e| format!(": {e}")).unwrap_or_default()
            );
            let end = if summary.error.is_some() { Status::internal(message) } else { Status::ok(message) };
            audit.record(&caller, METHOD, &end);
            let last = pb::CaptureSummary {
                stopped_by: summary.stopped_by.to_string(),
                packets: summary.packets,
                bytes: summary.bytes,
                link_type: link.link_type,
                error: summary.error.unwrap_or_default(),
                kernel_accepted: summary.kernel.map_or(0, |k| k.accepted),
                kernel_dropped: dropped,
            };
            let _ = tx.blocking_send(Ok(pb::CaptureChunk { data: Vec::new(), summary: Some(last) }));
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
