//! Compiling components and the ahead-of-time cache: `<sha256>-<engine
//! fingerprint>.cwasm` files the host wrote itself. Loading one is a
//! memory map; any failure to load is a cache miss and means recompiling.

use super::engine::PluginEngine;
use sha2::Digest;
use std::path::Path;
use std::time::{Duration, Instant};
use wasmtime::component::Component;

/// A freshly compiled component and its serialized form for the cache.
pub struct Compiled {
    pub component: Component,
    pub cwasm: Vec<u8>,
    pub took: Duration,
}

/// Compiles `wasm`, with errors that say what the bytes are instead.
pub fn compile(engine: &PluginEngine, wasm: &[u8]) -> Result<Compiled, String> {
    bronze_bundle::check_component_header(wasm).map_err(|reason| format!("plugin.wasm {reason}"))?;
    let start = Instant::now();
    let component =
        Component::new(engine.engine(), wasm).map_err(|e| format!("plugin.wasm is not a valid component: {e:#}"))?;
    let cwasm = component.serialize().map_err(|e| format!("cannot serialize the compiled component: {e:#}"))?;
    Ok(Compiled { component, cwasm, took: start.elapsed() })
}

/// Loads a cached artifact; `None` (after logging why) when it is missing,
/// does not match the sha256 recorded when it was written, or wasmtime
/// refuses it, so the caller recompiles.
pub fn load_cached(engine: &PluginEngine, path: &Path, expected_sha256: &str) -> Option<Component> {
    let bytes = match std::fs::read(path) {
        Ok(bytes) => bytes,
        Err(e) => {
            if e.kind() != std::io::ErrorKind::NotFound {
                tracing::warn!(path = %path.display(), error = %e, "cannot read cached plugin artifact; recompiling");
            }
            return None;
        }
    };
    let actual = hex::encode(sha2::Sha256::digest(&bytes));
    if actual != expected_sha256 {
        tracing::warn!(path = %path.display(), expected = expected_sha256, %actual, "cached plugin artifact is corrupted; recompiling");
        return None;
    }
    // SAFETY: wasmtime requires bytes that `serialize` produced. These are
    // exactly the bytes the host itself serialized and wrote to its own
    // state dir (checked above against the sha256 recorded at write time);
    // wasmtime also checks the header, version and engine compatibility.
    #[allow(unsafe_code)]
    let loaded = unsafe { Component::deserialize(engine.engine(), &bytes) };
    match loaded {
        Ok(component) => Some(component),
        Err(e) => {
            tracing::warn!(path = %path.display(), error = %format!("{e:#}"), "cached plugin artifact unusable; recompiling");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn non_components_are_explained_before_compiling() {
        let engine = PluginEngine::new().unwrap();
        let err = |bytes: &[u8]| compile(&engine, bytes).err().unwrap();
        assert!(err(b"\0asm\x01\0\0\0").contains("core WebAssembly module, not a component"));
        assert!(err(b"not wasm at all").contains("not a WebAssembly binary"));
        assert!(err(b"\0asm\x0d\0\x01\0garbage").contains("not a valid component"));
    }
}
