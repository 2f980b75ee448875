//! Rust bindings generated from `wit/`: the `bronze:host` interfaces the
//! host implements (generated once), and [`plugin_world!`], with which each
//! world module (`super::worlds`) generates its world reusing them.

/// The `bronze:host` imports, generated from the `capabilities` world.
pub mod host {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "bronze:host/capabilities",
        imports: { default: async | trappable },
    });
}

/// Generates a plugin world's bindings, mapping every `bronze:host`
/// interface onto [`host`].
macro_rules! plugin_world {
    ($world:literal $(, $key:literal => $path:path)*) => {
        wasmtime::component::bindgen!({
            path: "../wit",
            world: $world,
            imports: { default: async | trappable },
            exports: { default: async },
            with: {
                "bronze:host/log": crate::plugins::bindings::host::bronze::host::log,
                "bronze:host/config": crate::plugins::bindings::host::bronze::host::config,
                "bronze:host/types": crate::plugins::bindings::host::bronze::host::types,
                "bronze:host/facts-dmi": crate::plugins::bindings::host::bronze::host::facts_dmi,
                "bronze:host/facts-links": crate::plugins::bindings::host::bronze::host::facts_links,
                "bronze:host/facts-cmdline": crate::plugins::bindings::host::bronze::host::facts_cmdline,
                "bronze:host/facts-time": crate::plugins::bindings::host::bronze::host::facts_time,
                "bronze:host/http": crate::plugins::bindings::host::bronze::host::http,
                "bronze:host/probe": crate::plugins::bindings::host::bronze::host::probe,
                "bronze:host/volumes": crate::plugins::bindings::host::bronze::host::volumes,
                $($key: $path,)*
            },
        });
    };
}

pub(crate) use plugin_world;
