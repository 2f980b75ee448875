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
    check_header(wasm)?;
    let start = Instant::now();
    let component =
        Component::new(engine.engine(), wasm).map_err(|e| format!("plugin.wasm is not a valid component: {e:#}"))?;
    let cwasm = component.serialize().map_err(|e| format!("cannot serialize the compiled component: {e:#}"))?;
    Ok(Compiled { component, cwasm, took: start.elapsed() })
}

/// The binary header: `\0asm`, then a version/layer word that tells core
/// modules from components.
fn check_header(wasm: &[u8]) -> Result<(), String> {
    const MAGIC: &[u8] = b"\0asm";
    const COMPONENT: [u8; 4] = [0x0d, 0x00, 0x01, 0x00];
    if wasm.len() < 8 {
        return Err(format!("plugin.wasm is {} bytes: too short for a WebAssembly binary", wasm.len()));
    }
    if let Some(at) = wasm.iter().zip(MAGIC).position(|(a, b)| a != b) {
        return Err(format!(
            "plugin.wasm is not WebAssembly: byte {at} is 0x{:02x}, expected the magic \\0asm",
            wasm[at]
        ));
    }
    let (a, b, c, d) = (wasm[4], wasm[5], wasm[6], wasm[7]);
    match [a, b, c, d] {
        COMPONENT => Ok(()),
        [0x01, 0x00, 0x00, 0x00] => {
            Err("plugin.wasm is a core WebAssembly module, not a component: build it with `--target wasm32-wasip2`"
                .into())
        }
        _ => Err(format!(
            "plugin.wasm has an unknown WebAssembly version/layer at bytes 4..8 ({a:02x} {b:02x} {c:02x} {d:02x}); expected a component (0d 00 01 00)"
        )),
    }
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
    fn headers_are_explained() {
        assert!(check_header(b"\0asm").unwrap_err().contains("too short"));
        assert!(check_header(b"\0asX\x01\0\0\0").unwrap_err().contains("byte 3 is 0x58"));
        assert!(check_header(b"\0asm\x01\0\0\0").unwrap_err().contains("core WebAssembly module"));
        assert!(check_header(b"\0asm\x0d\0\x01\0").is_ok());
        assert!(check_header(b"\0asm\x0e\0\x01\0").unwrap_err().contains("unknown WebAssembly version"));
    }
}
