//! Ed25519 bundle signatures. The signed message is
//! `sha256(plugin.wasm) ‖ sha256(plugin.toml)`, so neither file can change
//! (or be swapped for another bundle's) without breaking the signature.

use std::fmt;
use std::io::Write;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as BASE64;
use bronze_config::TrustedKey;
use ring::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};

use crate::sha256;

/// The signature's file name inside a bundle.
pub const SIGNATURE_FILE: &str = "plugin.sig";

/// Size of a well-formed `plugin.sig`: 128 hex characters and a newline.
pub const SIGNATURE_FILE_LEN: usize = 129;

const PEM_LABEL: &str = "PRIVATE KEY";

/// What is signed: both files' digests, 64 bytes.
pub fn signed_message(wasm: &[u8], manifest: &[u8]) -> [u8; 64] {
    let mut message = [0u8; 64];
    message[..32].copy_from_slice(&sha256(wasm));
    message[32..].copy_from_slice(&sha256(manifest));
    message
}

/// An Ed25519 private key for signing bundles.
pub struct SigningKey {
    pair: Ed25519KeyPair,
    /// The PKCS#8 document the pair came from; ring cannot re-export it.
    pkcs8: Vec<u8>,
}

impl fmt::Debug for SigningKey {
    // Never print private key material.
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.debug_struct("SigningKey").field("public_key", &self.public_key().to_string()).finish_non_exhaustive()
    }
}

/// Why a private key could not be made, read or written.
#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("cannot generate a key: the system random number generator failed")]
    Random,
    #[error("not a PEM private key: {0}")]
    Pem(String),
    #[error("the PEM private key is not an Ed25519 PKCS#8 key: {0}")]
    Pkcs8(String),
    #[error("{path} already exists; refusing to overwrite a key")]
    Exists { path: PathBuf },
    #[error("cannot read {path}: {error}")]
    Read { path: PathBuf, error: std::io::Error },
    #[error("cannot write {path}: {error}")]
    Write { path: PathBuf, error: std::io::Error },
    #[error("{path}: {error}")]
    File { path: PathBuf, error: Box<KeyError> },
}

impl SigningKey {
    /// A fresh random key, kept as a PKCS#8 v1 document (the same helper
    /// makes the API's Ed25519 keys) so OpenSSL 3.0 reads the file too.
    pub fn generate() -> Result<SigningKey, KeyError> {
        let document = bronze_pki::keys::generate_ed25519_pkcs8_v1().map_err(|_| KeyError::Random)?;
        SigningKey::from_pkcs8(&document)
    }

    /// From a PKCS#8 document: v1 (as `generate` and `openssl genpkey
    /// -algorithm ed25519` write) or v2 (with the public key, as earlier
    /// Bronze versions wrote).
    pub fn from_pkcs8(der: &[u8]) -> Result<SigningKey, KeyError> {
        let pair = Ed25519KeyPair::from_pkcs8_maybe_unchecked(der).map_err(|e| KeyError::Pkcs8(e.to_string()))?;
        Ok(SigningKey { pair, pkcs8: der.to_vec() })
    }

    /// The PKCS#8 document in a PEM "PRIVATE KEY" block: v1 for generated
    /// keys; a loaded key is written back as it was read.
    pub fn to_pem(&self) -> String {
        pem_encode(PEM_LABEL, &self.pkcs8)
    }

    pub fn from_pem(text: &str) -> Result<SigningKey, KeyError> {
        let der = pem_decode(PEM_LABEL, text).map_err(KeyError::Pem)?;
        SigningKey::from_pkcs8(&der)
    }

    pub fn public_key(&self) -> TrustedKey {
        let bytes: [u8; 32] = self.pair.public_key().as_ref().try_into().expect("Ed25519 public keys are 32 bytes");
        TrustedKey::from_bytes(bytes)
    }

    /// Signs `message` as it is (callers build a message with its own
    /// context: see `upgrade`).
    pub(crate) fn sign_raw(&self, message: &[u8]) -> Signature {
        Signature(self.pair.sign(message).as_ref().try_into().expect("Ed25519 signatures are 64 bytes"))
    }

    pub fn sign(&self, wasm: &[u8], manifest: &[u8]) -> Signature {
        let sig = self.pair.sign(&signed_message(wasm, manifest));
        Signature(sig.as_ref().try_into().expect("Ed25519 signatures are 64 bytes"))
    }

    /// Reads a PEM private key file.
    pub fn read_file(path: &Path) -> Result<SigningKey, KeyError> {
        let text = std::fs::read_to_string(path).map_err(|error| KeyError::Read { path: path.into(), error })?;
        SigningKey::from_pem(&text).map_err(|error| KeyError::File { path: path.into(), error: Box::new(error) })
    }

    /// Writes the private key to `path` (mode 0600) and the public key to
    /// `<path>.pub`; refuses if either exists, so a key is never lost to a
    /// typo. Returns the public key file's path.
    pub fn write_files(&self, path: &Path) -> Result<PathBuf, KeyError> {
        let public_path = public_key_path(path);
        for p in [path, public_path.as_path()] {
            if p.symlink_metadata().is_ok() {
                return Err(KeyError::Exists { path: p.into() });
            }
        }
        write_new(path, self.to_pem().as_bytes(), 0o600)?;
        write_new(&public_path, format!("{}\n", self.public_key()).as_bytes(), 0o644)?;
        Ok(public_path)
    }
}

/// `<path>.pub`.
pub fn public_key_path(path: &Path) -> PathBuf {
    let mut name = path.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Creates `path` (which must not exist) with `mode` and writes `bytes`.
fn write_new(path: &Path, bytes: &[u8], mode: u32) -> Result<(), KeyError> {
    use std::os::unix::fs::OpenOptionsExt;
    let fail = |error: std::io::Error| match error.kind() {
        std::io::ErrorKind::AlreadyExists => KeyError::Exists { path: path.into() },
        _ => KeyError::Write { path: path.into(), error },
    };
    let mut file = std::fs::OpenOptions::new().write(true).create_new(true).mode(mode).open(path).map_err(fail)?;
    file.write_all(bytes).and_then(|()| file.sync_all()).map_err(fail)
}

/// An Ed25519 signature over a bundle.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Signature(pub [u8; 64]);

/// Why a bundle's signature was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("malformed plugin.sig: byte {offset}: {message} (expected 128 lowercase hex characters and a newline)")]
    Malformed { offset: usize, message: String },
    #[error("the bundle is signed but no trusted keys are configured (machine.plugins.trustedKeys is empty)")]
    NoTrustedKeys,
    #[error(
        "the signature does not verify with any trusted key: tried {tried} key{}, none verified (signed by another \
         key, or plugin.wasm or plugin.toml changed after signing)",
        if *.tried == 1 { "" } else { "s" }
    )]
    Untrusted { tried: usize },
}

impl Signature {
    /// Parses `plugin.sig`: 128 lowercase hex characters and one trailing
    /// newline (tolerated when missing).
    pub fn parse(bytes: &[u8]) -> Result<Signature, SignatureError> {
        let malformed = |offset: usize, message: String| SignatureError::Malformed { offset, message };
        let mut sig = [0u8; 64];
        for (i, byte) in sig.iter_mut().enumerate() {
            let mut value = 0u8;
            for offset in [2 * i, 2 * i + 1] {
                let Some(&b) = bytes.get(offset) else {
                    return Err(malformed(offset, "the file ends early".into()));
                };
                let nibble = match b {
                    b'0'..=b'9' => b - b'0',
                    b'a'..=b'f' => b - b'a' + 10,
                    _ => return Err(malformed(offset, format!("{} is not a lowercase hex digit", describe_byte(b)))),
                };
                value = value << 4 | nibble;
            }
            *byte = value;
        }
        match &bytes[128..] {
            [] | [b'\n'] => Ok(Signature(sig)),
            [b'\n', ..] => Err(malformed(129, "unexpected data after the newline".into())),
            [b, ..] => Err(malformed(128, format!("{} after the 128th hex character", describe_byte(*b)))),
        }
    }

    /// The `plugin.sig` file contents.
    pub fn to_file_bytes(&self) -> Vec<u8> {
        format!("{self}\n").into_bytes()
    }
}

fn describe_byte(b: u8) -> String {
    if b.is_ascii_graphic() { format!("{:?}", b as char) } else { format!("byte 0x{b:02x}") }
}

/// Hex, without the trailing newline.
impl fmt::Display for Signature {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(&hex::encode(self.0))
    }
}

/// Checks `signature` (the `plugin.sig` bytes) over the bundle against each
/// trusted key and returns the key that verified.
pub fn verify(
    wasm: &[u8],
    manifest: &[u8],
    signature: &[u8],
    trusted_keys: &[TrustedKey],
) -> Result<TrustedKey, SignatureError> {
    let signature = Signature::parse(signature)?;
    if trusted_keys.is_empty() {
        return Err(SignatureError::NoTrustedKeys);
    }
    let message = signed_message(wasm, manifest);
    trusted_keys
        .iter()
        .find(|key| UnparsedPublicKey::new(&ED25519, key.as_bytes()).verify(&message, &signature.0).is_ok())
        .cloned()
        .ok_or(SignatureError::Untrusted { tried: trusted_keys.len() })
}

/// Line width of PEM base64 bodies (RFC 7468).
const PEM_LINE: usize = 64;

fn pem_encode(label: &str, der: &[u8]) -> String {
    let body = BASE64.encode(der);
    let mut out = format!("-----BEGIN {label}-----\n");
    for line in body.as_bytes().chunks(PEM_LINE) {
        out.push_str(std::str::from_utf8(line).expect("base64 is ASCII"));
        out.push('\n');
    }
    out.push_str(&format!("-----END {label}-----\n"));
    out
}

/// The DER inside the one `label` block of `text`; text around the block
/// (comments, as `openssl` sometimes writes) is ignored.
fn pem_decode(label: &str, text: &str) -> Result<Vec<u8>, String> {
    let begin = format!("-----BEGIN {label}-----");
    let end = format!("-----END {label}-----");
    let start = text.find(&begin).ok_or_else(|| format!("no \"{begin}\" line"))?;
    let rest = &text[start + begin.len()..];
    let stop = rest.find(&end).ok_or_else(|| format!("no \"{end}\" line"))?;
    if rest[stop + end.len()..].contains("-----BEGIN") {
        return Err("more than one PEM block".into());
    }
    let body: String = rest[..stop].split_whitespace().collect();
    BASE64.decode(body.as_bytes()).map_err(|e| format!("bad base64: {e}"))
}

#[cfg(test)]
mod tests {
    use super::*;

    const WASM: &[u8] = b"\0asm\x0d\0\x01\0component bytes";
    const MANIFEST: &[u8] = b"id = \"p\"\nversion = \"1.0.0\"\nworld = \"health-check\"\n";

    #[test]
    fn sign_and_verify_round_trip() {
        let key = SigningKey::generate().unwrap();
        let other = SigningKey::generate().unwrap();
        let sig = key.sign(WASM, MANIFEST).to_file_bytes();
        assert_eq!(sig.len(), SIGNATURE_FILE_LEN);
        assert_eq!(sig.last(), Some(&b'\n'));
        let trusted = [other.public_key(), key.public_key()];
        assert_eq!(verify(WASM, MANIFEST, &sig, &trusted), Ok(key.public_key()));
        // Without the newline too.
        assert_eq!(verify(WASM, MANIFEST, &sig[..128], &trusted), Ok(key.public_key()));
    }

    #[test]
    fn the_signed_message_is_both_digests_in_order() {
        let message = signed_message(WASM, MANIFEST);
        assert_eq!(message[..32], sha256(WASM));
        assert_eq!(message[32..], sha256(MANIFEST));
        // The signature is a plain Ed25519 signature over exactly those 64 bytes.
        let key = SigningKey::generate().unwrap();
        let sig = key.sign(WASM, MANIFEST);
        let public = UnparsedPublicKey::new(&ED25519, *key.public_key().as_bytes());
        assert!(public.verify(&message, &sig.0).is_ok());
        assert!(public.verify(&signed_message(MANIFEST, WASM), &sig.0).is_err());
    }

    #[test]
    fn tampering_is_detected() {
        let key = SigningKey::generate().unwrap();
        let trusted = [key.public_key()];
        let sig = key.sign(WASM, MANIFEST).to_file_bytes();
        let untrusted = Err(SignatureError::Untrusted { tried: 1 });
        let mut wasm = WASM.to_vec();
        wasm[9] ^= 1;
        assert_eq!(verify(&wasm, MANIFEST, &sig, &trusted), untrusted);
        assert_eq!(verify(WASM, b"id = \"q\"", &sig, &trusted), untrusted);
        // Swapping the files must not verify either.
        assert_eq!(verify(MANIFEST, WASM, &sig, &trusted), untrusted);
        let mut flipped = sig.clone();
        flipped[10] = if flipped[10] == b'0' { b'1' } else { b'0' };
        assert_eq!(verify(WASM, MANIFEST, &flipped, &trusted), untrusted);
    }

    #[test]
    fn untrusted_and_missing_keys_are_distinct() {
        let key = SigningKey::generate().unwrap();
        let sig = key.sign(WASM, MANIFEST).to_file_bytes();
        let strangers: Vec<TrustedKey> = (0..3).map(|_| SigningKey::generate().unwrap().public_key()).collect();
        let err = verify(WASM, MANIFEST, &sig, &strangers).unwrap_err();
        assert_eq!(err, SignatureError::Untrusted { tried: 3 });
        assert!(err.to_string().contains("tried 3 keys, none verified"), "{err}");
        let err = verify(WASM, MANIFEST, &sig, &strangers[..1]).unwrap_err().to_string();
        assert!(err.contains("tried 1 key, none verified"), "{err}");
        let err = verify(WASM, MANIFEST, &sig, &[]).unwrap_err();
        assert_eq!(err, SignatureError::NoTrustedKeys);
        assert!(err.to_string().contains("no trusted keys are configured"), "{err}");
    }

    #[test]
    fn malformed_signature_files_name_the_offset() {
        let good = "ab".repeat(64);
        let cases: Vec<(Vec<u8>, usize, &str)> = vec![
            (Vec::new(), 0, "the file ends early"),
            (good.as_bytes()[..100].to_vec(), 100, "the file ends early"),
            (format!("{}G{}", &good[..5], &good[6..]).into_bytes(), 5, "'G' is not a lowercase hex digit"),
            (good.to_uppercase().into_bytes(), 0, "'A' is not a lowercase hex digit"),
            (format!("{good}\n\n").into_bytes(), 129, "unexpected data after the newline"),
            (format!("{good}ab\n").into_bytes(), 128, "'a' after the 128th hex character"),
            (format!("{good}\r\n").into_bytes(), 128, "byte 0x0d after the 128th hex character"),
            (format!(" {}", &good[1..]).into_bytes(), 0, "byte 0x20 is not"),
        ];
        for (bytes, offset, message) in cases {
            match Signature::parse(&bytes) {
                Err(SignatureError::Malformed { offset: o, message: m }) => {
                    assert_eq!(o, offset, "{m}");
                    assert!(m.contains(message), "{m}");
                }
                other => panic!("{:?}: {other:?}", String::from_utf8_lossy(&bytes)),
            }
        }
        let err = verify(WASM, MANIFEST, b"nope", &[]).unwrap_err().to_string();
        assert!(err.starts_with("malformed plugin.sig: byte 0: 'n' is not a lowercase hex digit"), "{err}");
    }

    #[test]
    fn pem_round_trip_keeps_the_key() {
        let key = SigningKey::generate().unwrap();
        let pem = key.to_pem();
        assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
        assert!(pem.ends_with("-----END PRIVATE KEY-----\n"), "{pem}");
        assert!(pem.lines().all(|l| l.len() <= 64));
        let back = SigningKey::from_pem(&pem).unwrap();
        assert_eq!(back.public_key(), key.public_key());
        // Both keys sign identically (Ed25519 is deterministic).
        assert_eq!(back.sign(WASM, MANIFEST), key.sign(WASM, MANIFEST));
        assert!(!format!("{key:?}").contains(&pem[30..60]));
    }

    #[test]
    fn generated_keys_are_pkcs8_v1() {
        let key = SigningKey::generate().unwrap();
        let der = pem_decode(PEM_LABEL, &key.to_pem()).unwrap();
        // SEQUENCE (46) { INTEGER 0, ... }: 48 bytes, version 0, no public key.
        assert_eq!((der.len(), &der[..5]), (48, &[0x30, 0x2e, 0x02, 0x01, 0x00][..]));
    }

    #[test]
    fn accepts_pkcs8_v2_keys() {
        // What `generate` wrote before it wrote v1.
        let document = Ed25519KeyPair::generate_pkcs8(&ring::rand::SystemRandom::new()).unwrap();
        assert_eq!(&document.as_ref()[2..5], &[0x02, 0x01, 0x01], "ring no longer writes v2");
        let key = SigningKey::from_pem(&pem_encode(PEM_LABEL, document.as_ref())).unwrap();
        let pair = Ed25519KeyPair::from_pkcs8(document.as_ref()).unwrap();
        assert_eq!(key.public_key().as_bytes(), pair.public_key().as_ref());
    }

    #[test]
    fn accepts_openssl_pkcs8_v1_keys() {
        // PKCS#8 v1 (seed only), as `openssl genpkey -algorithm ed25519` writes,
        // holding the seed of RFC 8032 test vector 1.
        let v1 = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
                  -----END PRIVATE KEY-----\n";
        let key = SigningKey::from_pem(v1).unwrap();
        // The public key that test vector lists.
        assert_eq!(key.public_key().to_string(), "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a");
    }

    #[test]
    fn bad_pem_is_refused() {
        let cases = [
            ("", "no \"-----BEGIN PRIVATE KEY-----\" line"),
            ("-----BEGIN PRIVATE KEY-----\nAAAA\n", "no \"-----END PRIVATE KEY-----\" line"),
            ("-----BEGIN PRIVATE KEY-----\n!!!!\n-----END PRIVATE KEY-----\n", "bad base64"),
            ("-----BEGIN PRIVATE KEY-----\nAAAA\n-----END PRIVATE KEY-----\n", "not an Ed25519 PKCS#8 key"),
        ];
        for (text, want) in cases {
            let err = SigningKey::from_pem(text).unwrap_err().to_string();
            assert!(err.contains(want), "{text:?}: {err}");
        }
        let key = SigningKey::generate().unwrap().to_pem();
        let err = SigningKey::from_pem(&format!("{key}{key}")).unwrap_err().to_string();
        assert!(err.contains("more than one PEM block"), "{err}");
    }

    #[test]
    fn key_files_are_private_and_never_overwritten() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("signing.pem");
        let key = SigningKey::generate().unwrap();
        let public = key.write_files(&path).unwrap();
        assert_eq!(public, dir.path().join("signing.pem.pub"));
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600);
        assert_eq!(std::fs::read_to_string(&public).unwrap(), format!("{}\n", key.public_key()));
        assert_eq!(SigningKey::read_file(&path).unwrap().public_key(), key.public_key());

        let again = SigningKey::generate().unwrap();
        let err = again.write_files(&path).unwrap_err().to_string();
        assert_eq!(err, format!("{} already exists; refusing to overwrite a key", path.display()));
        assert_eq!(SigningKey::read_file(&path).unwrap().public_key(), key.public_key());
        // A leftover .pub alone also stops it, before the private key is written.
        let other = dir.path().join("other.pem");
        std::fs::write(public_key_path(&other), "x").unwrap();
        assert!(again.write_files(&other).is_err());
        assert!(!other.exists());

        let err = SigningKey::read_file(&public).unwrap_err().to_string();
        assert!(err.starts_with(&format!("{}: not a PEM private key", public.display())), "{err}");
    }
}
