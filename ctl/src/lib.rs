//! bronzectl as a library: the client config file, connecting with mTLS or
//! a pinned maintenance certificate, per-node commands, fan-out, and output
//! formatting. The binary only parses flags and calls into this; tests use
//! the same client code.

pub mod client;
pub mod clientconfig;
pub mod commands;
pub mod connect;
pub mod genconfig;
pub mod network;
pub mod output;
pub mod plugins;
pub mod stream;
