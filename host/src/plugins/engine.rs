//! The wasmtime engines and the epoch ticker that bounds how long guest code
//! runs between checks.
//!
//! The node's engine ([`PluginEngine`]) loads and runs compiled plugins but
//! has no compiler: Cranelift runs only in the compile worker
//! ([`super::compiler`]), a separate process whose engine
//! ([`compiling_engine`]) is built from the same settings, so what it writes
//! loads here. Both fingerprints come from the worker's engine.

use std::hash::{DefaultHasher, Hash, Hasher};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
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
    /// Computed when first asked (plugins load after the API serves, and
    /// building the worker's engine settings is start-up work for nothing
    /// until then).
    fingerprint: Arc<OnceLock<String>>,
    ticker: Arc<Ticker>,
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
        let ticker = Ticker::start(engine.clone());
        Ok(PluginEngine { engine, fingerprint: Arc::default(), ticker })
    }

    pub fn engine(&self) -> &Engine {
        &self.engine
    }

    /// Starts the epoch ticking until the guard is dropped.
    pub fn busy(&self) -> Busy {
        let shared = self.ticker.shared.clone();
        shared.lock().active += 1;
        shared.wake.notify_one();
        Busy { shared }
    }

    /// Epoch increments so far.
    pub fn ticks(&self) -> u64 {
        self.ticker.shared.ticks.load(Ordering::Relaxed)
    }

    /// Identifies what compiled artifacts this engine can load: the
    /// wasmtime version, its settings and the CPU features it targets.
    ///
    /// A compiler-less engine hashes no compiler settings and no CPU
    /// features: artifacts are named after the engine that writes them,
    /// the worker's ([`compiling_engine`]; building it only builds
    /// Cranelift's settings, it compiles nothing). Should that engine be
    /// impossible, no artifact matches the fingerprint and every compile
    /// fails in the worker, saying why.
    pub fn fingerprint(&self) -> &str {
        self.fingerprint.get_or_init(|| match compiling_engine() {
            Ok(engine) => fingerprint(&engine),
            Err(e) => {
                tracing::error!(error = %format!("{e:#}"), "cannot build the compile worker's engine");
                "unavailable".to_string()
            }
        })
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
        .async_stack_size(ASYNC_STACK)
        // No `.eh_frame` for compiled plugins: it only lets the system's
        // unwinder walk through wasm frames, which nothing here does (traps
        // carry wasmtime's own backtraces, and a host function's panic never
        // unwinds through guest frames). With it, every load registers and
        // every drop unregisters each function's FDE, and the musl build's
        // unwinder (LLVM libunwind) scans its whole cache per FDE: dropping
        // the image's 16 plugins cost PID 1 261 M instructions, a second or
        // more under emulation on every shutdown, reboot and reinstall.
        .native_unwind_info(false);
    config
}

/// The compile worker's engine: the node's settings plus Cranelift. Only
/// the worker process compiles with it.
pub fn compiling_engine() -> wasmtime::Result<Engine> {
    let mut config = shared_config();
    config.cranelift_opt_level(OptLevel::Speed);
    // The host's triple without the CPU features this machine happens to
    // have: baseline x86-64 / aarch64 code loads on any CPU of the
    // architecture, so artifacts made when the image is built (or on one
    // host and copied) load on the node that boots it, emulated or not.
    config.target(&target_lexicon::HOST.to_string())?;
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
/// so it keeps ticking even when every tokio worker is busy. It ticks only
/// while a call is in flight ([`PluginEngine::busy`]): an idle node does not
/// wake up a hundred times a second for nothing (that alone was ≈0.25 % of a
/// core).
struct Ticker {
    shared: Arc<TickerShared>,
}

struct TickerShared {
    state: Mutex<TickerState>,
    wake: Condvar,
    /// Epoch increments so far (for tests).
    ticks: AtomicU64,
}

#[derive(Default)]
struct TickerState {
    /// Calls in flight.
    active: usize,
    stop: bool,
}

impl TickerShared {
    fn lock(&self) -> std::sync::MutexGuard<'_, TickerState> {
        // The state is two plain fields; a panic elsewhere cannot leave it
        // half-written, so a poisoned lock is still usable.
        self.state.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
    }
}

impl Ticker {
    fn start(engine: Engine) -> Arc<Ticker> {
        let shared = Arc::new(TickerShared {
            state: Mutex::new(TickerState::default()),
            wake: Condvar::new(),
            ticks: AtomicU64::new(0),
        });
        let thread_shared = shared.clone();
        let spawned = std::thread::Builder::new().name("plugin-epoch".into()).spawn(move || {
            let shared = thread_shared;
            loop {
                {
                    let mut state = shared.lock();
                    while state.active == 0 && !state.stop {
                        state = shared.wake.wait(state).unwrap_or_else(std::sync::PoisonError::into_inner);
                    }
                    if state.stop {
                        return;
                    }
                }
                std::thread::sleep(EPOCH_TICK);
                engine.increment_epoch();
                shared.ticks.fetch_add(1, Ordering::Relaxed);
            }
        });
        if let Err(e) = spawned {
            // Without the ticker guest code is only bounded by the call's
            // tokio timeout; say so loudly rather than failing the node.
            tracing::error!(error = %e, "cannot start the plugin epoch ticker");
        }
        Arc::new(Ticker { shared })
    }
}

impl Drop for Ticker {
    fn drop(&mut self) {
        self.shared.lock().stop = true;
        self.shared.wake.notify_all();
    }
}

/// Keeps the epoch ticking while it lives: hold one for as long as guest
/// code may run (a whole call, instantiation included).
#[must_use = "the epoch ticks only while the guard lives"]
pub struct Busy {
    shared: Arc<TickerShared>,
}

impl std::fmt::Debug for Busy {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Busy").finish_non_exhaustive()
    }
}

impl Drop for Busy {
    fn drop(&mut self) {
        let mut state = self.shared.lock();
        state.active = state.active.saturating_sub(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Waits up to 2 s for `ok`, polling every tick.
    fn eventually(ok: impl Fn() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(2);
        while std::time::Instant::now() < deadline {
            if ok() {
                return true;
            }
            std::thread::sleep(EPOCH_TICK);
        }
        ok()
    }

    #[test]
    fn the_fingerprint_is_the_workers_engines_computed_once_and_shared_by_clones() {
        let engine = PluginEngine::new().unwrap();
        let clone = engine.clone();
        assert!(clone.fingerprint.get().is_none(), "computed before it was asked for");
        let expected = fingerprint(&compiling_engine().unwrap());
        assert!(expected.starts_with("wasmtime48-"), "{expected}");
        assert_eq!(engine.fingerprint(), expected);
        assert_eq!(clone.fingerprint.get().map(String::as_str), Some(expected.as_str()));
    }

    #[test]
    fn the_epoch_ticks_only_while_a_call_is_busy() {
        let engine = PluginEngine::new().unwrap();
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(engine.ticks(), 0, "an idle engine ticked");

        let first = engine.busy();
        let second = engine.busy();
        assert!(eventually(|| engine.ticks() >= 3), "a busy engine did not tick");
        drop(first);
        let before = engine.ticks();
        assert!(eventually(|| engine.ticks() >= before + 3), "one call still in flight, but the ticks stopped");
        drop(second);
        // At most the tick already under way completes after the last guard.
        std::thread::sleep(EPOCH_TICK * 2);
        let stopped = engine.ticks();
        std::thread::sleep(EPOCH_TICK * 10);
        assert_eq!(engine.ticks(), stopped, "the ticks went on with no call in flight");

        let _again = engine.busy();
        assert!(eventually(|| engine.ticks() > stopped), "the ticker did not wake for a new call");
    }
}
