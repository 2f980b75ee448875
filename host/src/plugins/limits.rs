//! Per-store resource limits. Growth beyond a limit fails the call (a trap
//! carrying our error) and is remembered, so the outcome says `limit`
//! rather than a bare trap.

use wasmtime::ResourceLimiter;

/// Table elements a guest may have (function references).
const MAX_TABLE_ELEMENTS: usize = 100_000;
/// Core instances, tables and memories in one component instance; Rust
/// components use a handful of each.
const MAX_INSTANCES: usize = 64;
const MAX_TABLES: usize = 64;
const MAX_MEMORIES: usize = 16;

#[derive(Debug)]
pub struct Limiter {
    memory: usize,
    /// Why a limit stopped the call, if one did.
    pub hit: Option<String>,
    /// Linear memory the call's instances hold: every growth allowed, over
    /// all their memories (the initial size is a growth from 0).
    pub grown: usize,
}

impl Limiter {
    pub fn new(memory: usize) -> Self {
        Limiter { memory, hit: None, grown: 0 }
    }
}

impl ResourceLimiter for Limiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > self.memory {
            let message = format!(
                "memory limit: the plugin tried to grow its memory from {current} to {desired} bytes; its limit is {} bytes",
                self.memory
            );
            self.hit = Some(message.clone());
            return Err(wasmtime::Error::msg(message));
        }
        self.grown = self.grown.saturating_add(desired.saturating_sub(current));
        Ok(true)
    }

    fn table_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        if desired > MAX_TABLE_ELEMENTS {
            let message = format!(
                "table limit: the plugin tried to grow a table from {current} to {desired} elements; the limit is {MAX_TABLE_ELEMENTS}"
            );
            self.hit = Some(message.clone());
            return Err(wasmtime::Error::msg(message));
        }
        Ok(true)
    }

    fn instances(&self) -> usize {
        MAX_INSTANCES
    }

    fn tables(&self) -> usize {
        MAX_TABLES
    }

    fn memories(&self) -> usize {
        MAX_MEMORIES
    }
}
