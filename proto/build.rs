//! Compiles `proto/*.proto` with protox (pure Rust, no system `protoc`) and
//! writes the encoded descriptor set for server reflection.

use prost::Message;
use std::{env, fs, path::PathBuf};

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let files = [
        "proto/bronze/v1/common.proto",
        "proto/bronze/v1/machine.proto",
        "proto/bronze/v1/resource.proto",
        "proto/bronze/v1/time.proto",
        "proto/bronze/v1/plugin.proto",
        "proto/bronze/v1/network.proto",
        "proto/bronze/v1/storage.proto",
        "proto/bronze/v1/support.proto",
        "proto/bronze/v1/file.proto",
        "proto/bronze/v1/process.proto",
        "proto/bronze/v1/capture.proto",
    ];
    for f in &files {
        println!("cargo:rerun-if-changed={f}");
    }
    let fds = protox::compile(files, ["proto"])?;
    let out = PathBuf::from(env::var("OUT_DIR")?);
    fs::write(out.join("bronze_descriptor.bin"), fds.encode_to_vec())?;
    tonic_prost_build::configure().build_client(true).build_server(true).compile_fds(fds)?;
    Ok(())
}
