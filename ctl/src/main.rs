//! `bronzectl`: parse flags, resolve nodes and credentials, run a command
//! against every node in parallel, print, and exit 0 only if all succeeded.

use anyhow::{Context as _, bail};
use bronze_api::v1 as pb;
use bronzectl::client::{NodeClient, fan_out};
use bronzectl::clientconfig::{self, ClientConfig};
use bronzectl::commands;
use bronzectl::connect::{self, Auth};
use bronzectl::network::{self, NetworkCommand};
use bronzectl::output::{self, Format, NodeResult, Output};
use bronzectl::plugins::{self, PluginsCommand};
use clap::{Parser, Subcommand, ValueEnum};
use std::path::PathBuf;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::Duration;

/// Manage Bronze nodes through their API.
#[derive(Debug, Parser)]
#[command(name = "bronzectl", version)]
struct Cli {
    /// Client config file.
    #[arg(long, global = true, env = "BRONZECONFIG")]
    bronzeconfig: Option<PathBuf>,
    /// Context to use instead of the config's current one.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Nodes to talk to, host[:port], comma-separated (default port 50000).
    #[arg(short = 'n', long = "nodes", global = true, value_delimiter = ',')]
    nodes: Vec<String>,
    /// Output format: table, json or yaml (for `config new` and `plugins keygen`: the file to write).
    #[arg(short = 'o', long = "output", global = true, value_name = "FORMAT")]
    output: Option<String>,
    /// Maintenance mode: no client certificate; pin the server with --cert-fingerprint.
    #[arg(long, global = true)]
    insecure: bool,
    /// SHA-256 SPKI fingerprint the server certificate must have (with --insecure).
    #[arg(long, global = true)]
    cert_fingerprint: Option<String>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Generate configs.
    Gen {
        #[command(subcommand)]
        what: GenCommand,
    },
    /// Client config: new credentials, contexts.
    Config {
        #[command(subcommand)]
        what: ConfigCommand,
    },
    /// Apply a machine config.
    ApplyConfig {
        /// The machine config file.
        #[arg(short = 'f', long = "file")]
        file: PathBuf,
        #[arg(long, value_enum, default_value = "auto")]
        mode: ApplyModeArg,
        /// Rollback delay for --mode try, e.g. 30s or 2m.
        #[arg(long, value_parser = parse_duration)]
        timeout: Option<Duration>,
        /// Validate and show the diff; change nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Read resources: `get TYPE [ID] [-w]`.
    Get {
        /// Resource type, e.g. machinestatus, machineconfig, auditevents, healthchecks.
        #[arg(value_name = "TYPE")]
        type_name: String,
        id: Option<String>,
        /// Keep watching and print changes.
        #[arg(short = 'w', long)]
        watch: bool,
    },
    /// Show bronzed's version.
    Version,
    /// Show audit events.
    Events {
        /// How many of the latest events to show.
        #[arg(long, default_value_t = 20)]
        tail: i32,
        /// Keep the stream open and print new events.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Reboot the nodes.
    Reboot,
    /// Power the nodes off.
    Shutdown,
    /// gRPC health of each node.
    Health,
    /// Supervised services.
    Services,
    /// Start, stop or restart a service.
    Service {
        name: String,
        #[arg(value_parser = ["start", "stop", "restart"])]
        action: String,
    },
    /// A service's output.
    Logs {
        service: String,
        /// Keep printing new lines.
        #[arg(short = 'f', long)]
        follow: bool,
        /// How many of the latest lines to show (all by default).
        #[arg(long)]
        tail: Option<i32>,
    },
    /// The kernel log.
    Dmesg {
        /// Keep printing new records.
        #[arg(short = 'f', long)]
        follow: bool,
    },
    /// Time sync status, or a one-shot check against a server.
    Time {
        /// Query this NTP server (host[:port]) once from the node; changes nothing.
        #[arg(long, value_name = "SERVER")]
        check: Option<String>,
    },
    /// WebAssembly plugins: install, list, inspect, run, remove; sign bundles.
    Plugins {
        #[command(subcommand)]
        what: PluginsCommand,
    },
    /// The node's network: `network plan` previews it (`get links|addresses|routes|networkspec|dhcpleases` show it).
    Network {
        #[command(subcommand)]
        what: NetworkCommand,
    },
    /// The cloud or platform the node runs on (`get platformdetection` and
    /// `get platformmetadata` show what it found).
    Platform {
        #[command(subcommand)]
        what: PlatformCommand,
    },
}

#[derive(Debug, Subcommand)]
enum PlatformCommand {
    /// Detect the platform and fetch its metadata again now (operator).
    Refresh,
}

#[derive(Debug, Subcommand)]
enum GenCommand {
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
enum ConfigCommand {
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
        // The file to write comes from the global --output.
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
enum KeyTypeArg {
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

#[derive(Debug, Clone, Copy, ValueEnum)]
enum ApplyModeArg {
    Auto,
    NoReboot,
    Staged,
    Try,
}

fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}: expected a duration like 30s, 5m or 24h"))
}

/// Nodes and credentials for a remote command.
struct Target {
    nodes: Vec<String>,
    auth: Auth,
    context_name: String,
}

impl Cli {
    fn config_path(&self) -> PathBuf {
        self.bronzeconfig.clone().unwrap_or_else(clientconfig::default_path)
    }

    fn target(&self) -> anyhow::Result<Target> {
        if self.cert_fingerprint.is_some() && !self.insecure {
            bail!("--cert-fingerprint only applies with --insecure");
        }
        let nodes = self.nodes.iter().map(|n| connect::normalize(n)).collect::<Result<Vec<_>, _>>()?;
        if self.insecure {
            if nodes.is_empty() {
                bail!("--insecure needs the nodes: pass -n host[:port]");
            }
            let fingerprint = self.cert_fingerprint.as_deref().map(bronze_pki::parse_fingerprint).transpose()?;
            return Ok(Target { nodes, auth: Auth::Insecure { fingerprint }, context_name: String::new() });
        }
        let path = self.config_path();
        let config = ClientConfig::load(&path)?;
        let (name, ctx) = config.context(self.context.as_deref(), &path)?;
        let nodes = if nodes.is_empty() { ctx.nodes.clone() } else { nodes };
        if nodes.is_empty() {
            bail!("no nodes: pass -n or add nodes to context {name:?}");
        }
        let auth = Auth::Mtls { ca: ctx.ca.clone(), crt: ctx.crt.clone(), key: ctx.key.clone() };
        Ok(Target { nodes, auth, context_name: name.to_string() })
    }
}

fn print(format: Format, columns: &[&str], results: &[NodeResult]) -> ExitCode {
    print!("{}", output::render(format, columns, results));
    for r in results {
        if let Err(e) = &r.outcome {
            eprintln!("{}", output::error_line(&r.node, e));
        }
    }
    if output::all_ok(results) { ExitCode::SUCCESS } else { ExitCode::FAILURE }
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    match run(&cli).await {
        Ok(code) => code,
        Err(e) => {
            // It can quote a node's answer or a bundle's manifest.
            eprintln!("error: {}", bronze_bundle::text::printable(&format!("{e:#}")));
            ExitCode::FAILURE
        }
    }
}

/// The global `--output` as a format.
fn format(cli: &Cli) -> anyhow::Result<Format> {
    // These take a file path in --output.
    if matches!(
        cli.command,
        Command::Config { what: ConfigCommand::New { .. } } | Command::Plugins { what: PluginsCommand::Keygen }
    ) {
        return Ok(Format::Table);
    }
    match cli.output.as_deref() {
        None | Some("table") => Ok(Format::Table),
        Some("json") => Ok(Format::Json),
        Some("yaml") => Ok(Format::Yaml),
        Some(other) => bail!("invalid --output {other:?}: expected table, json or yaml"),
    }
}

async fn run(cli: &Cli) -> anyhow::Result<ExitCode> {
    let format = format(cli)?;
    match &cli.command {
        Command::Gen { what: GenCommand::Config { name, endpoint, output_dir, time_servers, force, key_type } } => {
            let generated =
                bronzectl::genconfig::generate(name, endpoint, time_servers, output_dir, *force, (*key_type).into())?;
            println!("wrote {}", generated.node_config.display());
            println!("wrote {}", generated.client_config.display());
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { what: ConfigCommand::Contexts } => {
            let path = cli.config_path();
            let config = ClientConfig::load(&path)?;
            println!("CURRENT   NAME   NODES");
            for (name, ctx) in &config.contexts {
                let mark = if *name == config.context { "*" } else { "" };
                println!("{mark:<9} {name}   {}", ctx.nodes.join(","));
            }
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { what: ConfigCommand::UseContext { name } } => {
            let path = cli.config_path();
            let mut config = ClientConfig::load(&path)?;
            config.context(Some(name), &path)?;
            config.context = name.clone();
            config.save(&path)?;
            println!("current context is now {name:?}");
            Ok(ExitCode::SUCCESS)
        }
        Command::Config { what: ConfigCommand::New { roles, ttl, key_type } } => {
            let output = cli.output.as_deref().map(PathBuf::from);
            let output = output.ok_or_else(|| anyhow::anyhow!("config new needs --output PATH"))?;
            config_new(cli, roles, *ttl, (*key_type).into(), &output).await
        }
        Command::ApplyConfig { file, mode, timeout, dry_run } => {
            let data = std::fs::read(file).with_context(|| format!("cannot read {}", file.display()))?;
            let mode = match mode {
                ApplyModeArg::Auto => pb::ApplyMode::Auto,
                ApplyModeArg::NoReboot => pb::ApplyMode::NoReboot,
                ApplyModeArg::Staged => pb::ApplyMode::Staged,
                ApplyModeArg::Try => pb::ApplyMode::Try,
            };
            if timeout.is_some() && mode != pb::ApplyMode::Try {
                bail!("--timeout only applies with --mode try");
            }
            let target = cli.target()?;
            let results = fan_out(&target.nodes, &target.auth, |c| {
                commands::apply_config(c, data.clone(), mode, *timeout, *dry_run)
            })
            .await;
            Ok(print(format, commands::APPLY_COLUMNS, &results))
        }
        Command::Get { type_name, id, watch } => {
            let target = cli.target()?;
            if *watch {
                return Ok(bronzectl::stream::watch(&target.nodes, &target.auth, type_name, id.clone(), format).await);
            }
            let results =
                fan_out(&target.nodes, &target.auth, |c| commands::get(c, type_name.clone(), id.clone())).await;
            Ok(print(format, commands::RESOURCE_COLUMNS, &results))
        }
        Command::Version => {
            let target = cli.target()?;
            Ok(print(format, commands::VERSION_COLUMNS, &fan_out(&target.nodes, &target.auth, commands::version).await))
        }
        Command::Events { tail, follow } => {
            let target = cli.target()?;
            if *follow {
                return Ok(bronzectl::stream::follow_events(&target.nodes, &target.auth, *tail, format).await);
            }
            let results = fan_out(&target.nodes, &target.auth, |c| commands::events(c, *tail)).await;
            Ok(print(format, commands::EVENT_COLUMNS, &results))
        }
        Command::Reboot => {
            let target = cli.target()?;
            Ok(print(format, commands::MESSAGE_COLUMNS, &fan_out(&target.nodes, &target.auth, commands::reboot).await))
        }
        Command::Shutdown => {
            let target = cli.target()?;
            Ok(print(
                format,
                commands::MESSAGE_COLUMNS,
                &fan_out(&target.nodes, &target.auth, commands::shutdown).await,
            ))
        }
        Command::Services => {
            let target = cli.target()?;
            Ok(print(
                format,
                commands::SERVICE_COLUMNS,
                &fan_out(&target.nodes, &target.auth, commands::services).await,
            ))
        }
        Command::Service { name, action } => {
            let target = cli.target()?;
            let results =
                fan_out(&target.nodes, &target.auth, |c| commands::service_action(c, name.clone(), action)).await;
            Ok(print(format, commands::MESSAGE_COLUMNS, &results))
        }
        Command::Logs { service, follow, tail } => {
            let target = cli.target()?;
            let tail = tail.unwrap_or(-1);
            if *follow {
                return Ok(bronzectl::stream::follow_logs(&target.nodes, &target.auth, service, tail, format).await);
            }
            let results = fan_out(&target.nodes, &target.auth, |c| commands::logs(c, service.clone(), tail)).await;
            Ok(print(format, commands::LOG_COLUMNS, &results))
        }
        Command::Dmesg { follow } => {
            let target = cli.target()?;
            if *follow {
                return Ok(bronzectl::stream::follow_dmesg(&target.nodes, &target.auth, format).await);
            }
            Ok(print(format, commands::DMESG_COLUMNS, &fan_out(&target.nodes, &target.auth, commands::dmesg).await))
        }
        Command::Time { check } => {
            let target = cli.target()?;
            let results = match check {
                Some(server) => fan_out(&target.nodes, &target.auth, |c| commands::time_check(c, server.clone())).await,
                None => fan_out(&target.nodes, &target.auth, commands::time).await,
            };
            let columns = if check.is_some() { commands::TIME_CHECK_COLUMNS } else { commands::TIME_COLUMNS };
            Ok(print(format, columns, &results))
        }
        Command::Health => {
            let target = cli.target()?;
            Ok(print(format, commands::HEALTH_COLUMNS, &fan_out(&target.nodes, &target.auth, commands::health).await))
        }
        Command::Plugins { what } => run_plugins(cli, what, format).await,
        Command::Network { what: NetworkCommand::Plan } => {
            let target = cli.target()?;
            Ok(print(format, network::PLAN_COLUMNS, &fan_out(&target.nodes, &target.auth, network::plan).await))
        }
        Command::Platform { what: PlatformCommand::Refresh } => {
            let target = cli.target()?;
            let results = fan_out(&target.nodes, &target.auth, commands::platform_refresh).await;
            Ok(print(format, commands::PLATFORM_REFRESH_COLUMNS, &results))
        }
    }
}

/// `plugins ...`.
async fn run_plugins(cli: &Cli, what: &PluginsCommand, format: Format) -> anyhow::Result<ExitCode> {
    match what {
        PluginsCommand::Keygen => {
            let path = cli.output.as_deref().map(PathBuf::from);
            let path = path.ok_or_else(|| anyhow::anyhow!("plugins keygen needs --output PATH"))?;
            let made = plugins::keygen(&path)?;
            println!("wrote private key {} (mode 0600; keep it secret)", made.private_key.display());
            println!("wrote public key {}", made.public_key_file.display());
            println!("public key: {}", made.public_key);
            println!("trust it on nodes by adding it to machine.plugins.trustedKeys");
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Sign { key, dir } => {
            let signed = plugins::sign_dir(key, dir)?;
            println!("wrote {}", signed.signature_file.display());
            println!("public key: {}", signed.public_key);
            Ok(ExitCode::SUCCESS)
        }
        PluginsCommand::Install { bundle, sign_key } => {
            let upload = Arc::new(plugins::prepare_install(bundle, sign_key.as_deref())?);
            let target = cli.target()?;
            let progress = plugins::UploadProgress::new(&target.nodes, upload.wasm.len() as u64);
            let results = fan_out(&target.nodes, &target.auth, |c| {
                let bar = progress.bar(&c.node);
                plugins::install(c, upload.clone(), bar)
            })
            .await;
            progress.clear();
            Ok(print(format, plugins::INSTALL_COLUMNS, &results))
        }
        PluginsCommand::List => {
            let target = cli.target()?;
            Ok(print(format, plugins::LIST_COLUMNS, &fan_out(&target.nodes, &target.auth, plugins::list).await))
        }
        PluginsCommand::Status { id } => {
            let target = cli.target()?;
            let results = fan_out(&target.nodes, &target.auth, |c| plugins::status(c, id.clone())).await;
            Ok(print(format, plugins::DETAIL_COLUMNS, &results))
        }
        PluginsCommand::Remove { id } => {
            let target = cli.target()?;
            let results = fan_out(&target.nodes, &target.auth, |c| plugins::remove(c, id.clone())).await;
            Ok(print(format, plugins::REMOVE_COLUMNS, &results))
        }
        PluginsCommand::Run { id } => {
            let target = cli.target()?;
            let results = fan_out(&target.nodes, &target.auth, |c| plugins::run(c, id.clone())).await;
            let code = print(format, plugins::DETAIL_COLUMNS, &results);
            Ok(if plugins::run_failed(&results) { ExitCode::FAILURE } else { code })
        }
    }
}

/// `config new`: ask the first node for a client certificate and write a
/// client config around it.
async fn config_new(
    cli: &Cli,
    roles: &[String],
    ttl: Option<Duration>,
    key_type: bronze_pki::KeyType,
    output: &std::path::Path,
) -> anyhow::Result<ExitCode> {
    let target = cli.target()?;
    let node = &target.nodes[0];
    let client = NodeClient::connect(node, &target.auth).await.map_err(|e| anyhow::anyhow!("node {node}: {e}"))?;
    let minted = commands::generate_client(client, roles.to_vec(), ttl, key_type)
        .await
        .map_err(|e| anyhow::anyhow!("node {node}: {e}"))?;
    let name = if target.context_name.is_empty() { "bronze".to_string() } else { target.context_name.clone() };
    let ctx = clientconfig::Context { nodes: target.nodes.clone(), ca: minted.ca, crt: minted.crt, key: minted.key };
    let config = ClientConfig { context: name.clone(), contexts: [(name, ctx)].into() };
    config.save(output)?;
    let fields = serde_json::json!({ "roles": roles, "path": output.display().to_string() });
    let out = Output::single(fields.as_object().cloned().unwrap_or_default(), commands::CLIENT_CONFIG_COLUMNS);
    Ok(print(Format::Table, commands::CLIENT_CONFIG_COLUMNS, &[NodeResult { node: node.clone(), outcome: Ok(out) }]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use clap::CommandFactory;

    fn parse(args: &[&str]) -> Cli {
        let argv = std::iter::once("bronzectl").chain(args.iter().copied());
        Cli::try_parse_from(argv).unwrap_or_else(|e| panic!("{args:?}: {e}"))
    }

    fn refuse(args: &[&str]) -> String {
        let argv = std::iter::once("bronzectl").chain(args.iter().copied());
        Cli::try_parse_from(argv).expect_err("should not parse").to_string()
    }

    #[test]
    fn the_command_line_definition_is_consistent() {
        Cli::command().debug_assert();
    }

    #[test]
    fn plugins_install_fans_out_with_a_format() {
        let cli = parse(&["plugins", "install", "./health-tcp", "--sign-key", "k.pem", "-n", "a,b:1", "-o", "json"]);
        let Command::Plugins { what: PluginsCommand::Install { bundle, sign_key } } = &cli.command else {
            panic!("{cli:?}")
        };
        assert_eq!(bundle, &PathBuf::from("./health-tcp"));
        assert_eq!(sign_key.as_deref(), Some(std::path::Path::new("k.pem")));
        assert_eq!(cli.nodes, ["a", "b:1"]);
        assert_eq!(format(&cli).unwrap(), Format::Json);
        let cli = parse(&["-o", "yaml", "plugins", "install", "b.tar"]);
        assert!(matches!(&cli.command, Command::Plugins { what: PluginsCommand::Install { sign_key: None, .. } }));
        assert_eq!(format(&cli).unwrap(), Format::Yaml);
    }

    #[test]
    fn plugins_node_commands_take_an_id() {
        for (sub, want) in [("status", "st"), ("remove", "rm"), ("run", "run")] {
            let cli = parse(&["plugins", sub, want]);
            let id = match &cli.command {
                Command::Plugins { what: PluginsCommand::Status { id } }
                | Command::Plugins { what: PluginsCommand::Remove { id } }
                | Command::Plugins { what: PluginsCommand::Run { id } } => id,
                other => panic!("{other:?}"),
            };
            assert_eq!(id, want);
            assert!(refuse(&["plugins", sub]).contains("<ID>"), "{sub}");
        }
        assert!(matches!(parse(&["plugins", "list"]).command, Command::Plugins { what: PluginsCommand::List }));
    }

    #[test]
    fn plugins_keygen_takes_output_as_a_path() {
        let cli = parse(&["plugins", "keygen", "--output", "keys/signing.pem"]);
        assert!(matches!(cli.command, Command::Plugins { what: PluginsCommand::Keygen }));
        assert_eq!(cli.output.as_deref(), Some("keys/signing.pem"));
        // Not a format, so it must not be refused as one.
        assert_eq!(format(&cli).unwrap(), Format::Table);
    }

    #[test]
    fn plugins_sign_needs_a_key_and_a_dir() {
        let cli = parse(&["plugins", "sign", "--key", "k.pem", "bundle"]);
        let Command::Plugins { what: PluginsCommand::Sign { key, dir } } = &cli.command else { panic!("{cli:?}") };
        assert_eq!((key.as_path(), dir.as_path()), (std::path::Path::new("k.pem"), std::path::Path::new("bundle")));
        assert!(refuse(&["plugins", "sign", "bundle"]).contains("--key <KEY>"));
        assert!(refuse(&["plugins", "sign", "--key", "k.pem"]).contains("<DIR>"));
    }

    #[test]
    fn get_healthchecks_parses_with_watch() {
        let cli = parse(&["get", "healthchecks", "-w", "-n", "n1"]);
        let Command::Get { type_name, id, watch } = &cli.command else { panic!("{cli:?}") };
        assert_eq!((type_name.as_str(), id.as_deref(), *watch), ("healthchecks", None, true));
        let cli = parse(&["get", "healthcheck", "health-tcp", "-o", "json"]);
        assert!(matches!(&cli.command, Command::Get { id: Some(id), watch: false, .. } if id == "health-tcp"));
    }

    #[test]
    fn network_plan_parses_with_nodes_and_a_format() {
        let cli = parse(&["network", "plan", "-n", "a,b:1", "-o", "yaml"]);
        assert!(matches!(cli.command, Command::Network { what: NetworkCommand::Plan }));
        assert_eq!(cli.nodes, ["a", "b:1"]);
        assert_eq!(format(&cli).unwrap(), Format::Yaml);
        assert!(refuse(&["network"]).contains("plan"));
    }

    #[test]
    fn key_type_defaults_to_ecdsa_p256() {
        let cli = parse(&["gen", "config", "c", "--endpoint", "127.0.0.1"]);
        assert!(matches!(
            cli.command,
            Command::Gen { what: GenCommand::Config { key_type: KeyTypeArg::EcdsaP256, .. } }
        ));
        let cli = parse(&["gen", "config", "c", "--endpoint", "127.0.0.1", "--key-type", "ed25519"]);
        assert!(matches!(cli.command, Command::Gen { what: GenCommand::Config { key_type: KeyTypeArg::Ed25519, .. } }));
        let cli = parse(&["config", "new", "--roles", "os:reader", "-o", "r.yaml"]);
        assert!(matches!(
            cli.command,
            Command::Config { what: ConfigCommand::New { key_type: KeyTypeArg::EcdsaP256, .. } }
        ));
        let cli = parse(&["config", "new", "--roles", "os:reader", "--key-type", "ed25519", "-o", "r.yaml"]);
        assert!(matches!(
            cli.command,
            Command::Config { what: ConfigCommand::New { key_type: KeyTypeArg::Ed25519, .. } }
        ));
        let err = refuse(&["gen", "config", "c", "--endpoint", "x", "--key-type", "rsa"]);
        assert!(err.contains("invalid value 'rsa' for '--key-type <KEY_TYPE>'"), "{err}");
        assert!(err.contains("ecdsa-p256, ed25519"), "{err}");
        // The CLI names are the library's names.
        for arg in [KeyTypeArg::EcdsaP256, KeyTypeArg::Ed25519] {
            let name = arg.to_possible_value().expect("not skipped").get_name().to_string();
            assert_eq!(bronze_pki::KeyType::from(arg).as_str(), name);
        }
    }

    #[test]
    fn invalid_formats_are_refused_for_node_commands() {
        let err = format(&parse(&["plugins", "list", "-o", "xml"])).unwrap_err().to_string();
        assert_eq!(err, "invalid --output \"xml\": expected table, json or yaml");
    }
}
