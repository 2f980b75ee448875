//! bronzectl as a library: the command line ([`cli`]), the client config
//! file, connecting with mTLS or a pinned maintenance certificate, fan-out
//! and output formatting, and one module per command group. The binary only
//! parses flags and calls into this; tests use the same client code.
//! docs/cli.md says how to add a command.

pub mod cli;
pub mod client;
pub mod clientconfig;
pub mod connect;
pub mod genconfig;
pub mod output;
pub mod stream;

// Command groups: their arguments, RPC calls and rows.
pub mod apply;
pub mod config;
pub mod events;
pub mod files;
pub mod machine;
pub mod netstat;
pub mod network;
pub mod pcap;
pub mod platform;
pub mod plugins;
pub mod processes;
pub mod resources;
pub mod services;
pub mod storage;
pub mod support;
pub mod time;
pub mod upgrade;
