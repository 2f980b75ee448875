//! A bounded ring of resources of one type (audit records, machine
//! events): ids are zero-padded sequence numbers so they sort in time
//! order, and the oldest is removed when the ring is full.

use super::{ResourceSpec, Writer};
use std::sync::Mutex;

pub struct Ring<T> {
    writer: Writer<T>,
    next: Mutex<u64>,
    keep: u64,
}

impl<T> std::fmt::Debug for Ring<T> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ring").field("keep", &self.keep).finish_non_exhaustive()
    }
}

/// Zero-padded so ids sort in time order.
pub fn ring_id(seq: u64) -> String {
    format!("{seq:012}")
}

impl<T: ResourceSpec> Ring<T> {
    pub fn new(writer: Writer<T>, keep: u64) -> Self {
        Self { writer, next: Mutex::new(1), keep }
    }

    /// Appends `spec`, dropping the oldest entry beyond `keep`.
    pub fn push(&self, spec: &T) {
        // The lock orders ids with store writes.
        let mut next = self.next.lock().unwrap_or_else(|p| p.into_inner());
        let seq = *next;
        *next += 1;
        if let Err(e) = self.writer.put(&ring_id(seq), spec) {
            tracing::error!(error = %e, "cannot record {}", T::DEFINITION.type_name);
        }
        if seq > self.keep {
            self.writer.remove(&ring_id(seq - self.keep));
        }
    }
}
