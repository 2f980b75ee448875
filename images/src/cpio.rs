//! The newc ("SVR4, no CRC") cpio format the kernel unpacks as an initramfs: a
//! streaming writer and a strict parser.
//!
//! Each entry is a 110-byte ASCII header (magic `070701`, then 13 fields of 8 hex
//! digits), the NUL-terminated name padded to a multiple of 4 bytes (counting the
//! header), then the data padded to a multiple of 4. The archive ends with an entry
//! named `TRAILER!!!`. The writer takes every header field from the caller: choosing
//! inode numbers, owners and mtimes that do not depend on the build machine is
//! [`crate::initramfs`]'s job. The parser exists to check the writer (tests) and to
//! inspect images; it rejects anything the writer would not produce.

use crate::{Error, Result};
use std::io::{self, Read, Write};

/// The magic of a newc header.
pub const NEWC_MAGIC: &[u8; 6] = b"070701";
/// The name of the last entry of every archive.
pub const TRAILER: &str = "TRAILER!!!";
/// The size of a newc header in bytes.
pub const HEADER_LEN: usize = 110;

/// File type bits of `mode` (as in `st_mode`).
pub const S_IFMT: u32 = 0o170_000;
/// A directory.
pub const S_IFDIR: u32 = 0o040_000;
/// A regular file.
pub const S_IFREG: u32 = 0o100_000;
/// A symbolic link (the data is the target).
pub const S_IFLNK: u32 = 0o120_000;
/// A character device.
pub const S_IFCHR: u32 = 0o020_000;

/// The header of one newc entry, minus the name and data sizes (derived from the
/// name and the data given to the writer).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    /// Inode number. The kernel links regular files with `nlink >= 2` and equal
    /// inode numbers as hard links, so they must be unique otherwise.
    pub ino: u32,
    /// File type and permission bits.
    pub mode: u32,
    /// Owner.
    pub uid: u32,
    /// Group.
    pub gid: u32,
    /// Link count.
    pub nlink: u32,
    /// Modification time, seconds since the epoch.
    pub mtime: u32,
    /// Major number of the device holding the file.
    pub dev_major: u32,
    /// Minor number of the device holding the file.
    pub dev_minor: u32,
    /// Major number of a device node.
    pub rdev_major: u32,
    /// Minor number of a device node.
    pub rdev_minor: u32,
}

/// Writes a newc archive entry by entry to any [`Write`].
#[derive(Debug)]
pub struct NewcWriter<W: Write> {
    inner: W,
    written: u64,
}

impl<W: Write> NewcWriter<W> {
    /// Starts an archive.
    pub fn new(inner: W) -> Self {
        NewcWriter { inner, written: 0 }
    }

    /// Appends an entry whose data (exactly `size` bytes) is read from `data`.
    ///
    /// Fails, naming the entry, if the name cannot be stored or `data` yields a
    /// different number of bytes (a file that changed while being archived).
    pub fn append(&mut self, name: &str, header: &Header, size: u64, data: &mut dyn Read) -> Result<()> {
        let entry_error = |reason: String| Error::Entry { name: name.to_string(), reason };
        if name.is_empty() || name.contains('\0') {
            return Err(entry_error("names must be non-empty and contain no NUL".into()));
        }
        let filesize =
            u32::try_from(size).map_err(|_| entry_error(format!("{size} bytes exceed newc's 4 GiB limit")))?;
        let namesize = u32::try_from(name.len() + 1).map_err(|_| entry_error("name too long".into()))?;
        let fields = [
            header.ino,
            header.mode,
            header.uid,
            header.gid,
            header.nlink,
            header.mtime,
            filesize,
            header.dev_major,
            header.dev_minor,
            header.rdev_major,
            header.rdev_minor,
            namesize,
            0, // check: only used by the "070702" CRC variant
        ];
        let mut head = Vec::with_capacity(HEADER_LEN + name.len() + 4);
        head.extend_from_slice(NEWC_MAGIC);
        for field in fields {
            head.extend_from_slice(format!("{field:08x}").as_bytes());
        }
        head.extend_from_slice(name.as_bytes());
        head.push(0);
        head.resize(head.len() + padding(head.len()), 0);
        self.write_raw(&head).map_err(|e| entry_error(format!("cannot write header: {e}")))?;

        let copied = io::copy(&mut data.take(size), &mut self.inner)
            .map_err(|e| entry_error(format!("cannot copy data: {e}")))?;
        if copied != size {
            return Err(entry_error(format!("expected {size} bytes of data, got {copied}")));
        }
        self.written += copied;
        // A data source longer than announced has also changed under us.
        let mut probe = [0u8; 1];
        if data.read(&mut probe).map_err(|e| entry_error(format!("cannot read data: {e}")))? != 0 {
            return Err(entry_error(format!("data is longer than the announced {size} bytes")));
        }
        let pad = [0u8; 3];
        let pad_len = padding_u64(self.written);
        self.write_raw(&pad[..pad_len]).map_err(|e| entry_error(format!("cannot write padding: {e}")))?;
        Ok(())
    }

    /// Writes the trailer entry and returns the underlying writer (flushed).
    pub fn finish(mut self) -> Result<W> {
        let header = Header { nlink: 1, ..Header::default() };
        self.append(TRAILER, &header, 0, &mut io::empty())?;
        self.inner.flush().map_err(|e| Error::Entry { name: TRAILER.into(), reason: format!("cannot flush: {e}") })?;
        Ok(self.inner)
    }

    fn write_raw(&mut self, bytes: &[u8]) -> io::Result<()> {
        self.inner.write_all(bytes)?;
        self.written += bytes.len() as u64;
        Ok(())
    }
}

/// Bytes needed after `len` bytes to reach a multiple of 4.
fn padding(len: usize) -> usize {
    (4 - len % 4) % 4
}

fn padding_u64(len: u64) -> usize {
    // The remainder of a division by 4 always fits.
    ((4 - len % 4) % 4) as usize
}

/// One entry read back from an archive.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The path inside the archive (no leading `/`).
    pub name: String,
    /// The header fields.
    pub header: Header,
    /// The data (file contents, or a symlink's target).
    pub data: Vec<u8>,
}

/// Parses a whole uncompressed newc archive, up to and excluding the trailer.
///
/// Strict: every header must have the newc magic and hex fields, the `check` field
/// must be 0, names must be NUL-terminated UTF-8, padding must be zero bytes, the
/// trailer must be present, and only zero bytes may follow it.
pub fn parse(bytes: &[u8]) -> Result<Vec<Entry>> {
    let mut entries = Vec::new();
    let mut pos = 0usize;
    loop {
        let start = pos;
        let bad = |offset: usize, reason: String| Error::Newc { offset, reason };
        let head = bytes.get(pos..pos + HEADER_LEN).ok_or_else(|| bad(start, "truncated header".into()))?;
        if &head[..6] != NEWC_MAGIC {
            return Err(bad(start, format!("magic {:?}, expected \"070701\"", String::from_utf8_lossy(&head[..6]))));
        }
        let mut fields = [0u32; 13];
        for (i, field) in fields.iter_mut().enumerate() {
            let text = &head[6 + 8 * i..14 + 8 * i];
            let text =
                std::str::from_utf8(text).map_err(|_| bad(start + 6 + 8 * i, "non-ASCII header field".into()))?;
            *field = u32::from_str_radix(text, 16)
                .map_err(|_| bad(start + 6 + 8 * i, format!("header field {i} {text:?} is not hex")))?;
        }
        let [
            ino,
            mode,
            uid,
            gid,
            nlink,
            mtime,
            filesize,
            dev_major,
            dev_minor,
            rdev_major,
            rdev_minor,
            namesize,
            check,
        ] = fields;
        if check != 0 {
            return Err(bad(start + 102, format!("check field is {check:#x}, expected 0 in newc")));
        }
        pos += HEADER_LEN;
        let namesize = namesize as usize;
        if namesize == 0 {
            return Err(bad(pos, "name size 0".into()));
        }
        let raw_name = bytes.get(pos..pos + namesize).ok_or_else(|| bad(pos, "truncated name".into()))?;
        let (last, name_bytes) = raw_name.split_last().ok_or_else(|| bad(pos, "empty name".into()))?;
        if *last != 0 || name_bytes.contains(&0) {
            return Err(bad(pos, "name is not a single NUL-terminated string".into()));
        }
        let name = std::str::from_utf8(name_bytes).map_err(|_| bad(pos, "name is not UTF-8".into()))?.to_string();
        pos += namesize;
        pos = skip_padding(bytes, pos)?;
        let size = filesize as usize;
        let data = bytes.get(pos..pos + size).ok_or_else(|| bad(pos, format!("truncated data of {name}")))?.to_vec();
        pos += size;
        pos = skip_padding(bytes, pos)?;
        if name == TRAILER {
            if let Some(extra) = bytes[pos..].iter().position(|&b| b != 0) {
                return Err(bad(pos + extra, "non-zero bytes after the trailer".into()));
            }
            return Ok(entries);
        }
        let header = Header { ino, mode, uid, gid, nlink, mtime, dev_major, dev_minor, rdev_major, rdev_minor };
        entries.push(Entry { name, header, data });
    }
}

/// Checks that the padding after `pos` is zero bytes and returns the aligned offset.
fn skip_padding(bytes: &[u8], pos: usize) -> Result<usize> {
    let end = pos + padding(pos);
    let pad = bytes.get(pos..end).ok_or_else(|| Error::Newc { offset: pos, reason: "truncated padding".into() })?;
    if pad.iter().any(|&b| b != 0) {
        return Err(Error::Newc { offset: pos, reason: "non-zero padding".into() });
    }
    Ok(end)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(entries: &[(&str, Header, &[u8])]) -> Vec<u8> {
        let mut writer = NewcWriter::new(Vec::new());
        for (name, header, data) in entries {
            writer.append(name, header, data.len() as u64, &mut &data[..]).unwrap();
        }
        writer.finish().unwrap()
    }

    #[test]
    fn header_layout_matches_newc() {
        let header = Header { ino: 1, mode: S_IFREG | 0o644, nlink: 1, mtime: 0x5f5e100, ..Header::default() };
        let bytes = archive(&[("init", header, b"hello")]);
        let text = String::from_utf8_lossy(&bytes[..HEADER_LEN]).into_owned();
        assert_eq!(
            text,
            "070701\
             00000001\
             000081a4\
             00000000\
             00000000\
             00000001\
             05f5e100\
             00000005\
             00000000\
             00000000\
             00000000\
             00000000\
             00000005\
             00000000"
        );
        // 110 + "init\0" = 115 → padded to 116; data 5 → padded to 8.
        assert_eq!(&bytes[110..116], b"init\0\0");
        assert_eq!(&bytes[116..124], b"hello\0\0\0");
        assert_eq!(&bytes[124..130], NEWC_MAGIC);
        assert_eq!(bytes.len() % 4, 0);
    }

    #[test]
    fn parse_round_trips_every_padding_case() {
        // Name lengths 1..=4 and data lengths 0..=4 cover every padding remainder.
        let names = ["a", "ab", "abc", "abcd"];
        let datas: [&[u8]; 5] = [b"", b"1", b"12", b"123", b"1234"];
        let mut input = Vec::new();
        let mut ino = 1;
        for name in names {
            for data in datas {
                let header = Header { ino, mode: S_IFREG | 0o600, nlink: 1, mtime: 7, ..Header::default() };
                input.push((format!("{name}/{}", data.len()), header, data));
                ino += 1;
            }
        }
        let refs: Vec<(&str, Header, &[u8])> = input.iter().map(|(n, h, d)| (n.as_str(), *h, *d)).collect();
        let parsed = parse(&archive(&refs)).unwrap();
        assert_eq!(parsed.len(), input.len());
        for (entry, (name, header, data)) in parsed.iter().zip(&input) {
            assert_eq!(&entry.name, name);
            assert_eq!(&entry.header, header);
            assert_eq!(entry.data, *data);
        }
    }

    #[test]
    fn device_fields_survive() {
        let header =
            Header { ino: 3, mode: S_IFCHR | 0o600, nlink: 1, rdev_major: 5, rdev_minor: 1, ..Header::default() };
        let parsed = parse(&archive(&[("dev/console", header, b"")])).unwrap();
        assert_eq!(parsed[0].header.rdev_major, 5);
        assert_eq!(parsed[0].header.rdev_minor, 1);
        assert_eq!(parsed[0].header.mode & S_IFMT, S_IFCHR);
    }

    #[test]
    fn writer_rejects_data_of_the_wrong_length() {
        let mut writer = NewcWriter::new(Vec::new());
        let err = writer.append("f", &Header::default(), 4, &mut &b"abc"[..]).unwrap_err();
        assert_eq!(err.to_string(), "initramfs entry f: expected 4 bytes of data, got 3");
        let mut writer = NewcWriter::new(Vec::new());
        let err = writer.append("f", &Header::default(), 2, &mut &b"abc"[..]).unwrap_err();
        assert_eq!(err.to_string(), "initramfs entry f: data is longer than the announced 2 bytes");
    }

    #[test]
    fn parser_rejects_damage() {
        // "xy\0" ends at byte 113: bytes 113..116 are padding.
        let good = archive(&[("xy", Header { nlink: 1, ..Header::default() }, b"data")]);
        let mut bad_magic = good.clone();
        bad_magic[5] = b'2';
        assert!(parse(&bad_magic).unwrap_err().to_string().contains("magic"));
        let mut bad_pad = good.clone();
        bad_pad[HEADER_LEN + 4] = b'z';
        assert!(parse(&bad_pad).unwrap_err().to_string().contains("non-zero padding"));
        assert!(parse(&good[..good.len() - 8]).is_err(), "a truncated archive has no trailer");
        let mut trailing = good.clone();
        trailing.extend_from_slice(b"junk");
        assert!(parse(&trailing).unwrap_err().to_string().contains("after the trailer"));
        let mut zero_padded = good;
        zero_padded.extend_from_slice(&[0; 512]);
        assert_eq!(parse(&zero_padded).unwrap().len(), 1);
    }
}
