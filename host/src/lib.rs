//! bronzed: the Bronze node host. One program that runs as PID 1 on a node
//! (or as an ordinary process for development and tests), serves the gRPC
//! API, owns the machine config and runs the controllers.
//!
//! `main.rs` only parses flags, runs [`init`]'s early boot in pid1 mode, and
//! calls [`node::run`]; everything else is a module tests call directly.

pub mod api;
pub mod boot;
pub mod capture;
pub mod cgroup;
pub mod config;
pub mod controllers;
pub mod init;
pub mod laps;
pub mod lifecycle;
pub mod logs;
pub mod metrics;
pub mod network;
pub mod node;
pub mod platform;
pub mod plugins;
pub mod procs;
pub mod release;
pub mod services;
pub mod state;
pub mod statedir;
pub mod sysinfo;
pub mod time;
