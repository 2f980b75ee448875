//! The plugin host: sandboxed WebAssembly components that get capabilities
//! only through the `bronze:host` interfaces the operator grants.
//!
//! - [`engine`]: the node's wasmtime engine (it cannot compile), epoch
//!   ticker; [`background`]: loading at a lower priority than the node's
//!   own work.
//! - [`compiler`] + [`compile_worker`] + [`cgroup`]: every compile runs in a
//!   separate process under memory and CPU limits.
//! - [`registry`] + [`artifact`]: installed bundles and the AOT cache on disk.
//! - [`capabilities`]: imports ∩ manifest ∩ grant, per-instance linkers.
//! - [`context`]: the `bronze:host` functions; [`net`]: the http/probe client.
//! - [`worlds`]: one module per plugin world behind one trait (input,
//!   output, checks, JSON); [`call`] + [`outcome`]: one sandboxed call.
//! - [`instance`]: schedule, backoff, quarantine; [`manager`]: the whole.

pub mod artifact;
pub mod background;
pub mod bindings;
pub mod call;
pub mod capabilities;
pub mod cgroup;
pub mod compile_worker;
pub mod compiler;
pub mod context;
pub mod engine;
pub mod facts;
pub mod failures;
pub mod instance;
pub mod limits;
pub mod loaded;
pub mod log;
pub mod manager;
pub mod net;
pub mod outcome;
pub mod registry;
pub mod resources;
pub mod volumes;
pub mod volumes_kernel;
pub mod worlds;

pub use manager::{PluginError, PluginManager};

/// Where the image keeps its first-party plugin bundles.
pub const IMAGE_PLUGINS_DIR: &str = "/usr/lib/bronze/plugins";
