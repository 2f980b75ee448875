//! The one wasmtime engine every plugin shares, and the epoch ticker that
//! bounds how long guest code runs between checks.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;
use wasmtime::{Config, Engine, OptLevel};

/// How often the epoch advances: a running guest is checked (and yields to
/// tokio) at least this often.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

/// Guest call stack limit: deep recursion traps well before the fiber's
/// own stack runs out.
const MAX_WASM_STACK: usize = 512 * 1024;

/// Fiber stack for async calls; must exceed the wasm stack plus room for
/// host functions.
const ASYNC_STACK: usize = 2 * 1024 * 1024;

/// The engine plus the ticker thread that drives epoch interruption.
#[derive(Clone)]
pub struct PluginEngine {
    engine: Engine,
    fingerprint: Arc<str>,
    _ticker: Arc<Ticker>,
}

impl std::fmt::Debug for PluginEngine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PluginEngine").field("fingerprint", &self.fingerprint).finish_non_exhaustive()
    }
}

impl PluginEngine {
    pub fn new() -> wasmtime::Result<Self> {
        let mut config = Config::new();
        config
            .epoch_interruption(true)
            // Off: the component-model async ABI costs ≈3× per call and no
            // Bronze world uses it.
            .concurrency_support(false)
            .cranelift_opt_level(OptLevel::Speed)
            .max_wasm_stack(MAX_WASM_STACK)
            .async_stack_size(ASYNC_STACK);
        let engine = Engine::new(&config)?;
        let fingerprint = fingerprint(&engine).into();
        let ticker = Ticker::start(engine.clone());
        Ok(PluginEngine { engine, fingerprint, _ticker: ticker })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Identifies what compiled artifacts this engine can load: the
    /// wasmtime version, its settings and the CPU features it targets.
    pub fn fingerprint(&self) -> &str {
        &self.fingerprint
    }
}

fn fingerprint(engine: &Engine) -> String {
    // The hash covers the wasmtime version, the settings and the CPU
    // features; the prefix keeps cache names readable.
    let mut hasher = DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut hasher);
    format!("wasmtime48-{:016x}", hasher.finish())
}

/// Advances the engine's epoch every [`EPOCH_TICK`] on its own OS thread,
/// so it keeps ticking even when every tokio worker is busy.
struct Ticker {
    stop: Arc<AtomicBool>,
}

impl Ticker {
    fn start(engine: Engine) -> Arc<Ticker> {
        let stop = Arc::new(AtomicBool::new(false));
        let flag = stop.clone();
        let spawned = std::thread::Builder::new().name("plugin-epoch".into()).spawn(move || {
            while !flag.load(Ordering::Relaxed) {
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
            }
        });
        if let Err(e) = spawned {
            // Without the ticker guest code is only bounded by the call's
            // tokio timeout; say so loudly rather than failing the node.
            tracing::error!(error = %e, "cannot start the plugin epoch ticker");
        }
        Arc::new(Ticker { stop })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}
