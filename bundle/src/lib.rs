//! Plugin bundles: `plugin.wasm` (a WebAssembly component), `plugin.toml`
//! (its manifest) and an optional `plugin.sig` (an Ed25519 signature over
//! both). Shared by `bronzectl`, which builds, signs and uploads bundles,
//! and `bronzed`, which checks them before installing; keeping both on one
//! parser means the CLI refuses exactly what the node would. [`text`]
//! escapes untrusted text (plugin output, node answers) for both.

mod bundle;
pub mod capability;
mod manifest;
mod signing;
pub mod text;
pub mod upgrade;
mod version;

pub use bundle::{Bundle, BundleError, MAX_SIGNATURE_BYTES, MAX_WASM_BYTES, WASM_FILE, check_component_header};
pub use capability::Capability;
pub use manifest::{
    Capabilities, ConfigKey, HOST_PACKAGE, MANIFEST_FILE, MAX_MANIFEST_BYTES, Manifest, ManifestError, ManifestLimits,
    TYPE_ONLY_INTERFACES, UnknownWorld, UnrequestedImport, World,
};
pub use signing::{
    KeyError, SIGNATURE_FILE, SIGNATURE_FILE_LEN, Signature, SignatureError, SigningKey, public_key_path,
    signed_message, verify,
};
pub use version::{Identifier, Version, VersionError};

use sha2::{Digest, Sha256};

/// The sha256 digest of `bytes`.
pub fn sha256(bytes: &[u8]) -> [u8; 32] {
    Sha256::digest(bytes).into()
}

/// The sha256 digest of `bytes` as lowercase hex, as the API carries it.
pub fn sha256_hex(bytes: &[u8]) -> String {
    hex::encode(sha256(bytes))
}

#[cfg(test)]
mod tests {
    #[test]
    fn sha256_hex_matches_the_known_digest() {
        assert_eq!(super::sha256_hex(b""), "e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855");
        assert_eq!(super::sha256_hex(b"abc"), "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad");
    }
}
