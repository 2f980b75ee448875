//! The gRPC API: one TLS listener whose config can be swapped (maintenance
//! ↔ secure) without a restart, the authorization layer in front of every
//! service, and the services themselves.

pub mod audit;
pub mod authz;
pub mod capture;
pub mod context;
pub mod deferred;
pub mod files;
pub mod machine;
pub mod network;
pub mod plugin;
pub mod process;
pub mod resource;
pub mod security;
pub mod storage;
pub mod support;
pub mod time;
pub mod tls;

use bronze_api::v1::machine_service_server::MachineServiceServer;
use bronze_api::v1::network_service_server::NetworkServiceServer;
use bronze_api::v1::plugin_service_server::PluginServiceServer;
use bronze_api::v1::resource_service_server::ResourceServiceServer;
use bronze_api::v1::time_service_server::TimeServiceServer;
use context::ApiContext;
use std::future::Future;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;

/// A client that does not finish its TLS handshake in this time is dropped.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// Serves the API on `listener` until `shutdown` resolves.
pub async fn serve(
    listener: TcpListener,
    node: Arc<ApiContext>,
    shutdown: impl Future<Output = ()> + Send + 'static,
    on_serving: impl FnOnce() + Send + 'static,
) -> anyhow::Result<()> {
    let (tx, rx) = mpsc::channel(128);
    let acceptor = tokio::spawn(accept_loop(listener, node.security.clone(), tx));
    // Reflection is built on its first request (see [`deferred`]).
    let reflection_v1 = deferred::Deferred::new(|| reflection().build_v1().map_err(reflection_error));
    let reflection_v1alpha = deferred::Deferred::new(|| reflection().build_v1alpha().map_err(reflection_error));

    let (health, health_service) = tonic_health::server::health_reporter();
    health.set_serving::<MachineServiceServer<machine::MachineApi>>().await;
    health.set_serving::<ResourceServiceServer<resource::ResourceApi>>().await;
    health.set_serving::<TimeServiceServer<time::TimeApi>>().await;
    health.set_serving::<PluginServiceServer<plugin::PluginApi>>().await;
    health.set_serving::<NetworkServiceServer<network::NetworkApi>>().await;

    let machine = MachineServiceServer::new(machine::MachineApi { node: node.clone() })
        .max_decoding_message_size(machine::MAX_APPLY_MESSAGE);
    let resources = ResourceServiceServer::new(resource::ResourceApi { store: node.store.clone() });
    let time = TimeServiceServer::new(time::TimeApi { store: node.store.clone(), holds: node.time_holds.clone() });
    let plugins = PluginServiceServer::new(plugin::PluginApi { plugins: node.plugins.clone() })
        .max_decoding_message_size(plugin::MAX_MESSAGE);
    let network = NetworkServiceServer::new(network::NetworkApi { node: node.clone() });
    on_serving();
    let result = tonic::transport::Server::builder()
        .layer(crate::metrics::ApiMetricsLayer)
        .layer(authz::AuthzLayer { security: node.security.clone(), audit: node.audit.clone() })
        .add_service(machine)
        .add_service(resources)
        .add_service(time)
        .add_service(plugins)
        .add_service(network)
        .add_service(storage::server(node.clone()))
        .add_service(support::server(node.clone()))
        .add_service(files::server(&node))
        .add_service(process::server(node.clone()))
        .add_service(capture::server(&node))
        .add_service(health_service)
        .add_service(reflection_v1)
        .add_service(reflection_v1alpha)
        .serve_with_incoming_shutdown(ReceiverStream::new(rx), shutdown)
        .await;
    acceptor.abort();
    Ok(result?)
}

/// Server reflection over every descriptor set the API serves.
fn reflection() -> tonic_reflection::server::Builder<'static> {
    tonic_reflection::server::Builder::configure()
        .register_encoded_file_descriptor_set(bronze_api::FILE_DESCRIPTOR_SET)
        .register_encoded_file_descriptor_set(tonic_health::pb::FILE_DESCRIPTOR_SET)
}

fn reflection_error(e: tonic_reflection::server::Error) -> String {
    format!("building the reflection service: {e}")
}

/// Accepts TCP connections and hands each to its own handshake task, using
/// whatever TLS config is current when the connection arrives.
async fn accept_loop(
    listener: TcpListener,
    security: Arc<security::Security>,
    tx: mpsc::Sender<Result<TlsStream<TcpStream>, io::Error>>,
) {
    loop {
        let (tcp, peer) = match listener.accept().await {
            Ok(conn) => conn,
            Err(e) => {
                // EMFILE and friends: back off instead of spinning.
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(Duration::from_millis(50)).await;
                continue;
            }
        };
        let _ = tcp.set_nodelay(true);
        let acceptor = tokio_rustls::TlsAcceptor::from(security.server_config());
        let tx = tx.clone();
        tokio::spawn(async move {
            match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                Ok(Ok(tls)) => {
                    let _ = tx.send(Ok(tls)).await;
                }
                Ok(Err(e)) => tracing::debug!(%peer, error = %e, "tls handshake failed"),
                Err(_) => tracing::debug!(%peer, "tls handshake timed out"),
            }
        });
    }
}
