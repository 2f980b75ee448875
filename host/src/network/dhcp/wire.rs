//! The first look at a server's datagram, before the codec sees it.
//!
//! `dhcproto` trusts lengths in places: `Message::chaddr()` slices by
//! `hlen` (a reply with `hlen` 17 panics), fixed-size options are read at
//! their size whatever their length byte says (desynchronising the rest,
//! and a `debug_assert!` panics in debug builds), and a text option that is
//! not UTF-8 stops option parsing. So the header is checked here, and the
//! options are rebuilt: only those the client uses, each with a length
//! that fits its type, long options (RFC 3396) joined, text made UTF-8.
//! Everything else (including option overload, 52) is dropped.

use super::machine::Rejected;
use std::collections::BTreeMap;

/// BOOTP header length up to the options, with the magic cookie.
pub const HEADER: usize = 240;
const MAGIC: [u8; 4] = [99, 130, 83, 99];

/// Options kept, with the lengths each may have.
fn allowed(code: u8, len: usize) -> Option<bool> {
    Some(match code {
        // subnet mask, requested address, server identifier
        1 | 50 | 54 => len == 4,
        // routers, DNS servers, NTP servers
        3 | 6 | 42 => len > 0 && len.is_multiple_of(4),
        // hostname, domain name, message, domain search, classless routes
        12 | 15 | 56 | 119 | 121 => len > 0,
        // interface MTU, maximum message size
        26 | 57 => len == 2,
        // lease time, T1, T2
        51 | 58 | 59 => len == 4,
        // message type
        53 => len == 1,
        _ => return None,
    })
}

/// The header checks that need no decoding: op BOOTREPLY, an Ethernet
/// `hlen` of 6, `mac` in `chaddr`, the magic cookie.
pub fn check_header(bytes: &[u8], mac: &[u8; 6]) -> Result<(), Rejected> {
    if bytes.len() < HEADER {
        return Err(Rejected::Malformed {
            len: bytes.len(),
            message: format!("shorter than the {HEADER}-byte header"),
        });
    }
    if bytes[0] != 2 {
        return Err(Rejected::NotAReply { op: bytes[0].to_string() });
    }
    let got = &bytes[28..28 + 16];
    if bytes[2] != 6 || got[..6] != mac[..] {
        let got = got.iter().take(usize::from(bytes[2]).min(16)).map(|b| format!("{b:02x}")).collect::<Vec<_>>();
        return Err(Rejected::WrongHardwareAddress {
            expected: super::lease::mac_text(mac),
            got: if bytes[2] == 6 { got.join(":") } else { format!("{} (hlen {})", got.join(":"), bytes[2]) },
        });
    }
    if bytes[236..HEADER] != MAGIC {
        return Err(Rejected::Malformed { len: bytes.len(), message: "no DHCP magic cookie".into() });
    }
    Ok(())
}

/// `bytes` (already through [`check_header`]) with its options rebuilt
/// as described in the module docs.
pub fn sanitize(bytes: &[u8]) -> Result<Vec<u8>, Rejected> {
    let malformed = |message: String| Rejected::Malformed { len: bytes.len(), message };
    let mut options: BTreeMap<u8, Vec<u8>> = BTreeMap::new();
    let mut i = HEADER;
    while i < bytes.len() {
        let code = bytes[i];
        match code {
            0 => {
                i += 1;
                continue;
            }
            255 => break,
            _ => {}
        }
        let Some(&len) = bytes.get(i + 1) else {
            return Err(malformed(format!("option {code} at byte {i} has no length")));
        };
        let end = i + 2 + usize::from(len);
        let Some(data) = bytes.get(i + 2..end) else {
            return Err(malformed(format!("option {code} at byte {i} runs past the end")));
        };
        // Repeated options are one long option (RFC 3396).
        if allowed(code, 0).is_some() {
            options.entry(code).or_default().extend_from_slice(data);
        }
        i = end;
    }
    let mut out = Vec::with_capacity(bytes.len());
    out.extend_from_slice(&bytes[..HEADER]);
    for (code, mut data) in options {
        if allowed(code, data.len()) != Some(true) {
            return Err(Rejected::BadOptionLength { code, len: data.len() });
        }
        if matches!(code, 12 | 15 | 56) {
            // Trailing NULs are common; other bytes that are not UTF-8 become U+FFFD.
            while data.last() == Some(&0) {
                data.pop();
            }
            if data.is_empty() {
                continue;
            }
            data = String::from_utf8_lossy(&data).into_owned().into_bytes();
        }
        for chunk in data.chunks(255) {
            out.push(code);
            out.push(chunk.len() as u8);
            out.extend_from_slice(chunk);
        }
    }
    out.push(255);
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const MAC: [u8; 6] = [2, 0, 0, 0, 0, 0x2a];

    fn packet(options: &[u8]) -> Vec<u8> {
        let mut p = vec![0u8; HEADER];
        p[0] = 2;
        p[1] = 1;
        p[2] = 6;
        p[28..34].copy_from_slice(&MAC);
        p[236..240].copy_from_slice(&MAGIC);
        p.extend_from_slice(options);
        p
    }

    #[test]
    fn headers_that_would_trip_the_codec_are_refused() {
        let mut p = packet(&[255]);
        p[2] = 17;
        assert_eq!(
            check_header(&p, &MAC).unwrap_err().to_string(),
            "chaddr 02:00:00:00:00:2a:00:00:00:00:00:00:00:00:00:00 (hlen 17) is not this link's 02:00:00:00:00:2a"
        );
        let mut p = packet(&[255]);
        p[236] = 0;
        assert_eq!(
            check_header(&p, &MAC).unwrap_err().to_string(),
            "cannot decode a DHCP message of 241 bytes: no DHCP magic cookie"
        );
        assert!(check_header(&packet(&[255])[..239], &MAC).is_err());
        assert!(check_header(&packet(&[255]), &MAC).is_ok());
    }

    #[test]
    fn options_are_kept_joined_checked_and_made_utf8() {
        // Lease time, a long option 121 in two parts, a hostname with bad UTF-8 and NULs, an unknown option.
        let mut opts =
            vec![51, 4, 0, 0, 0, 120, 121, 3, 8, 10, 0, 121, 4, 10, 0, 0, 1, 12, 4, b'a', 0xff, 0, 0, 200, 2, 1, 2];
        opts.push(255);
        let out = sanitize(&packet(&opts)).unwrap();
        assert_eq!(
            &out[HEADER..],
            &[12, 4, b'a', 0xef, 0xbf, 0xbd, 51, 4, 0, 0, 0, 120, 121, 7, 8, 10, 0, 10, 0, 0, 1, 255]
        );
        // A lease time of 2 bytes would be read as 4 by the codec.
        assert_eq!(
            sanitize(&packet(&[51, 2, 0, 1, 255])).unwrap_err().to_string(),
            "option 51 has 2 bytes, not a length its type allows"
        );
        assert_eq!(
            sanitize(&packet(&[53, 1, 5, 3, 9, 255])).unwrap_err().to_string(),
            "cannot decode a DHCP message of 246 bytes: option 3 at byte 243 runs past the end"
        );
        // More than 255 bytes are split again into consecutive parts.
        let mut long = Vec::new();
        for _ in 0..3 {
            long.extend_from_slice(&[6, 200]);
            long.extend(std::iter::repeat_n(10u8, 200));
        }
        let out = sanitize(&packet(&long)).unwrap();
        assert_eq!((out[HEADER], out[HEADER + 1]), (6, 255));
        assert_eq!((out[HEADER + 257], out[HEADER + 258]), (6, 255));
        assert_eq!((out[HEADER + 514], out[HEADER + 515]), (6, 90));
    }
}
