//! `ResourceService`: read-only Get, List and Watch over the store.
//! Sensitive types are readable by `os:admin` only.

use super::authz::{Caller, Role};
use super::machine::to_pb_resource;
use crate::state::types::{self, ALL};
use crate::state::{ChangeKind, ResourceDefinition, Store, WatchEvent};
use bronze_api::v1 as pb;
use bronze_api::v1::resource_service_server::ResourceService;
use std::pin::Pin;
use tokio_stream::Stream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status};

pub struct ResourceApi {
    pub store: Store,
}

/// Resolves the type and checks namespace and sensitivity for the caller.
fn resolve<T>(req: &Request<T>, type_name: &str, namespace: &str) -> Result<&'static ResourceDefinition, Status> {
    let def = types::lookup(type_name).ok_or_else(|| {
        let known: Vec<_> = ALL.iter().map(|d| d.aliases[0]).collect();
        Status::not_found(format!("unknown resource type {type_name:?}; known types: {}", known.join(", ")))
    })?;
    if !namespace.is_empty() && namespace != def.namespace {
        return Err(Status::not_found(format!(
            "{} live in namespace {:?}, not {namespace:?}",
            def.type_name, def.namespace
        )));
    }
    if def.sensitive {
        let caller = req.extensions().get::<Caller>();
        if !caller.is_some_and(|c| c.has(Role::Admin)) {
            let who = caller.map(|c| c.role_label()).unwrap_or_default();
            return Err(Status::permission_denied(format!("{who} may not read {} (sensitive)", def.type_name)));
        }
    }
    Ok(def)
}

type WatchStream = Pin<Box<dyn Stream<Item = Result<pb::WatchResponse, Status>> + Send>>;

#[tonic::async_trait]
impl ResourceService for ResourceApi {
    async fn get(&self, req: Request<pb::GetRequest>) -> Result<Response<pb::GetResponse>, Status> {
        let def = resolve(&req, &req.get_ref().r#type, &req.get_ref().namespace)?;
        let id = &req.get_ref().id;
        let resource =
            self.store.get(def, id).ok_or_else(|| Status::not_found(format!("{} {id:?} not found", def.type_name)))?;
        Ok(Response::new(pb::GetResponse { resource: Some(to_pb_resource(&resource)) }))
    }

    async fn list(&self, req: Request<pb::ListRequest>) -> Result<Response<pb::ListResponse>, Status> {
        let def = resolve(&req, &req.get_ref().r#type, &req.get_ref().namespace)?;
        let resources = self.store.list(def).iter().map(|r| to_pb_resource(r)).collect();
        Ok(Response::new(pb::ListResponse { resources }))
    }

    type WatchStream = WatchStream;

    async fn watch(&self, req: Request<pb::WatchRequest>) -> Result<Response<Self::WatchStream>, Status> {
        let def = resolve(&req, &req.get_ref().r#type, &req.get_ref().namespace)?;
        let id = Some(req.get_ref().id.clone()).filter(|id| !id.is_empty());
        let mut watch = self.store.watch(def, id);
        let (tx, rx) = tokio::sync::mpsc::channel(64);
        tokio::spawn(async move {
            loop {
                let item = match watch.next().await {
                    Ok(WatchEvent::Bootstrapped) => {
                        Ok(pb::WatchResponse { event: pb::EventType::Bootstrapped as i32, resource: None })
                    }
                    Ok(WatchEvent::Change(c)) => {
                        let event = match c.kind {
                            ChangeKind::Created => pb::EventType::Created,
                            ChangeKind::Updated => pb::EventType::Updated,
                            ChangeKind::Destroyed => pb::EventType::Destroyed,
                        };
                        Ok(pb::WatchResponse { event: event as i32, resource: Some(to_pb_resource(&c.resource)) })
                    }
                    Err(e) => Err(Status::aborted(e.to_string())),
                };
                let end = item.is_err();
                // A closed channel means the client went away.
                if tx.send(item).await.is_err() || end {
                    return;
                }
            }
        });
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}
