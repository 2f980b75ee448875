//! Upgrade bundles: a new system for a node's inactive boot slot.
//!
//! A bundle is a tar of four files, in this order: `upgrade.toml` (the
//! manifest: the release, the architecture, and each part's size and
//! sha256), `upgrade.sig` (an Ed25519 signature, as `plugin.sig` is written,
//! over `bronze-upgrade-v1\n ‖ sha256(upgrade.toml)`), `vmlinuz` and
//! `initrd`. The node checks the manifest and its signature before it
//! writes a byte, then each part against the manifest as it arrives. The
//! signed message has a context prefix and a different length than a plugin
//! signature's, so no plugin signature can ever pass as an upgrade's.

use std::io::Read;

use bronze_config::TrustedKey;
use ring::signature::{ED25519, UnparsedPublicKey};
use serde::Deserialize;

use crate::signing::{Signature, SigningKey};
use crate::{sha256, sha256_hex};

/// The manifest's file name in a bundle.
pub const UPGRADE_MANIFEST: &str = "upgrade.toml";
/// The signature's file name in a bundle.
pub const UPGRADE_SIGNATURE: &str = "upgrade.sig";
/// The kernel's file name in a bundle (and in a boot slot).
pub const KERNEL_PART: &str = "vmlinuz";
/// The initramfs's file name in a bundle (and in a boot slot).
pub const INITRD_PART: &str = "initrd";
/// The largest manifest read.
pub const MAX_UPGRADE_MANIFEST_BYTES: usize = 4096;
/// The largest part a manifest may declare (a node also checks its slot's room).
pub const MAX_PART_BYTES: u64 = 1 << 30;
/// What the signature covers before the manifest's digest.
const CONTEXT: &[u8] = b"bronze-upgrade-v1\n";

/// One part of the new system, as the manifest declares it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Part {
    pub size: u64,
    pub sha256: [u8; 32],
}

/// `upgrade.toml`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct UpgradeManifest {
    /// The Bronze version of the new system, e.g. `v0.2.0`.
    pub release: String,
    /// `std::env::consts::ARCH` of the system it is built for.
    pub arch: String,
    pub kernel: Part,
    pub initrd: Part,
}

/// Why an upgrade bundle or its manifest was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UpgradeError {
    #[error("upgrade.toml: {0}")]
    Manifest(String),
    #[error("malformed upgrade.sig: {0}")]
    Signature(String),
    #[error("upgrade refused: no machine.upgrade.trustedKeys in the config")]
    NoTrustedKeys,
    #[error(
        "upgrade.sig does not verify with any of the {tried} key(s) in machine.upgrade.trustedKeys (signed by another key, or upgrade.toml changed after signing)"
    )]
    Untrusted { tried: usize },
    #[error("bundle: {0}")]
    Bundle(String),
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    release: String,
    arch: String,
    kernel: RawPart,
    initrd: RawPart,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct RawPart {
    size: u64,
    sha256: String,
}

impl UpgradeManifest {
    /// The manifest of `kernel` and `initrd`.
    pub fn describe(release: &str, arch: &str, kernel: &[u8], initrd: &[u8]) -> UpgradeManifest {
        let part = |bytes: &[u8]| Part { size: bytes.len() as u64, sha256: sha256(bytes) };
        UpgradeManifest { release: release.into(), arch: arch.into(), kernel: part(kernel), initrd: part(initrd) }
    }

    /// The file's text.
    pub fn render(&self) -> String {
        format!(
            "release = {:?}\narch = {:?}\n\n[kernel]\nsize = {}\nsha256 = \"{}\"\n\n[initrd]\nsize = {}\nsha256 = \"{}\"\n",
            self.release,
            self.arch,
            self.kernel.size,
            hex::encode(self.kernel.sha256),
            self.initrd.size,
            hex::encode(self.initrd.sha256)
        )
    }

    /// Parses and checks `upgrade.toml`: at most
    /// [`MAX_UPGRADE_MANIFEST_BYTES`], no unknown key, a release of
    /// printable ASCII (it is shown in boot menus and logs), sizes within
    /// [`MAX_PART_BYTES`] and 64-hex-digit digests.
    pub fn parse(bytes: &[u8]) -> Result<UpgradeManifest, UpgradeError> {
        let bad = |m: String| UpgradeError::Manifest(m);
        if bytes.len() > MAX_UPGRADE_MANIFEST_BYTES {
            return Err(bad(format!("{} bytes, more than {MAX_UPGRADE_MANIFEST_BYTES}", bytes.len())));
        }
        let text = std::str::from_utf8(bytes).map_err(|e| bad(format!("not UTF-8 at byte {}", e.valid_up_to())))?;
        let raw: RawManifest = toml::from_str(text).map_err(|e| bad(e.to_string().trim().to_string()))?;
        check_release(&raw.release).map_err(|e| bad(format!("release {e}")))?;
        if raw.arch.is_empty()
            || raw.arch.len() > 32
            || !raw.arch.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
        {
            return Err(bad(format!(
                "arch {:?}: expected a name like x86_64",
                crate::text::escape_within(&raw.arch, 40)
            )));
        }
        let part = |name: &str, raw: RawPart| -> Result<Part, UpgradeError> {
            if raw.size == 0 || raw.size > MAX_PART_BYTES {
                return Err(bad(format!("{name}.size {}: expected 1 to {MAX_PART_BYTES} bytes", raw.size)));
            }
            let digest = hex::decode(&raw.sha256)
                .ok()
                .filter(|d| d.len() == 32 && raw.sha256.bytes().all(|b| !b.is_ascii_uppercase()))
                .ok_or_else(|| bad(format!("{name}.sha256: expected 64 lowercase hex digits")))?;
            Ok(Part { size: raw.size, sha256: digest.try_into().expect("32 bytes") })
        };
        Ok(UpgradeManifest {
            kernel: part("kernel", raw.kernel)?,
            initrd: part("initrd", raw.initrd)?,
            release: raw.release,
            arch: raw.arch,
        })
    }
}

/// Checks a release name (a manifest's `release`, an image's release
/// file): 1 to 64 of `A-Z a-z 0-9 . - + _ ~`, since it is shown in boot
/// menus, entry files and logs. The error quotes it, escaped.
pub fn check_release(release: &str) -> Result<(), String> {
    if release.is_empty()
        || release.len() > 64
        || !release.bytes().all(|b| b.is_ascii_alphanumeric() || b".-+_~".contains(&b))
    {
        return Err(format!(
            "{:?}: expected 1 to 64 of A-Z a-z 0-9 . - + _ ~",
            crate::text::escape_within(release, 80)
        ));
    }
    Ok(())
}

/// What an upgrade signature covers.
fn message(manifest: &[u8]) -> Vec<u8> {
    [CONTEXT, &sha256(manifest)[..]].concat()
}

/// Signs a manifest's bytes.
pub fn sign_upgrade(key: &SigningKey, manifest: &[u8]) -> Signature {
    key.sign_raw(&message(manifest))
}

/// Checks `signature` (the `upgrade.sig` bytes) over `manifest` with each
/// trusted key; the key that verified.
pub fn verify_upgrade(manifest: &[u8], signature: &[u8], keys: &[TrustedKey]) -> Result<TrustedKey, UpgradeError> {
    let signature = Signature::parse(signature)
        .map_err(|e| UpgradeError::Signature(e.to_string().trim_start_matches("malformed plugin.sig: ").to_string()))?;
    if keys.is_empty() {
        return Err(UpgradeError::NoTrustedKeys);
    }
    let message = message(manifest);
    keys.iter()
        .find(|key| UnparsedPublicKey::new(&ED25519, key.as_bytes()).verify(&message, &signature.0).is_ok())
        .cloned()
        .ok_or(UpgradeError::Untrusted { tried: keys.len() })
}

/// A bundle's four files, read from its tar.
#[derive(Debug, Clone)]
pub struct UpgradeBundle {
    pub manifest_bytes: Vec<u8>,
    pub signature: Vec<u8>,
    pub kernel: Vec<u8>,
    pub initrd: Vec<u8>,
}

impl UpgradeBundle {
    /// A signed bundle of `kernel` and `initrd`.
    pub fn create(release: &str, arch: &str, kernel: Vec<u8>, initrd: Vec<u8>, key: &SigningKey) -> UpgradeBundle {
        let manifest_bytes = UpgradeManifest::describe(release, arch, &kernel, &initrd).render().into_bytes();
        let signature = sign_upgrade(key, &manifest_bytes).to_file_bytes();
        UpgradeBundle { manifest_bytes, signature, kernel, initrd }
    }

    /// The manifest, parsed.
    pub fn manifest(&self) -> Result<UpgradeManifest, UpgradeError> {
        UpgradeManifest::parse(&self.manifest_bytes)
    }

    /// The tar: the four files in order, fixed metadata.
    pub fn to_tar(&self) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        for (name, bytes) in [
            (UPGRADE_MANIFEST, &self.manifest_bytes),
            (UPGRADE_SIGNATURE, &self.signature),
            (KERNEL_PART, &self.kernel),
            (INITRD_PART, &self.initrd),
        ] {
            let mut header = tar::Header::new_ustar();
            header.set_size(bytes.len() as u64);
            header.set_mode(0o644);
            header.set_mtime(0);
            header.set_cksum();
            builder.append_data(&mut header, name, bytes.as_slice()).expect("writing to memory");
        }
        builder.into_inner().expect("writing to memory")
    }

    /// Reads a bundle's tar: exactly the four files, in order, each within
    /// its bound (the manifest's, the signature's, and the sizes the
    /// manifest declares). Checks the parts' digests; not the signature
    /// (the node does, with its keys).
    pub fn from_tar(reader: impl Read) -> Result<UpgradeBundle, UpgradeError> {
        let bad = |m: String| UpgradeError::Bundle(m);
        let mut archive = tar::Archive::new(reader);
        let mut entries = archive.entries().map_err(|e| bad(format!("not a tar: {e}")))?;
        let mut next = |name: &str, max: u64| -> Result<Vec<u8>, UpgradeError> {
            let mut entry = entries
                .next()
                .ok_or_else(|| bad(format!("ends before {name}")))?
                .map_err(|e| bad(format!("reading {name}: {e}")))?;
            let path = entry.path().map_err(|e| bad(format!("reading {name}: {e}")))?.to_string_lossy().into_owned();
            if path != name {
                return Err(bad(format!("expected {name}, found {:?}", crate::text::escape_within(&path, 100))));
            }
            if entry.size() > max {
                return Err(bad(format!("{name} is {} bytes, more than {max}", entry.size())));
            }
            let mut bytes = Vec::with_capacity(entry.size() as usize);
            entry.read_to_end(&mut bytes).map_err(|e| bad(format!("reading {name}: {e}")))?;
            Ok(bytes)
        };
        let manifest_bytes = next(UPGRADE_MANIFEST, MAX_UPGRADE_MANIFEST_BYTES as u64)?;
        let manifest = UpgradeManifest::parse(&manifest_bytes)?;
        let signature = next(UPGRADE_SIGNATURE, crate::SIGNATURE_FILE_LEN as u64)?;
        let kernel = next(KERNEL_PART, manifest.kernel.size)?;
        let initrd = next(INITRD_PART, manifest.initrd.size)?;
        for (name, bytes, part) in [(KERNEL_PART, &kernel, &manifest.kernel), (INITRD_PART, &initrd, &manifest.initrd)]
        {
            if bytes.len() as u64 != part.size || sha256(bytes) != part.sha256 {
                return Err(bad(format!(
                    "{name} is {} bytes with sha256 {}; upgrade.toml says {} bytes with {}",
                    bytes.len(),
                    sha256_hex(bytes),
                    part.size,
                    hex::encode(part.sha256)
                )));
            }
        }
        if let Some(extra) = entries.next() {
            let name = extra.ok().and_then(|e| e.path().ok().map(|p| p.to_string_lossy().into_owned()));
            return Err(bad(format!("unexpected file after initrd: {:?}", name.unwrap_or_default())));
        }
        Ok(UpgradeBundle { manifest_bytes, signature, kernel, initrd })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> SigningKey {
        SigningKey::generate().unwrap()
    }

    #[test]
    fn a_signed_bundle_round_trips_and_verifies_only_with_its_key() {
        let signer = key();
        let bundle =
            UpgradeBundle::create("v0.2.0", "x86_64", b"MZ kernel".to_vec(), b"070701 initrd".to_vec(), &signer);
        let read = UpgradeBundle::from_tar(bundle.to_tar().as_slice()).unwrap();
        let manifest = read.manifest().unwrap();
        assert_eq!((manifest.release.as_str(), manifest.arch.as_str(), manifest.kernel.size), ("v0.2.0", "x86_64", 9));
        assert_eq!(
            verify_upgrade(&read.manifest_bytes, &read.signature, &[signer.public_key()]).unwrap(),
            signer.public_key()
        );
        let other = key().public_key();
        assert_eq!(
            verify_upgrade(&read.manifest_bytes, &read.signature, std::slice::from_ref(&other)),
            Err(UpgradeError::Untrusted { tried: 1 })
        );
        assert_eq!(verify_upgrade(&read.manifest_bytes, &read.signature, &[]), Err(UpgradeError::NoTrustedKeys));
        // A changed manifest breaks the signature.
        let changed = String::from_utf8(read.manifest_bytes.clone()).unwrap().replace("v0.2.0", "v0.3.0");
        assert!(verify_upgrade(changed.as_bytes(), &read.signature, &[signer.public_key()]).is_err());
        // A plugin signature over the same bytes is not an upgrade signature.
        let plugin_sig = signer.sign(b"", &read.manifest_bytes).to_file_bytes();
        assert!(verify_upgrade(&read.manifest_bytes, &plugin_sig, &[signer.public_key()]).is_err());
        let err = verify_upgrade(&read.manifest_bytes, b"zz", &[signer.public_key()]).unwrap_err().to_string();
        assert!(err.starts_with("malformed upgrade.sig: byte 0"), "{err}");
    }

    #[test]
    fn manifests_are_strict_and_name_the_field() {
        let good = UpgradeManifest::describe("v1", "x86_64", b"k", b"i").render();
        assert_eq!(UpgradeManifest::parse(good.as_bytes()).unwrap().initrd.size, 1);
        for (text, want) in [
            (good.replace("release = \"v1\"", "release = \"v1 \\u001b[2J\""), "release"),
            (good.replace("arch = \"x86_64\"", "arch = \"x86-64!\""), "arch"),
            (good.replacen("size = 1", "size = 0", 1), "kernel.size 0"),
            (good.replacen("sha256 = \"", "sha256 = \"X", 1), "kernel.sha256: expected 64 lowercase hex digits"),
            (format!("{good}extra = 1\n"), "unknown field"),
            ("x".repeat(MAX_UPGRADE_MANIFEST_BYTES + 1), "more than 4096"),
        ] {
            let err = UpgradeManifest::parse(text.as_bytes()).unwrap_err().to_string();
            assert!(err.starts_with("upgrade.toml: ") && err.contains(want), "{want}: {err}");
            assert!(!err.contains('\u{1b}'), "{err}");
        }
    }

    #[test]
    fn bad_tars_are_refused_naming_what_is_wrong() {
        let signer = key();
        let bundle = UpgradeBundle::create("v1", "x86_64", vec![1; 4000], vec![2; 3000], &signer);
        let tar = bundle.to_tar();
        // Truncated in the initramfs.
        let err = UpgradeBundle::from_tar(&tar[..tar.len() - 3000]).unwrap_err().to_string();
        assert!(err.contains("initrd"), "{err}");
        // A part that does not match its digest.
        let mut tampered = bundle.clone();
        tampered.kernel[0] ^= 1;
        let err = UpgradeBundle::from_tar(tampered.to_tar().as_slice()).unwrap_err().to_string();
        assert!(err.contains("vmlinuz is 4000 bytes with sha256") && err.contains("upgrade.toml says"), "{err}");
        // Larger than declared.
        let mut longer = bundle.clone();
        longer.initrd.push(0);
        let err = UpgradeBundle::from_tar(longer.to_tar().as_slice()).unwrap_err().to_string();
        assert!(err.contains("initrd is 3001 bytes, more than 3000"), "{err}");
        // Not a tar at all.
        assert!(UpgradeBundle::from_tar(&b"hello"[..]).is_err());
    }
}
