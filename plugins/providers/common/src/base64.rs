//! Standard base64 (RFC 4648 §4), as metadata services serve user data: the
//! `base64` crate's standard alphabet, ASCII white space (line breaks)
//! skipped, padding optional, unused trailing bits ignored. The providers'
//! one decoder.

use base64::engine::{DecodePaddingMode, GeneralPurpose, GeneralPurposeConfig};
use base64::{DecodeError, Engine as _};

const LENIENT: GeneralPurpose = GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    GeneralPurposeConfig::new()
        .with_decode_padding_mode(DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// The bytes `text` encodes, or the offset in `text` of the first byte that
/// makes it invalid (a byte outside the alphabet, padding before the end, a
/// dangling last symbol).
pub fn decode(text: &[u8]) -> Result<Vec<u8>, usize> {
    let (symbols, offsets): (Vec<u8>, Vec<usize>) =
        text.iter().enumerate().filter(|(_, b)| !b.is_ascii_whitespace()).map(|(at, b)| (*b, at)).unzip();
    LENIENT.decode(&symbols).map_err(|e| {
        let at = match e {
            DecodeError::InvalidByte(at, _) | DecodeError::InvalidLastSymbol(at, _) => at,
            DecodeError::InvalidLength(len) => len.saturating_sub(1),
            DecodeError::InvalidPadding => symbols.iter().position(|b| *b == b'=').unwrap_or(0),
        };
        offsets.get(at).copied().unwrap_or(text.len())
    })
}

/// The bytes `text` encodes when it is padded base64 through and through
/// (its symbols a multiple of four, at least one), else `None`: for a
/// service that serves user data either as it is or encoded, and says not
/// which.
pub fn decode_padded(text: &[u8]) -> Option<Vec<u8>> {
    let symbols = text.iter().filter(|b| !b.is_ascii_whitespace()).count();
    if symbols == 0 || !symbols.is_multiple_of(4) {
        return None;
    }
    decode(text).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc_4648_vectors_padded_or_not_with_line_breaks() {
        for (plain, encoded) in [
            ("", ""),
            ("f", "Zg=="),
            ("fo", "Zm8="),
            ("foo", "Zm9v"),
            ("foob", "Zm9vYg=="),
            ("fooba", "Zm9vYmE="),
            ("foobar", "Zm9vYmFy"),
        ] {
            assert_eq!(decode(encoded.as_bytes()).unwrap(), plain.as_bytes(), "{encoded}");
            let unpadded = encoded.trim_end_matches('=');
            assert_eq!(decode(unpadded.as_bytes()).unwrap(), plain.as_bytes(), "{unpadded}");
        }
        assert_eq!(decode(b"Zm9v\r\nYmFy\n").unwrap(), b"foobar");
        assert_eq!(decode(b" I2Nsb3Vk\tLWNvbmZpZwo= ").unwrap(), b"#cloud-config\n");
        // Unused bits in the last symbol are ignored, as most decoders do.
        assert_eq!(decode(b"Zh==").unwrap(), b"f");
    }

    #[test]
    fn errors_name_the_offending_byte_in_the_text_as_served() {
        assert_eq!(decode(b"Zm9v\nYm!y"), Err(7));
        assert_eq!(decode(b"Zm9v:"), Err(4));
        assert_eq!(decode(b"Zg==Zg=="), Err(2), "padding with data after it");
        assert_eq!(decode(b"Zm9vY"), Err(4), "a lone last symbol");
        assert_eq!(decode(b"Z\n\n\n"), Err(0));
        assert_eq!(decode("Zm9vé".as_bytes()), Err(4));
    }

    #[test]
    fn padded_base64_is_told_from_plain_text() {
        assert_eq!(decode_padded(b"I2Nsb3VkLWNvbmZpZwo=\n").unwrap(), b"#cloud-config\n");
        assert_eq!(decode_padded(b"#cloud-config\nhostname: x\n"), None);
        assert_eq!(decode_padded(b"Zm9v"), Some(b"foo".to_vec()));
        assert_eq!(decode_padded(b"Zm9vY"), None, "not a multiple of four");
        assert_eq!(decode_padded(b"\n"), None);
    }
}
