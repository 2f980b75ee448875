//! The wasmtime engines and the epoch ticker that bounds how long guest code
//! runs between checks.
//!
//! The node's engine ([`PluginEngine`]) loads and runs compiled plugins but
//! has no compiler: Cranelift runs only in the compile worker
//! ([`super::compiler`]), a separate process whose engine
//! ([`compiling_engine`]) is built from the same settings, so what it writes
//! loads here. Both fingerprints come from the worker's engine.

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
    /// The node's engine: loads artifacts, never compiles (`Component::new`
    /// on it is an error).
    pub fn new() -> wasmtime::Result<Self> {
        let mut config = shared_config();
        config.enable_compiler(false);
        let engine = Engine::new(&config)?;
        // A compiler-less engine hashes no compiler settings and no CPU
        // features: name artifacts after the engine that writes them. It
        // only builds Cranelift's settings here, it compiles nothing.
        let fingerprint = fingerprint(&compiling_engine()?).into();
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

/// What both engines share: everything that decides whether an artifact
/// written by one loads in the other (wasmtime checks the tunables and
/// features on load).
fn shared_config() -> Config {
    let mut config = Config::new();
    config
        .epoch_interruption(true)
        // Off: the component-model async ABI costs ≈3× per call and no
        // Bronze world uses it.
        .concurrency_support(false)
        .max_wasm_stack(MAX_WASM_STACK)
        .async_stack_size(ASYNC_STACK);
    config
}

/// The compile worker's engine: the node's settings plus Cranelift. Only
/// the worker process compiles with it.
pub fn compiling_engine() -> wasmtime::Result<Engine> {
    let mut config = shared_config();
    config.cranelift_opt_level(OptLevel::Speed);
    Engine::new(&config)
}

/// Identifies what artifacts `engine` writes: the wasmtime version, its
/// settings and the CPU features it targets.
pub fn fingerprint(engine: &Engine) -> String {
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
