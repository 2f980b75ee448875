//! `NetworkService`: what the node's network would become, from the network
//! spec controller, shown as a diff against the live spec; nothing is
//! applied. Also the network section of `ApplyConfiguration`'s dry run.
//! And `Netstat`: the sockets of bronzed's network namespace
//! ([`crate::network::sockets`]).
//!
//! Specs are shown as YAML with one line per link, address and route (a
//! flow mapping each), so a diff line says everything about one item: its
//! link, its value and the layer it came from.

use crate::api::context::ApiContext;
use crate::network::layers::NetworkSpecSpec;
use crate::network::sockets;
use crate::network::spec_controller::NetworkSpecController;
use bronze_api::v1 as pb;
use bronze_api::v1::network_service_server::NetworkService;
use bronze_config::MachineConfig;
use serde_yaml::Value;
use std::fmt::Write as _;
use std::sync::{Arc, OnceLock};
use std::time::Duration;
use tonic::{Request, Response, Status};

/// How long a preview may take: the configurator plugin's own deadline is
/// shorter; this guards against a preview that never ends.
pub const PREVIEW_TIMEOUT: Duration = Duration::from_secs(30);

/// What the client is told while the controller is still being built.
pub const NOT_UP: &str = "the network controller is not up yet: try again in a moment";

pub struct NetworkApi {
    pub node: Arc<ApiContext>,
}

/// The node's network spec controller, or UNAVAILABLE.
fn controller(cell: &OnceLock<Arc<NetworkSpecController>>) -> Result<&Arc<NetworkSpecController>, Status> {
    cell.get().ok_or_else(|| Status::unavailable(NOT_UP))
}

#[tonic::async_trait]
impl NetworkService for NetworkApi {
    async fn plan(&self, _req: Request<pb::NetworkPlanRequest>) -> Result<Response<pb::NetworkPlanResponse>, Status> {
        let network = controller(&self.node.network)?;
        let live = network.live();
        let candidate = tokio::time::timeout(PREVIEW_TIMEOUT, network.preview(None, true))
            .await
            .map_err(|_| {
                Status::deadline_exceeded(format!(
                    "the network plan took longer than {} s (see the configurator's logs)",
                    PREVIEW_TIMEOUT.as_secs()
                ))
            })?
            .map_err(|e| Status::failed_precondition(format!("the network spec would be refused: {e}")))?;
        let to_json = |spec: &NetworkSpecSpec| {
            serde_json::to_string(spec).map_err(|e| Status::internal(format!("encoding the network spec: {e}")))
        };
        Ok(Response::new(pb::NetworkPlanResponse {
            candidate_json: to_json(&candidate)?,
            live_json: live.as_deref().map(to_json).transpose()?.unwrap_or_default(),
            diff: spec_diff(live.as_deref(), &candidate),
            warnings: candidate.warnings,
        }))
    }

    async fn netstat(&self, req: Request<pb::NetstatRequest>) -> Result<Response<pb::NetstatResponse>, Status> {
        let r = req.into_inner();
        let filter = sockets::Filter { listening: r.listening, tcp: r.tcp, udp: r.udp, ipv4: r.ipv4, ipv6: r.ipv6 };
        let proc = self.node.paths.proc.clone();
        let modules = self.node.modules.clone();
        let found = tokio::task::spawn_blocking(move || sockets::netstat_loading(&filter, &proc, modules.as_ref()))
            .await
            .map_err(|e| Status::internal(format!("the socket listing stopped: {e}")))?
            .map_err(|e| Status::internal(e.to_string()))?;
        Ok(Response::new(netstat_response(found)))
    }
}

/// The wire form of a socket listing.
pub fn netstat_response(found: sockets::Netstat) -> pb::NetstatResponse {
    let sockets = found
        .sockets
        .into_iter()
        .map(|s| pb::Socket {
            protocol: s.protocol.as_str().into(),
            ip_version: s.ip_version.into(),
            state: s.state_name().into(),
            local_address: s.local.to_string(),
            local_port: s.local_port.into(),
            remote_address: s.remote.to_string(),
            remote_port: s.remote_port.into(),
            recv_queue: s.recv_queue,
            send_queue: s.send_queue,
            uid: s.uid,
            inode: s.inode.into(),
            processes: s.owners.into_iter().map(|o| pb::SocketProcess { pid: o.pid, command: o.command }).collect(),
        })
        .collect();
    pb::NetstatResponse { sockets, truncated: found.truncated, warnings: found.warnings }
}

/// The network section of a dry run: the diff from the live spec to the
/// one `config` would give, and notes (no live spec yet, no controller,
/// a refused spec, the candidate's warnings). Never fails the dry run.
pub async fn dry_run(node: &ApiContext, config: &MachineConfig) -> (String, Vec<String>) {
    let Some(network) = node.network.get() else {
        return (String::new(), vec![format!("no network preview: {NOT_UP}")]);
    };
    let live = network.live();
    let candidate = match tokio::time::timeout(PREVIEW_TIMEOUT, network.preview(Some(config), false)).await {
        Ok(Ok(candidate)) => candidate,
        Ok(Err(e)) => return (String::new(), vec![format!("the network spec of this config would be refused: {e}")]),
        Err(_) => {
            let note = format!("no network preview: it took longer than {} s", PREVIEW_TIMEOUT.as_secs());
            return (String::new(), vec![note]);
        }
    };
    let mut notes = Vec::new();
    if live.is_none() {
        notes.push("the node has no live network spec yet: the diff shows the whole spec".to_string());
    }
    notes.extend(candidate.warnings.iter().map(|w| format!("warning: {w}")));
    (spec_diff(live.as_deref(), &candidate), notes)
}

/// Unified diff from `live` (nothing when `None`) to `candidate`, both as
/// [`spec_yaml`]; empty when they show the same.
pub fn spec_diff(live: Option<&NetworkSpecSpec>, candidate: &NetworkSpecSpec) -> String {
    bronze_config::diff(&live.map(spec_yaml).unwrap_or_default(), &spec_yaml(candidate))
}

/// A spec as YAML for a diff: each field on its own line, lists one item a
/// line as a flow mapping; warnings are left out (they are shown apart).
pub fn spec_yaml(spec: &NetworkSpecSpec) -> String {
    let mut out = String::new();
    let Ok(Value::Mapping(fields)) = serde_yaml::to_value(spec) else {
        return out;
    };
    for (key, value) in &fields {
        let key = flow(key);
        if key == "warnings" {
            continue;
        }
        match value {
            Value::Sequence(items) if !items.is_empty() => {
                let _ = writeln!(out, "{key}:");
                for item in items {
                    let _ = writeln!(out, "- {}", flow(item));
                }
            }
            other => {
                let _ = writeln!(out, "{key}: {}", flow(other));
            }
        }
    }
    out
}

/// `value` on one line, in YAML's flow style.
fn flow(value: &Value) -> String {
    match value {
        Value::Null => "null".into(),
        Value::Bool(b) => b.to_string(),
        Value::Number(n) => n.to_string(),
        Value::String(s) => scalar(s),
        Value::Sequence(items) => format!("[{}]", items.iter().map(flow).collect::<Vec<_>>().join(", ")),
        Value::Mapping(map) => {
            let fields: Vec<String> = map.iter().map(|(k, v)| format!("{}: {}", flow(k), flow(v))).collect();
            format!("{{{}}}", fields.join(", "))
        }
        // An enum variant with data (a bond, a VLAN): `{bond: {...}}`, as in JSON.
        Value::Tagged(tagged) => {
            let tag = tagged.tag.to_string();
            format!("{{{}: {}}}", scalar(tag.trim_start_matches('!')), flow(&tagged.value))
        }
    }
}

/// A string plain when it cannot be read as anything else, else quoted
/// (JSON's escapes are YAML's): names, CIDRs and layers stay readable, and
/// a hostile name cannot break the line or pass for another field.
fn scalar(s: &str) -> String {
    let plain = s.chars().next().is_some_and(|c| c.is_ascii_alphanumeric())
        && s.chars().all(|c| c.is_ascii_alphanumeric() || matches!(c, '.' | '/' | '-' | '_' | '@' | '+'))
        && s.parse::<f64>().is_err()
        && !s.starts_with("0x")
        && !s.starts_with("0o")
        && !matches!(
            s.to_ascii_lowercase().as_str(),
            "true" | "false" | "null" | "yes" | "no" | "on" | "off" | "y" | "n" | "inf" | "nan"
        );
    if plain { s.to_string() } else { serde_json::to_string(s).unwrap_or_default() }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::network::layers::{Layer, Sourced, SpecAddress, SpecLink, SpecRoute};
    use crate::network::plan::RoutePlan;

    fn spec() -> NetworkSpecSpec {
        NetworkSpecSpec {
            links: vec![SpecLink {
                name: "eth0".into(),
                up: true,
                mtu: Some(Sourced { value: 1500, layer: Layer::Config }),
                kind: None,
                dhcp4: None,
                layer: Layer::Config,
                addressing_layer: Some(Layer::Config),
            }],
            addresses: vec![SpecAddress {
                link: "eth0".into(),
                address: "192.0.2.10/24".parse().unwrap(),
                layer: Layer::Config,
            }],
            routes: vec![SpecRoute {
                route: RoutePlan {
                    link: "eth0".into(),
                    destination: "0.0.0.0/0".parse().unwrap(),
                    gateway: Some("192.0.2.1".parse().unwrap()),
                    metric: 1024,
                    on_link: false,
                },
                layer: Layer::Cmdline,
            }],
            hostname: Some(Sourced { value: "node-1".into(), layer: Layer::Platform }),
            warnings: vec!["a warning".into()],
            ..Default::default()
        }
    }

    #[test]
    fn no_controller_yet_is_unavailable() {
        let Err(status) = controller(&OnceLock::new()) else { panic!("a controller out of nothing") };
        assert_eq!(status.code(), tonic::Code::Unavailable);
        assert_eq!(status.message(), "the network controller is not up yet: try again in a moment");
    }

    #[test]
    fn one_line_per_item_with_its_layer_and_no_warnings() {
        let yaml = spec_yaml(&spec());
        assert!(yaml.contains("\n- {link: eth0, address: 192.0.2.10/24, layer: config}\n"), "{yaml}");
        assert!(
            yaml.contains(
                "\n- {link: eth0, destination: 0.0.0.0/0, gateway: 192.0.2.1, metric: 1024, layer: cmdline}\n"
            ),
            "{yaml}"
        );
        assert!(yaml.contains("hostname: {value: node-1, layer: platform}\n"), "{yaml}");
        assert!(yaml.contains("applied: false\n"), "{yaml}");
        assert!(!yaml.contains("warning"), "{yaml}");
        // It is YAML, and reads back as the spec (warnings aside).
        let back: NetworkSpecSpec = serde_yaml::from_str(&yaml).unwrap_or_else(|e| panic!("{e}: {yaml}"));
        assert_eq!(back, NetworkSpecSpec { warnings: vec![], ..spec() });
    }

    #[test]
    fn strings_that_read_as_something_else_or_break_lines_are_quoted() {
        for (s, want) in [
            ("eth0", "eth0"),
            ("fe80::1/64", "\"fe80::1/64\""),
            ("true", "\"true\""),
            ("1500", "\"1500\""),
            ("1e3", "\"1e3\""),
            ("", "\"\""),
            ("x\n- {link: evil}", "\"x\\n- {link: evil}\""),
            ("a, b: c", "\"a, b: c\""),
            ("-x", "\"-x\""),
        ] {
            assert_eq!(scalar(s), want, "{s:?}");
            let back: String = serde_yaml::from_str(&scalar(s)).unwrap();
            assert_eq!(back, s);
        }
    }

    #[test]
    fn the_diff_names_the_new_address_and_its_layer() {
        let live = NetworkSpecSpec { addresses: vec![], ..spec() };
        let diff = spec_diff(Some(&live), &spec());
        assert!(diff.starts_with("--- live\n+++ new\n"), "{diff}");
        let added: Vec<&str> = diff.lines().filter(|l| l.starts_with('+') && !l.starts_with("+++")).collect();
        assert_eq!(added, ["+addresses:", "+- {link: eth0, address: 192.0.2.10/24, layer: config}"], "{diff}");
        assert_eq!(spec_diff(Some(&spec()), &spec()), "");
        // Warnings alone change nothing in the diff.
        assert_eq!(spec_diff(Some(&NetworkSpecSpec { warnings: vec![], ..spec() }), &spec()), "");
        // No live spec: everything is new.
        let all = spec_diff(None, &spec());
        assert!(all.lines().filter(|l| l.starts_with('-') && !l.starts_with("---")).count() == 0, "{all}");
        assert!(all.contains("+- {link: eth0, address: 192.0.2.10/24, layer: config}"), "{all}");
    }
}
