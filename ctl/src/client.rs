//! A connected node, unary calls with a deadline, and the fan-out that runs
//! one operation against many nodes in parallel, turning every failure into
//! a human sentence. Commands reach it through `Globals::each_node`.

use crate::connect::{self, Auth};
use crate::output::{NodeResult, Output};
use bronze_api::v1::machine_service_client::MachineServiceClient;
use bronze_api::v1::plugin_service_client::PluginServiceClient;
use bronze_api::v1::resource_service_client::ResourceServiceClient;
use std::future::Future;
use std::time::Duration;
use tonic::transport::Channel;

/// How long connecting to a node may take.
pub const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A node with its clients.
#[derive(Debug, Clone)]
pub struct NodeClient {
    pub node: String,
    pub channel: Channel,
    pub machine: MachineServiceClient<Channel>,
    pub resources: ResourceServiceClient<Channel>,
    pub plugins: PluginServiceClient<Channel>,
}

impl NodeClient {
    pub async fn connect(node: &str, auth: &Auth) -> Result<Self, String> {
        let channel = connect::connect(node, auth, CONNECT_TIMEOUT).await.map_err(|e| e.to_string())?;
        Ok(Self {
            node: node.to_string(),
            machine: MachineServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            resources: ResourceServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            plugins: PluginServiceClient::new(channel.clone()).max_decoding_message_size(64 << 20),
            channel,
        })
    }
}

/// "permission denied: os:reader may not call Reboot".
pub fn describe_status(status: &tonic::Status) -> String {
    let code = format!("{:?}", status.code());
    let mut phrase = String::new();
    for (i, ch) in code.chars().enumerate() {
        if ch.is_uppercase() && i > 0 {
            phrase.push(' ');
        }
        phrase.push(ch.to_ascii_lowercase());
    }
    let message = status.message();
    if message.is_empty() {
        return phrase;
    }
    // Transport failures carry their cause in the source chain.
    let detail = std::error::Error::source(status).map(connect::error_chain).filter(|d| !message.contains(d.as_str()));
    match detail {
        Some(d) => format!("{phrase}: {message}: {d}"),
        None => format!("{phrase}: {message}"),
    }
}

/// Deadline of one unary call.
pub const CALL_TIMEOUT: Duration = Duration::from_secs(30);

/// A unary call with the default deadline, its failure as a sentence.
pub async fn call<T, F>(fut: F) -> Result<T, String>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    call_within(CALL_TIMEOUT, fut).await
}

/// A unary call with its own deadline, its failure as a sentence.
pub async fn call_within<T, F>(deadline: Duration, fut: F) -> Result<T, String>
where
    F: Future<Output = Result<tonic::Response<T>, tonic::Status>>,
{
    match tokio::time::timeout(deadline, fut).await {
        Ok(Ok(resp)) => Ok(resp.into_inner()),
        Ok(Err(status)) => Err(describe_status(&status)),
        Err(_) => Err(format!("no answer within {}s", deadline.as_secs())),
    }
}

/// Runs `op` against every node in parallel; results keep the nodes' order.
pub async fn fan_out<F, Fut>(nodes: &[String], auth: &Auth, op: F) -> Vec<NodeResult>
where
    F: Fn(NodeClient) -> Fut,
    Fut: Future<Output = Result<Output, String>>,
{
    let op = &op;
    let tasks = nodes.iter().map(|node| async move {
        let outcome = match NodeClient::connect(node, auth).await {
            Ok(client) => op(client).await,
            Err(e) => Err(e),
        };
        NodeResult { node: node.clone(), outcome }
    });
    futures::future::join_all(tasks).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statuses_read_as_sentences() {
        let s = tonic::Status::permission_denied("os:reader may not call Reboot");
        assert_eq!(describe_status(&s), "permission denied: os:reader may not call Reboot");
        assert_eq!(describe_status(&tonic::Status::unauthenticated("")), "unauthenticated");
    }

    #[tokio::test]
    async fn unreachable_node_is_an_error_result() {
        // Port 1 on loopback: nothing listens there.
        let results = fan_out(&["127.0.0.1:1".to_string()], &Auth::Insecure { fingerprint: None }, |_c| async {
            Ok(Output::default())
        })
        .await;
        let err = results[0].outcome.as_ref().unwrap_err();
        assert!(err.starts_with("cannot connect:"), "{err}");
        assert!(err.contains("refused"), "{err}");
    }
}
