//! Private keys: the two key types Bronze makes, generating them as PKCS#8
//! v1 (RFC 5208) documents, and reading the encodings other tools and
//! older Bronze versions wrote.
//!
//! v1 matters: ring writes Ed25519 keys as PKCS#8 v2 (RFC 5958, with the
//! public key attached), which OpenSSL 3.0 ("unsupported") and gRPC core
//! ("invalid private key") refuse. Every key this crate hands out is v1;
//! every v1 or v2 document, and SEC1 "EC PRIVATE KEY", is still read.

use std::fmt;
use std::str::FromStr;

use rcgen::{KeyPair, PKCS_ECDSA_P256_SHA256, PKCS_ED25519, SignatureAlgorithm};
use ring::rand::{SecureRandom, SystemRandom};
use rustls_pki_types::pem::PemObject;
use rustls_pki_types::{PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::PkiError;

/// The key algorithm of a CA or certificate Bronze makes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum KeyType {
    /// ECDSA on P-256 with SHA-256: the default, offered by every TLS stack
    /// (OpenSSL, BoringSSL in gRPC core, Go, Java, rustls).
    #[default]
    EcdsaP256,
    /// Ed25519: small and fast, but gRPC core's BoringSSL does not offer it
    /// by default, so Python/C++/Ruby gRPC clients fail the handshake against
    /// an Ed25519 server certificate.
    Ed25519,
}

impl KeyType {
    pub const ALL: [KeyType; 2] = [KeyType::EcdsaP256, KeyType::Ed25519];

    /// The name on the command line and in messages.
    pub fn as_str(self) -> &'static str {
        match self {
            KeyType::EcdsaP256 => "ecdsa-p256",
            KeyType::Ed25519 => "ed25519",
        }
    }

    /// The key type that follows `key`: Ed25519 for an Ed25519 key, ECDSA
    /// P-256 for anything else (a P-384 or RSA CA still gets P-256 leaves,
    /// which every client can use).
    pub(crate) fn following(key: &KeyPair) -> KeyType {
        if key.algorithm() == &PKCS_ED25519 { KeyType::Ed25519 } else { KeyType::EcdsaP256 }
    }

    /// The signature algorithm rcgen uses for keys of this type.
    fn algorithm(self) -> &'static SignatureAlgorithm {
        match self {
            KeyType::EcdsaP256 => &PKCS_ECDSA_P256_SHA256,
            KeyType::Ed25519 => &PKCS_ED25519,
        }
    }

    /// A fresh key whose `serialize_pem` is a PKCS#8 v1 document.
    pub(crate) fn generate(self) -> Result<KeyPair, PkiError> {
        match self {
            // ring writes ECDSA keys as v1 already (its template carries the
            // public key inside the SEC1 structure, where v1 allows it).
            KeyType::EcdsaP256 => Ok(KeyPair::generate_for(self.algorithm())?),
            KeyType::Ed25519 => {
                let document = generate_ed25519_pkcs8_v1()?;
                let document = PrivatePkcs8KeyDer::from(document.as_slice());
                Ok(KeyPair::from_pkcs8_der_and_sign_algo(&document, self.algorithm())?)
            }
        }
    }
}

impl fmt::Display for KeyType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

impl FromStr for KeyType {
    type Err = PkiError;

    fn from_str(s: &str) -> Result<Self, PkiError> {
        KeyType::ALL.into_iter().find(|t| t.as_str() == s).ok_or_else(|| PkiError::KeyType(s.to_string()))
    }
}

/// DER of a PKCS#8 v1 Ed25519 key up to the seed (RFC 8410 §7):
/// SEQUENCE (46) { INTEGER 0, SEQUENCE (5) { OID 1.3.101.112 },
/// OCTET STRING (34) { OCTET STRING (32) seed } }.
const ED25519_PKCS8_V1_PREFIX: [u8; 16] =
    [0x30, 0x2e, 0x02, 0x01, 0x00, 0x30, 0x05, 0x06, 0x03, 0x2b, 0x65, 0x70, 0x04, 0x22, 0x04, 0x20];

/// The 48-byte PKCS#8 v1 document of the Ed25519 key with `seed`, as
/// `openssl genpkey -algorithm ed25519` writes it.
pub fn ed25519_pkcs8_v1(seed: &[u8; 32]) -> Vec<u8> {
    let mut der = Vec::with_capacity(ED25519_PKCS8_V1_PREFIX.len() + seed.len());
    der.extend_from_slice(&ED25519_PKCS8_V1_PREFIX);
    der.extend_from_slice(seed);
    der
}

/// A fresh random Ed25519 key as a PKCS#8 v1 document.
pub fn generate_ed25519_pkcs8_v1() -> Result<Vec<u8>, PkiError> {
    let mut seed = [0u8; 32];
    SystemRandom::new().fill(&mut seed).map_err(|_| PkiError::Random)?;
    let der = ed25519_pkcs8_v1(&seed);
    seed.fill(0);
    Ok(der)
}

/// id-ecPublicKey (1.2.840.10045.2.1), DER.
const OID_EC_PUBLIC_KEY: &[u8] = &[0x06, 0x07, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x02, 0x01];
/// prime256v1 (1.2.840.10045.3.1.7) and secp384r1 (1.3.132.0.34), DER.
const OID_CURVES: [&[u8]; 2] =
    [&[0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07], &[0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22]];

/// Reads one PEM private key: PKCS#8 v1 or v2 ("PRIVATE KEY") with Ed25519,
/// ECDSA P-256/P-384 or RSA, or SEC1 ("EC PRIVATE KEY", as `openssl ecparam
/// -genkey` writes) on P-256 or P-384.
pub(crate) fn key_pair_from_pem(pem: &str) -> Result<KeyPair, String> {
    let der = PrivateKeyDer::from_pem_slice(pem.as_bytes()).map_err(|e| format!("not a PEM private key: {e}"))?;
    key_pair_from_der(&der)
}

fn key_pair_from_der(der: &PrivateKeyDer<'_>) -> Result<KeyPair, String> {
    match der {
        PrivateKeyDer::Pkcs8(_) => KeyPair::try_from(der).map_err(|e| e.to_string()),
        // ring reads ECDSA keys only inside PKCS#8: wrap the SEC1 structure
        // in a v1 document. ring checks the curve against the parameters a
        // SEC1 key names, so a wrong guess is refused and the next is tried.
        PrivateKeyDer::Sec1(sec1) => OID_CURVES
            .iter()
            .find_map(|curve| KeyPair::try_from(sec1_to_pkcs8(sec1.secret_sec1_der(), curve)).ok())
            .ok_or_else(|| "the EC PRIVATE KEY is not a P-256 or P-384 key".to_string()),
        PrivateKeyDer::Pkcs1(_) => Err("RSA PRIVATE KEY (PKCS#1) is not supported; convert it to PKCS#8".to_string()),
        _ => Err("unsupported private key encoding".to_string()),
    }
}

/// PKCS#8 v1 around a SEC1 ECPrivateKey on the curve with DER OID `curve`.
fn sec1_to_pkcs8(sec1: &[u8], curve: &[u8]) -> Vec<u8> {
    let algorithm = der_tlv(0x30, &[OID_EC_PUBLIC_KEY, curve].concat());
    let body = [&[0x02, 0x01, 0x00][..], &algorithm, &der_tlv(0x04, sec1)].concat();
    der_tlv(0x30, &body)
}

/// A DER tag-length-value.
fn der_tlv(tag: u8, content: &[u8]) -> Vec<u8> {
    let len = content.len();
    let mut out = vec![tag];
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes: Vec<u8> = len.to_be_bytes().into_iter().skip_while(|b| *b == 0).collect();
        out.push(0x80 | bytes.len() as u8);
        out.extend_from_slice(&bytes);
    }
    out.extend_from_slice(content);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The top-level elements of a DER SEQUENCE: (tag, content).
    fn elements(der: &[u8]) -> Vec<(u8, &[u8])> {
        fn tlv(input: &[u8]) -> (u8, &[u8], &[u8]) {
            let (header, len) = match input[1] {
                n if n < 0x80 => (2, n as usize),
                0x81 => (3, input[2] as usize),
                0x82 => (4, u16::from_be_bytes([input[2], input[3]]) as usize),
                other => panic!("unexpected length byte {other:#x}"),
            };
            (input[0], &input[header..header + len], &input[header + len..])
        }
        let (tag, mut rest, trailing) = tlv(der);
        assert_eq!((tag, trailing.len()), (0x30, 0), "not one SEQUENCE");
        let mut out = Vec::new();
        while !rest.is_empty() {
            let (tag, content, next) = tlv(rest);
            out.push((tag, content));
            rest = next;
        }
        out
    }

    /// The PKCS#8 version and whether v2's [1] publicKey is present, as
    /// `openssl asn1parse` shows them at depth 1.
    fn version_and_public_key(der: &[u8]) -> (u8, bool) {
        let elements = elements(der);
        assert_eq!((elements[0].0, elements[0].1.len()), (0x02, 1), "version is not a one-byte INTEGER");
        (elements[0].1[0], elements.iter().any(|(tag, _)| tag & 0xdf == 0x81))
    }

    fn der_of(key: &KeyPair) -> Vec<u8> {
        PrivateKeyDer::from_pem_slice(key.serialize_pem().as_bytes()).unwrap().secret_der().to_vec()
    }

    #[test]
    fn generated_keys_are_pkcs8_v1_without_a_public_key() {
        for key_type in KeyType::ALL {
            let key = key_type.generate().unwrap();
            assert_eq!(key.algorithm(), key_type.algorithm());
            assert_eq!(KeyType::following(&key), key_type);
            let pem = key.serialize_pem();
            assert!(pem.starts_with("-----BEGIN PRIVATE KEY-----\n"), "{pem}");
            assert_eq!(version_and_public_key(&der_of(&key)), (0, false), "{key_type}");
            // And it reads back as the same key.
            let back = key_pair_from_pem(&pem).unwrap();
            assert_eq!(back.public_key_raw(), key.public_key_raw(), "{key_type}");
        }
        assert_eq!(der_of(&KeyType::Ed25519.generate().unwrap()).len(), 48);
    }

    #[test]
    fn ed25519_v1_matches_openssl_for_the_rfc_8032_seed() {
        // `openssl genpkey -algorithm ed25519` output for the seed of RFC 8032
        // test vector 1 (the same document bundle's signing tests read).
        let seed: [u8; 32] = hex::decode("9d61b19deffd5a60ba844af492ec2cc44449c5697b326919703bac031cae7f60")
            .unwrap()
            .try_into()
            .unwrap();
        let pem = "-----BEGIN PRIVATE KEY-----\nMC4CAQAwBQYDK2VwBCIEIJ1hsZ3v/VpguoRK9JLsLMREScVpezJpGXA7rAMcrn9g\n\
                   -----END PRIVATE KEY-----\n";
        let openssl = PrivateKeyDer::from_pem_slice(pem.as_bytes()).unwrap();
        assert_eq!(ed25519_pkcs8_v1(&seed), openssl.secret_der());
        let key = key_pair_from_pem(pem).unwrap();
        assert_eq!(
            hex::encode(key.public_key_raw()),
            "d75a980182b10ab7d54bfed3c964073a0ee172f3daa62325af021a68f707511a"
        );
    }

    #[test]
    fn v2_ed25519_keys_still_read() {
        // What ring (and so rcgen, and older Bronze) writes for Ed25519.
        let old = KeyPair::generate_for(&PKCS_ED25519).unwrap();
        assert_eq!(version_and_public_key(&der_of(&old)), (1, true), "the fixture is no longer v2");
        let back = key_pair_from_pem(&old.serialize_pem()).unwrap();
        assert_eq!(back.public_key_raw(), old.public_key_raw());
        assert_eq!(KeyType::following(&back), KeyType::Ed25519);
    }

    #[test]
    fn sec1_ec_keys_read() {
        let key = KeyType::EcdsaP256.generate().unwrap();
        // The SEC1 ECPrivateKey is the privateKey OCTET STRING of the PKCS#8
        // document: what `openssl ec` would write as "EC PRIVATE KEY".
        let der = der_of(&key);
        let (tag, sec1) = elements(&der)[2];
        assert_eq!((tag, sec1[0]), (0x04, 0x30), "not an OCTET STRING holding a SEQUENCE");
        let back = key_pair_from_der(&PrivateKeyDer::Sec1(sec1.to_vec().into())).unwrap();
        assert_eq!(back.public_key_raw(), key.public_key_raw());
        assert_eq!(back.algorithm(), &PKCS_ECDSA_P256_SHA256);
        let err = key_pair_from_der(&PrivateKeyDer::Sec1(vec![0x30, 0x00].into())).unwrap_err();
        assert_eq!(err, "the EC PRIVATE KEY is not a P-256 or P-384 key");
    }

    #[test]
    fn unknown_key_types_are_named() {
        assert_eq!("ed25519".parse::<KeyType>().unwrap(), KeyType::Ed25519);
        assert_eq!("ecdsa-p256".parse::<KeyType>().unwrap(), KeyType::EcdsaP256);
        assert_eq!(KeyType::default(), KeyType::EcdsaP256);
        assert_eq!(
            "rsa".parse::<KeyType>().unwrap_err().to_string(),
            "unknown key type \"rsa\": expected ecdsa-p256 or ed25519"
        );
    }

    #[test]
    fn bad_keys_are_refused_with_the_reason() {
        let err = key_pair_from_pem("hello").unwrap_err();
        assert!(err.starts_with("not a PEM private key"), "{err}");
    }
}
