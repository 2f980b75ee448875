//! `gen config` (a CA, a node config and an admin client config, made
//! locally) and `config new|contexts|use-context` (client configs: minted
//! by a node, or the local file's contexts).

use crate::cli::{Globals, parse_duration};
use crate::client::{NodeClient, call};
use crate::clientconfig::{self, ClientConfig};
use crate::output::{self, NodeResult, Output, obj};
use bronze_api::v1 as pb;
use clap::{Subcommand, ValueEnum};
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

#[derive(Debug, Subcommand)]
pub enum GenCommand {
    /// A CA, a node config and an admin client config.
    Config {
        /// Cluster/context name (also the node's hostname).
        name: String,
        /// Address clients use to reach the node, host[:port].
        #[arg(long)]
        endpoint: String,
        #[arg(long, default_value = ".")]
        output_dir: PathBuf,
        /// NTP server for the node (host[:port]); repeat for more. None by default.
        #[arg(long = "time-server")]
        time_servers: Vec<String>,
        /// Overwrite existing files.
        #[arg(long)]
        force: bool,
        /// Key type of the CA, the admin client and the node's server certificate.
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        key_type: KeyTypeArg,
    },
}

#[derive(Debug, Subcommand)]
pub enum ConfigCommand {
    /// Ask a node to mint a client config with the given roles.
    New {
        #[arg(long, value_delimiter = ',', required = true)]
        roles: Vec<String>,
        /// Certificate lifetime, e.g. 24h or 30d.
        #[arg(long, value_parser = parse_duration)]
        ttl: Option<Duration>,
        /// Key type of the new client key.
        #[arg(long, value_enum, default_value = "ecdsa-p256")]
        key_type: KeyTypeArg,
        /// The client config file to write.
        #[arg(long = "output-file", visible_alias = "out", value_name = "PATH")]
        output_file: PathBuf,
    },
    /// List contexts.
    Contexts,
    /// Make a context the current one.
    UseContext { name: String },
}

/// Key types for `--key-type`. ECDSA P-256 is the default because every
/// TLS stack offers it; gRPC core (Python, C++, Ruby grpc) does not offer
/// Ed25519 by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum KeyTypeArg {
    #[value(name = "ecdsa-p256")]
    EcdsaP256,
    Ed25519,
}

impl From<KeyTypeArg> for bronze_pki::KeyType {
    fn from(arg: KeyTypeArg) -> Self {
        match arg {
            KeyTypeArg::EcdsaP256 => bronze_pki::KeyType::EcdsaP256,
            KeyTypeArg::Ed25519 => bronze_pki::KeyType::Ed25519,
        }
    }
}

/// `gen config`: local only, no node.
pub fn run_gen(what: &GenCommand) -> anyhow::Result<ExitCode> {
    let GenCommand::Config { name, endpoint, output_dir, time_servers, force, key_type } = what;
    let generated = crate::genconfig::generate(name, endpoint, time_servers, output_dir, *force, (*key_type).into())?;
    println!("wrote {}", generated.node_config.display());
    println!("wrote {}", generated.client_config.display());
    Ok(ExitCode::SUCCESS)
}

pub async fn run(what: &ConfigCommand, g: &Globals) -> anyhow::Result<ExitCode> {
    match what {
        ConfigCommand::Contexts => {
            let config = ClientConfig::load(&g.config_path())?;
            print!("{}", contexts_table(&config));
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::UseContext { name } => {
            let path = g.config_path();
            let mut config = ClientConfig::load(&path)?;
            config.context(Some(name), &path)?;
            config.context = name.clone();
            config.save(&path)?;
            println!("current context is now {name:?}");
            Ok(ExitCode::SUCCESS)
        }
        ConfigCommand::New { roles, ttl, key_type, output_file } => {
            config_new(g, roles, *ttl, (*key_type).into(), output_file).await
        }
    }
}

/// `config contexts`: the current one marked with `*`.
pub fn contexts_table(config: &ClientConfig) -> String {
    let mut out = String::from("CURRENT   NAME   NODES\n");
    for (name, ctx) in &config.contexts {
        let mark = if *name == config.context { "*" } else { "" };
        out.push_str(&format!("{mark:<9} {name}   {}\n", ctx.nodes.join(",")));
    }
    out
}

/// `config new`: ask the first node for a client certificate and write a
/// client config around it.
async fn config_new(
    g: &Globals,
    roles: &[String],
    ttl: Option<Duration>,
    key_type: bronze_pki::KeyType,
    output: &Path,
) -> anyhow::Result<ExitCode> {
    let target = g.target()?;
    let node = &target.nodes[0];
    let client = NodeClient::connect(node, &target.auth).await.map_err(|e| anyhow::anyhow!("node {node}: {e}"))?;
    let minted = generate_client(client, roles.to_vec(), ttl, key_type)
        .await
        .map_err(|e| anyhow::anyhow!("node {node}: {e}"))?;
    let name = if target.context_name.is_empty() { "bronze".to_string() } else { target.context_name.clone() };
    let ctx = clientconfig::Context { nodes: target.nodes.clone(), ca: minted.ca, crt: minted.crt, key: minted.key };
    let config = ClientConfig { context: name.clone(), contexts: [(name, ctx)].into() };
    config.save(output)?;
    let fields = obj(serde_json::json!({ "roles": roles, "path": output.display().to_string() }));
    let out = Output::single(fields, CLIENT_CONFIG_COLUMNS);
    let results = [NodeResult { node: node.clone(), outcome: Ok(out) }];
    Ok(output::print(g.format(), CLIENT_CONFIG_COLUMNS, &results))
}

pub const CLIENT_CONFIG_COLUMNS: &[&str] = &["roles", "path"];

/// Asks the node for a client certificate with `roles` and a `key_type` key.
pub async fn generate_client(
    mut c: NodeClient,
    roles: Vec<String>,
    ttl: Option<Duration>,
    key_type: bronze_pki::KeyType,
) -> Result<pb::GenerateClientConfigurationResponse, String> {
    let key_type = match key_type {
        bronze_pki::KeyType::EcdsaP256 => pb::KeyType::EcdsaP256,
        bronze_pki::KeyType::Ed25519 => pb::KeyType::Ed25519,
    };
    call(c.machine.generate_client_configuration(pb::GenerateClientConfigurationRequest {
        roles,
        ttl_seconds: ttl.map_or(0, |d| d.as_secs().max(1)),
        key_type: key_type.into(),
    }))
    .await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn contexts_mark_the_current_one() {
        let ctx = |nodes: &[&str]| clientconfig::Context {
            nodes: nodes.iter().map(|n| n.to_string()).collect(),
            ca: String::new(),
            crt: String::new(),
            key: String::new(),
        };
        let config = ClientConfig {
            context: "lab".into(),
            contexts: [("lab".to_string(), ctx(&["a:1", "b:2"])), ("prod".to_string(), ctx(&[]))].into(),
        };
        let table = contexts_table(&config);
        let lines: Vec<&str> = table.lines().collect();
        assert_eq!(lines, ["CURRENT   NAME   NODES", "*         lab   a:1,b:2", "          prod   "]);
    }
}
