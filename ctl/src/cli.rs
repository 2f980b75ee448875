//! The command line in one place: the top-level [`Cli`], the flags every
//! command shares ([`Globals`]) and the [`Command`] list with its one
//! dispatch. Each command group's own arguments and its work live in its
//! module (`machine`, `apply`, `resources`, `events`, `services`, `time`,
//! `plugins`, `network`, `platform`, `config`); this file only names them.
//!
//! A remote command runs through [`Globals::each_node`]: connect to every
//! node (`-n` or the context's), run one call per node in parallel, render
//! the rows as `-o table|json|yaml`, exit 0 only if every node succeeded.

use crate::client::{NodeClient, fan_out};
use crate::clientconfig::{self, ClientConfig};
use crate::connect::{self, Auth};
use crate::output::{self, Format, NodeResult, Output};
use crate::{apply, config, events, machine, network, platform, plugins, resources, services, time};
use anyhow::bail;
use clap::{Args, Parser, Subcommand};
use std::future::Future;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

/// Manage Bronze nodes through their API.
#[derive(Debug, Parser)]
#[command(name = "bronzectl", version)]
pub struct Cli {
    #[command(flatten)]
    pub globals: Globals,
    #[command(subcommand)]
    pub command: Command,
}

/// Flags every command takes: where the nodes are, how to authenticate,
/// how to show the answers.
#[derive(Debug, Args)]
pub struct Globals {
    /// Client config file.
    #[arg(long, global = true, env = "BRONZECONFIG")]
    pub bronzeconfig: Option<PathBuf>,
    /// Context to use instead of the config's current one.
    #[arg(long, global = true)]
    pub context: Option<String>,
    /// Nodes to talk to, host[:port], comma-separated (default port 50000).
    #[arg(short = 'n', long = "nodes", global = true, value_delimiter = ',')]
    pub nodes: Vec<String>,
    /// Output format: table (default), json (one object per node per line) or yaml.
    #[arg(short = 'o', long = "output", global = true, value_name = "FORMAT", value_parser = parse_format)]
    pub output: Option<Format>,
    /// Maintenance mode: no client certificate; pin the server with --cert-fingerprint.
    #[arg(long, global = true)]
    pub insecure: bool,
    /// SHA-256 SPKI fingerprint the server certificate must have (with --insecure).
    #[arg(long, global = true)]
    pub cert_fingerprint: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// Generate configs.
    Gen {
        #[command(subcommand)]
        what: config::GenCommand,
    },
    /// Client config: new credentials, contexts.
    Config {
        #[command(subcommand)]
        what: config::ConfigCommand,
    },
    /// Apply a machine config.
    ApplyConfig(apply::ApplyArgs),
    /// Read resources: `get TYPE [ID] [-w]`.
    Get(resources::GetArgs),
    /// Show bronzed's version.
    Version,
    /// Show audit events.
    Events(events::EventsArgs),
    /// Reboot the nodes.
    Reboot,
    /// Power the nodes off.
    Shutdown,
    /// gRPC health of each node.
    Health,
    /// Supervised services.
    Services,
    /// Start, stop or restart a service.
    Service(services::ServiceArgs),
    /// A service's output.
    Logs(services::LogsArgs),
    /// The kernel log.
    Dmesg(services::DmesgArgs),
    /// Time sync status, or a one-shot check against a server.
    Time(time::TimeArgs),
    /// WebAssembly plugins: install, list, inspect, run, remove; sign bundles.
    Plugins {
        #[command(subcommand)]
        what: plugins::PluginsCommand,
    },
    /// The node's network: `network plan` previews it (`get links|addresses|routes|networkspec|dhcpleases` show it).
    Network {
        #[command(subcommand)]
        what: network::NetworkCommand,
    },
    /// The cloud or platform the node runs on (`get platformdetection` and
    /// `get platformmetadata` show what it found).
    Platform {
        #[command(subcommand)]
        what: platform::PlatformCommand,
    },
    /// Read a file under /proc, /sys, /var/log, /var/lib/bronze or /etc (secrets never; the last two: operator).
    Read(crate::files::ReadArgs),
    /// List a directory under the allowed roots (-r: recursive, symlinks not followed).
    Ls(crate::files::LsArgs),
    /// Capture packets on a link into a pcap file (admin; --bpf is compiled here with tcpdump).
    Pcap(crate::pcap::PcapArgs),
    /// TCP and UDP sockets with their processes (--listening, --tcp/--udp, -4/-6).
    Netstat(crate::netstat::NetstatArgs),
    /// Processes with the service or plugin each belongs to; --watch refreshes like top.
    #[command(visible_alias = "ps")]
    Processes(crate::processes::ProcessesArgs),
    /// CPU and memory of bronzed, each service and each plugin instance.
    Stats(crate::processes::StatsArgs),
    /// The mount table with each filesystem's size and use.
    Mounts,
    /// Block devices: size, model, serial, partition table, filesystem labels.
    Disks,
    /// Directory sizes under the state dir, /var/lib/bronze, /var/log, /run or /tmp.
    Usage(crate::storage::UsageArgs),
    /// Write a support bundle (.tar.gz: status, resources, logs, dmesg, ...; operator).
    Support(crate::support::SupportArgs),
    /// Write a signed system to the inactive boot slot and boot it; it falls back if it does not get healthy (admin).
    Upgrade(crate::upgrade::UpgradeArgs),
    /// Make a signed upgrade bundle from a kernel and an initramfs.
    UpgradePack(crate::upgrade::PackArgs),
    /// Boot the other slot, which must hold a system that booted fine (admin).
    Rollback(crate::upgrade::RollbackArgs),
    /// Wipe the state partition and reboot into maintenance mode (admin).
    Reset(crate::upgrade::ResetArgs),
}

impl Command {
    /// Runs the command; the exit code says whether every node succeeded.
    pub async fn run(&self, g: &Globals) -> anyhow::Result<ExitCode> {
        match self {
            Command::Gen { what } => config::run_gen(what),
            Command::Config { what } => config::run(what, g).await,
            Command::ApplyConfig(args) => apply::run(args, g).await,
            Command::Get(args) => resources::run(args, g).await,
            Command::Version => g.each_node(machine::VERSION_COLUMNS, machine::version).await,
            Command::Events(args) => events::run(args, g).await,
            Command::Reboot => g.each_node(machine::MESSAGE_COLUMNS, machine::reboot).await,
            Command::Shutdown => g.each_node(machine::MESSAGE_COLUMNS, machine::shutdown).await,
            Command::Health => g.each_node(machine::HEALTH_COLUMNS, machine::health).await,
            Command::Services => g.each_node(services::SERVICE_COLUMNS, services::services).await,
            Command::Service(args) => services::run_action(args, g).await,
            Command::Logs(args) => services::run_logs(args, g).await,
            Command::Dmesg(args) => services::run_dmesg(args, g).await,
            Command::Time(args) => time::run(args, g).await,
            Command::Plugins { what } => plugins::run(what, g).await,
            Command::Network { what } => network::run(what, g).await,
            Command::Platform { what } => platform::run(what, g).await,
            Command::Read(args) => crate::files::run_read(args, g).await,
            Command::Ls(args) => crate::files::run_ls(args, g).await,
            Command::Pcap(args) => crate::pcap::run(args, g).await,
            Command::Netstat(args) => crate::netstat::run(args, g).await,
            Command::Processes(args) => crate::processes::run(args, g).await,
            Command::Stats(args) => crate::processes::run_stats(args, g).await,
            Command::Mounts => crate::storage::run_mounts(g).await,
            Command::Disks => crate::storage::run_disks(g).await,
            Command::Usage(args) => crate::storage::run_usage(args, g).await,
            Command::Support(args) => crate::support::run(args, g).await,
            Command::Upgrade(args) => crate::upgrade::run(args, g).await,
            Command::UpgradePack(args) => crate::upgrade::run_pack(args),
            Command::Rollback(args) => crate::upgrade::run_rollback(args, g).await,
            Command::Reset(args) => crate::upgrade::run_reset(args, g).await,
        }
    }
}

/// Nodes and credentials for a remote command.
#[derive(Debug, Clone)]
pub struct Target {
    pub nodes: Vec<String>,
    pub auth: Auth,
    /// The client config context used; empty with --insecure.
    pub context_name: String,
}

impl Globals {
    /// The `-o` format (table by default).
    pub fn format(&self) -> Format {
        self.output.unwrap_or(Format::Table)
    }

    pub fn config_path(&self) -> PathBuf {
        self.bronzeconfig.clone().unwrap_or_else(clientconfig::default_path)
    }

    /// The nodes and credentials from the flags and the client config.
    pub fn target(&self) -> anyhow::Result<Target> {
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
        // The context's nodes are written like -n's and shown the same way.
        let nodes = match nodes.is_empty() {
            true => ctx.nodes.iter().map(|n| connect::normalize(n)).collect::<Result<Vec<_>, _>>()?,
            false => nodes,
        };
        if nodes.is_empty() {
            bail!("no nodes: pass -n or add nodes to context {name:?}");
        }
        let auth = Auth::Mtls { ca: ctx.ca.clone(), crt: ctx.crt.clone(), key: ctx.key.clone() };
        Ok(Target { nodes, auth, context_name: name.to_string() })
    }

    /// Runs `op` on every node in parallel; results keep the nodes' order.
    pub async fn fan_out<F, Fut>(&self, op: F) -> anyhow::Result<Vec<NodeResult>>
    where
        F: Fn(NodeClient) -> Fut,
        Fut: Future<Output = Result<Output, String>>,
    {
        let target = self.target()?;
        Ok(fan_out(&target.nodes, &target.auth, op).await)
    }

    /// The shape of every remote command: run `op` on every node, print
    /// its rows under `columns` in the `-o` format, exit 0 only if every
    /// node succeeded.
    pub async fn each_node<F, Fut>(&self, columns: &[&str], op: F) -> anyhow::Result<ExitCode>
    where
        F: Fn(NodeClient) -> Fut,
        Fut: Future<Output = Result<Output, String>>,
    {
        let results = self.fan_out(op).await?;
        Ok(output::print(self.format(), columns, &results))
    }
}

/// `-o`: a format. Until issue 13 `config new` and `plugins keygen` took the
/// file to write here; that is `--output-file` now.
fn parse_format(s: &str) -> Result<Format, String> {
    match s {
        "table" => Ok(Format::Table),
        "json" => Ok(Format::Json),
        "yaml" => Ok(Format::Yaml),
        _ => Err("expected table, json or yaml (a file to write is --output-file PATH)".into()),
    }
}

/// `30s`, `5m`, `24h`.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    humantime::parse_duration(s).map_err(|e| format!("{e}: expected a duration like 30s, 5m or 24h"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::config::{ConfigCommand, GenCommand, KeyTypeArg};
    use crate::network::NetworkCommand;
    use crate::plugins::PluginsCommand;
    use crate::services::ServiceAction;
    use clap::{CommandFactory, ValueEnum};

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
        assert_eq!(cli.globals.nodes, ["a", "b:1"]);
        assert_eq!(cli.globals.format(), Format::Json);
        let cli = parse(&["-o", "yaml", "plugins", "install", "b.tar"]);
        assert!(matches!(&cli.command, Command::Plugins { what: PluginsCommand::Install { sign_key: None, .. } }));
        assert_eq!(cli.globals.format(), Format::Yaml);
        assert_eq!(parse(&["plugins", "list"]).globals.format(), Format::Table);
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

    /// A file to write is `--output-file` (or `--out`); `-o` stays a format,
    /// so `-o json` works with these commands too.
    #[test]
    fn files_to_write_are_output_file_and_o_is_a_format() {
        for flag in ["--output-file", "--out"] {
            let cli = parse(&["plugins", "keygen", flag, "keys/signing.pem"]);
            let Command::Plugins { what: PluginsCommand::Keygen { output_file } } = &cli.command else {
                panic!("{cli:?}")
            };
            assert_eq!(output_file, &PathBuf::from("keys/signing.pem"));
            let cli = parse(&["config", "new", "--roles", "os:reader", flag, "r.yaml", "-o", "json"]);
            let Command::Config { what: ConfigCommand::New { output_file, .. } } = &cli.command else {
                panic!("{cli:?}")
            };
            assert_eq!(output_file, &PathBuf::from("r.yaml"));
            assert_eq!(cli.globals.format(), Format::Json);
        }
        assert!(refuse(&["plugins", "keygen"]).contains("--output-file <PATH>"));
        assert!(refuse(&["config", "new", "--roles", "os:reader"]).contains("--output-file <PATH>"));
        // The old spelling is refused with the new one named.
        let err = refuse(&["config", "new", "--roles", "os:reader", "-o", "r.yaml"]);
        assert!(err.contains("invalid value 'r.yaml' for '--output <FORMAT>'"), "{err}");
        assert!(err.contains("expected table, json or yaml (a file to write is --output-file PATH)"), "{err}");
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
    fn reset_is_graceful_unless_told_otherwise() {
        let graceful = |args: &[&str]| match parse(args).command {
            Command::Reset(r) => (r.wipe, r.graceful),
            other => panic!("{other:?}"),
        };
        assert_eq!(graceful(&["reset"]), ("state".into(), true));
        assert_eq!(graceful(&["reset", "--graceful"]), ("state".into(), true));
        assert_eq!(graceful(&["reset", "--graceful=false", "--wipe", "all"]), ("all".into(), false));
        assert_eq!(graceful(&["reset", "--graceful", "false"]), ("state".into(), false));
        assert!(refuse(&["reset", "--graceful=maybe"]).contains("invalid value 'maybe'"));
    }

    #[test]
    fn get_healthchecks_parses_with_watch() {
        let cli = parse(&["get", "healthchecks", "-w", "-n", "n1"]);
        let Command::Get(args) = &cli.command else { panic!("{cli:?}") };
        assert_eq!((args.type_name.as_str(), args.id.as_deref(), args.watch), ("healthchecks", None, true));
        let cli = parse(&["get", "healthcheck", "health-tcp", "-o", "json"]);
        assert!(matches!(&cli.command, Command::Get(a) if a.id.as_deref() == Some("health-tcp") && !a.watch));
    }

    #[test]
    fn network_plan_parses_with_nodes_and_a_format() {
        let cli = parse(&["network", "plan", "-n", "a,b:1", "-o", "yaml"]);
        assert!(matches!(cli.command, Command::Network { what: NetworkCommand::Plan }));
        assert_eq!(cli.globals.nodes, ["a", "b:1"]);
        assert_eq!(cli.globals.format(), Format::Yaml);
        assert!(refuse(&["network"]).contains("plan"));
    }

    #[test]
    fn a_service_action_is_one_of_three() {
        for (word, want) in
            [("start", ServiceAction::Start), ("stop", ServiceAction::Stop), ("restart", ServiceAction::Restart)]
        {
            let cli = parse(&["service", "ntpd", word]);
            let Command::Service(args) = &cli.command else { panic!("{cli:?}") };
            assert_eq!((args.name.as_str(), args.action), ("ntpd", want));
        }
        let err = refuse(&["service", "ntpd", "reload"]);
        assert!(err.contains("invalid value 'reload' for '<ACTION>'"), "{err}");
        assert!(err.contains("start, stop, restart"), "{err}");
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
        let cli = parse(&["config", "new", "--roles", "os:reader", "--output-file", "r.yaml"]);
        assert!(matches!(
            cli.command,
            Command::Config { what: ConfigCommand::New { key_type: KeyTypeArg::EcdsaP256, .. } }
        ));
        let cli = parse(&["config", "new", "--roles", "os:reader", "--key-type", "ed25519", "--out", "r.yaml"]);
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
        let err = refuse(&["plugins", "list", "-o", "xml"]);
        assert!(err.contains("invalid value 'xml' for '--output <FORMAT>': expected table, json or yaml"), "{err}");
    }
}
