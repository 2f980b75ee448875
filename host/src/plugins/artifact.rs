//! Compiled components: producing an artifact from a component (in the
//! compile worker, never in the node), and the ahead-of-time cache of
//! `<sha256>-<engine fingerprint>.cwasm` files the host wrote itself.
//! Loading one is a memory map; any failure to load is a cache miss and
//! means compiling again (in the worker).

use super::engine::PluginEngine;
use sha2::Digest;
use std::io::Read;
use std::path::Path;
use wasmtime::Engine;
use wasmtime::component::Component;

/// What compiling a component produced, before it is written anywhere.
#[derive(Debug)]
pub struct Precompiled {
    pub cwasm: Vec<u8>,
    /// The largest initial size, in bytes, of a linear memory the component
    /// defines: an instance with a smaller memory limit cannot start.
    pub memory_minimum: u64,
}

/// Validates and compiles `wasm` with `engine`, which must have a compiler
/// (the worker's [`super::engine::compiling_engine`]); errors say what the
/// bytes are instead.
pub fn precompile(engine: &Engine, wasm: &[u8]) -> Result<Precompiled, String> {
    bronze_bundle::check_component_header(wasm).map_err(|reason| format!("plugin.wasm {reason}"))?;
    let cwasm =
        engine.precompile_component(wasm).map_err(|e| format!("plugin.wasm is not a valid component: {e:#}"))?;
    let memory_minimum = memory_minimum(wasm).map_err(|e| format!("plugin.wasm is not a valid component: {e:#}"))?;
    Ok(Precompiled { cwasm, memory_minimum })
}

/// The largest initial size in bytes of any linear memory defined by a core
/// module anywhere in the component (nested components included). Memories
/// a module imports are some other module's definitions, counted there.
pub fn memory_minimum(wasm: &[u8]) -> Result<u64, wasmparser::BinaryReaderError> {
    let mut largest = 0u64;
    for payload in wasmparser::Parser::new(0).parse_all(wasm) {
        if let wasmparser::Payload::MemorySection(memories) = payload? {
            for memory in memories {
                let memory = memory?;
                let page = 1u64.checked_shl(memory.page_size_log2.unwrap_or(16)).unwrap_or(u64::MAX);
                largest = largest.max(memory.initial.saturating_mul(page));
            }
        }
    }
    Ok(largest)
}

/// Hex sha256 of a file, read in small pieces (artifacts can be large).
pub fn sha256_file(path: &Path) -> std::io::Result<String> {
    let mut file = std::fs::File::open(path)?;
    let mut hasher = sha2::Sha256::new();
    let mut buf = vec![0u8; 64 << 10];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(hex::encode(hasher.finalize())),
            Ok(n) => hasher.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// Maps an artifact the host wrote (the cache, or the worker's output in
/// the state dir) after checking it against the sha256 recorded for it.
pub fn load_artifact(engine: &PluginEngine, path: &Path, expected_sha256: &str) -> Result<Component, String> {
    let actual = sha256_file(path).map_err(|e| format!("cannot read it: {e}"))?;
    if actual != expected_sha256 {
        return Err(format!("it is corrupted: its sha256 is {actual}, {expected_sha256} was recorded"));
    }
    map_artifact(engine, path)
}

/// Maps an artifact that ships in the image (`cargo xtask image` compiled
/// it with bronzed's own compile worker): no sha256, the image is trusted
/// like the bronzed binary beside it. The caller has checked the image's
/// report (the wasm it was made from, the engine that made it).
pub fn load_image_artifact(engine: &PluginEngine, path: &Path) -> Result<Component, String> {
    map_artifact(engine, path)
}

/// Maps `path`, which must be a file the host's own compile worker wrote:
/// one in the host's state dir, checked against the sha256 recorded when it
/// was written ([`load_artifact`]), or one in the read-only image
/// ([`load_image_artifact`]).
fn map_artifact(engine: &PluginEngine, path: &Path) -> Result<Component, String> {
    // SAFETY: wasmtime requires a file that `precompile_component` or
    // `serialize` produced and that nobody changes while it is mapped. Both
    // callers pass one bronzed's compile worker wrote: in the state dir,
    // files are replaced by rename, never rewritten in place; the image is
    // read-only. wasmtime also checks the header, version and engine
    // compatibility.
    #[allow(unsafe_code)]
    let loaded = unsafe { Component::deserialize_file(engine.engine(), path) };
    loaded.map_err(|e| format!("wasmtime refuses it: {e:#}"))
}

/// Loads a cached artifact; `None` (after logging why) when it is missing,
/// does not match the sha256 recorded when it was written, or wasmtime
/// refuses it, so the caller recompiles.
pub fn load_cached(engine: &PluginEngine, path: &Path, expected_sha256: &str) -> Option<Component> {
    if !path.exists() {
        return None;
    }
    match load_artifact(engine, path, expected_sha256) {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %e, "cached plugin artifact unusable; recompiling");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugins::engine::compiling_engine;

    /// A component whose core module defines memories of `pages` pages each.
    fn component_with_memories(pages: &[u64]) -> Vec<u8> {
        let mut memories = wasm_encoder::MemorySection::new();
        for &minimum in pages {
            memories.memory(wasm_encoder::MemoryType {
                minimum,
                maximum: None,
                memory64: false,
                shared: false,
                page_size_log2: None,
            });
        }
        let mut module = wasm_encoder::Module::new();
        module.section(&memories);
        let mut component = wasm_encoder::Component::new();
        component.section(&wasm_encoder::ModuleSection(&module));
        component.finish()
    }

    #[test]
    fn non_components_are_explained_before_compiling() {
        let engine = compiling_engine().unwrap();
        let err = |bytes: &[u8]| precompile(&engine, bytes).err().unwrap();
        assert!(err(b"\0asm\x01\0\0\0").contains("core WebAssembly module, not a component"));
        assert!(err(b"not wasm at all").contains("not a WebAssembly binary"));
        assert!(err(b"\0asm\x0d\0\x01\0garbage").contains("not a valid component"));
    }

    #[test]
    fn the_node_engine_cannot_compile_but_loads_what_the_worker_engine_wrote() {
        let node = PluginEngine::new().unwrap();
        let wasm = component_with_memories(&[1]);
        let Err(err) = Component::new(node.engine(), &wasm) else { panic!("the node's engine compiled") };
        assert!(format!("{err:#}").contains("compil"), "{err:#}");

        let compiled = precompile(&compiling_engine().unwrap(), &wasm).unwrap();
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("a.cwasm");
        std::fs::write(&path, &compiled.cwasm).unwrap();
        let sha = bronze_bundle::sha256_hex(&compiled.cwasm);
        load_artifact(&node, &path, &sha).expect("the worker's artifact loads in the node's engine");
        assert_eq!(node.fingerprint(), crate::plugins::engine::fingerprint(&compiling_engine().unwrap()));

        let err = load_artifact(&node, &path, &"0".repeat(64)).unwrap_err();
        assert!(err.starts_with("it is corrupted: its sha256 is"), "{err}");
        assert!(load_cached(&node, &dir.path().join("missing.cwasm"), &sha).is_none());
    }

    #[test]
    fn the_memory_minimum_is_the_largest_initial_memory() {
        assert_eq!(memory_minimum(&component_with_memories(&[])).unwrap(), 0);
        assert_eq!(memory_minimum(&component_with_memories(&[2, 1024, 17])).unwrap(), 1024 << 16);
        let compiled = precompile(&compiling_engine().unwrap(), &component_with_memories(&[3])).unwrap();
        assert_eq!(compiled.memory_minimum, 3 << 16);
        // Nested components count too.
        let mut outer = wasm_encoder::Component::new();
        outer.section(&wasm_encoder::RawSection { id: 4, data: &component_with_memories(&[5]) });
        assert_eq!(memory_minimum(&outer.finish()).unwrap(), 5 << 16);
    }
}
