//! The guest side of Bronze plugins: the `bronze:host` imports and the plugin
//! worlds as Rust, plus thin helpers, so a plugin author never writes WIT glue.
//!
//! A health check is a `cdylib` crate built for `wasm32-wasip2` (plain
//! `cargo build --release --target wasm32-wasip2` emits a component), with
//! `bronze-plugin-sdk = { ..., features = ["health-check"] }`:
//!
//! ```no_run
//! use bronze_plugin_sdk::{HealthCheck, Report, config};
//!
//! struct Check;
//!
//! impl HealthCheck for Check {
//!     fn check() -> Report {
//!         match config::require("name") {
//!             Ok(name) => Report::healthy(format!("hello {name}")),
//!             Err(e) => Report::unknown(e),
//!         }
//!     }
//! }
//!
//! bronze_plugin_sdk::export_health_check!(Check);
//! ```
//!
//! Every helper calls its import only when the plugin calls the helper, so
//! the built component imports only the `bronze:host` interfaces it really
//! uses; its `plugin.toml` must request exactly those.
//!
//! Each world sits behind a feature of the same name (`health-check`,
//! `metadata-provider`, `network-configurator`); a plugin enables exactly
//! its own. The reason: every world compiled in leaves a description in the
//! wasm, and `wit-component` keeps the world-level types of all of them, so
//! a health check would otherwise also import the metadata and network type
//! interfaces. (`cargo xtask plugins` builds each world's plugins in a
//! separate cargo run, since cargo unifies features within one.)
#![warn(missing_docs)]

pub mod config;
pub mod facts;
pub mod http;
pub mod log;
mod plan;
pub mod probe;
mod report;
pub mod volumes;

/// Raw bindings for the `bronze:host` imports (world
/// `bronze:host/capabilities`), generated once and shared by every world so
/// that types such as the log level are the same everywhere.
#[allow(missing_docs)]
pub mod host {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "bronze:host/capabilities",
        generate_all,
    });
}

/// The types of the `bronze:plugin` interfaces, generated once for all
/// worlds. They come from interface imports, which `wit-component` drops
/// when unused, so they cost a plugin nothing.
#[allow(missing_docs)]
pub mod types {
    wit_bindgen::generate!({
        path: "../../wit",
        inline: "
            package bronze:sdk;
            world plugin-types {
                import bronze:plugin/health@0.2.0;
                import bronze:plugin/metadata@0.2.0;
                import bronze:plugin/network@0.2.0;
            }
        ",
        generate_all,
        generate_unused_types: true,
    });
}

/// Generates one plugin world in the current module, reusing [`host`] and
/// [`types`] so that every type exists once; `$extra` maps the
/// `bronze:plugin` interfaces the world uses (`with` refuses unused entries).
#[allow(unused_macros)]
macro_rules! plugin_world {
    ($world:tt, $export:tt, $module:tt, { $($extra:tt)* }) => {
        wit_bindgen::generate!({
            path: "../../wit",
            world: $world,
            with: {
                "bronze:host/log@0.1.0": crate::host::bronze::host::log,
                "bronze:host/config@0.1.0": crate::host::bronze::host::config,
                "bronze:host/types@0.1.0": crate::host::bronze::host::types,
                "bronze:host/facts-dmi@0.1.0": crate::host::bronze::host::facts_dmi,
                "bronze:host/facts-links@0.1.0": crate::host::bronze::host::facts_links,
                "bronze:host/facts-cmdline@0.1.0": crate::host::bronze::host::facts_cmdline,
                "bronze:host/facts-time@0.1.0": crate::host::bronze::host::facts_time,
                "bronze:host/http@0.1.0": crate::host::bronze::host::http,
                "bronze:host/probe@0.1.0": crate::host::bronze::host::probe,
                "bronze:host/volumes@0.1.0": crate::host::bronze::host::volumes,
                $($extra)*
            },
            pub_export_macro: true,
            export_macro_name: $export,
            default_bindings_module: $module,
        });
    };
}

/// Raw bindings for world `bronze:plugin/health-check`.
#[cfg(feature = "health-check")]
#[allow(missing_docs)]
pub mod health {
    plugin_world!("bronze:plugin/health-check", "export_health_check", "$crate::health", {
        "bronze:plugin/health@0.2.0": crate::types::bronze::plugin::health,
    });
}

/// Raw bindings for world `bronze:plugin/metadata-provider`.
#[cfg(feature = "metadata-provider")]
#[allow(missing_docs)]
pub mod metadata {
    plugin_world!("bronze:plugin/metadata-provider", "export_metadata_provider", "$crate::metadata", {
        "bronze:plugin/metadata@0.2.0": crate::types::bronze::plugin::metadata,
    });
}

/// Raw bindings for world `bronze:plugin/network-configurator`.
#[cfg(feature = "network-configurator")]
#[allow(missing_docs)]
pub mod network {
    plugin_world!("bronze:plugin/network-configurator", "export_network_configurator", "$crate::network", {
        "bronze:plugin/metadata@0.2.0": crate::types::bronze::plugin::metadata,
        "bronze:plugin/network@0.2.0": crate::types::bronze::plugin::network,
    });
}

/// A health check: implement `check` and export the type with
/// [`export_health_check!`].
#[cfg(feature = "health-check")]
pub use health::Guest as HealthCheck;
/// Exports a [`HealthCheck`] implementation as the component's `check`:
/// `bronze_plugin_sdk::export_health_check!(MyCheck);`
#[cfg(feature = "health-check")]
pub use health::export_health_check;

/// A metadata provider: implement `detect` and `fetch` and export the type
/// with [`export_metadata_provider!`].
#[cfg(feature = "metadata-provider")]
pub use metadata::Guest as MetadataProvider;
/// Exports a [`MetadataProvider`] implementation:
/// `bronze_plugin_sdk::export_metadata_provider!(MyProvider);`
#[cfg(feature = "metadata-provider")]
pub use metadata::export_metadata_provider;

/// A network configurator: implement `plan` and export the type with
/// [`export_network_configurator!`].
#[cfg(feature = "network-configurator")]
pub use network::Guest as NetworkConfigurator;
/// Exports a [`NetworkConfigurator`] implementation:
/// `bronze_plugin_sdk::export_network_configurator!(MyConfigurator);`
#[cfg(feature = "network-configurator")]
pub use network::export_network_configurator;

pub use host::bronze::host::types::Link;
pub use types::bronze::plugin::health::{Report, Status};
pub use types::bronze::plugin::metadata::{
    DhcpOperator, FetchError, InstanceMetadata, IpFamily, NetworkConfig, NetworkConfigFormat, PlatformInterface,
    PlatformRoute,
};
pub use types::bronze::plugin::network::{Addressing, Bond, BondMode, Ethernet, LinkMatch, NetworkPlan, Route, Vlan};
