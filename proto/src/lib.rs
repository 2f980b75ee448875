//! The Bronze gRPC API: messages and tonic client/server stubs generated from
//! `proto/bronze/v1/*.proto`. The `.proto` files are the contract; this crate
//! holds no logic.

#![allow(clippy::all, missing_docs)]

/// Version 1 of the Bronze API.
pub mod v1 {
    tonic::include_proto!("bronze.v1");
}

/// Encoded `FileDescriptorSet` of every Bronze `.proto`, for server reflection
/// and for tests that enumerate every RPC.
pub const FILE_DESCRIPTOR_SET: &[u8] = include_bytes!(concat!(env!("OUT_DIR"), "/bronze_descriptor.bin"));
