//! Just enough ELF to find one section's bytes by name in a kernel module:
//! the header, the section header table and the section-name string table,
//! 32 or 64 bit, either byte order. Every offset is bounds-checked; a
//! malformed file is an error, never a panic (the input is a file on disk
//! that may be truncated or not an ELF at all).

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ElfError {
    #[error("not an ELF file")]
    NotElf,
    #[error("unsupported ELF class or byte order")]
    Unsupported,
    #[error("truncated or malformed ELF ({0})")]
    Malformed(&'static str),
}

#[derive(Clone, Copy)]
struct Reader<'a> {
    bytes: &'a [u8],
    wide: bool,
    big_endian: bool,
}

impl<'a> Reader<'a> {
    fn slice(&self, at: usize, len: usize, what: &'static str) -> Result<&'a [u8], ElfError> {
        at.checked_add(len).and_then(|end| self.bytes.get(at..end)).ok_or(ElfError::Malformed(what))
    }

    fn u16(&self, at: usize, what: &'static str) -> Result<u64, ElfError> {
        let b: [u8; 2] = self.slice(at, 2, what)?.try_into().map_err(|_| ElfError::Malformed(what))?;
        Ok(u64::from(if self.big_endian { u16::from_be_bytes(b) } else { u16::from_le_bytes(b) }))
    }

    fn u32(&self, at: usize, what: &'static str) -> Result<u64, ElfError> {
        let b: [u8; 4] = self.slice(at, 4, what)?.try_into().map_err(|_| ElfError::Malformed(what))?;
        Ok(u64::from(if self.big_endian { u32::from_be_bytes(b) } else { u32::from_le_bytes(b) }))
    }

    fn u64(&self, at: usize, what: &'static str) -> Result<u64, ElfError> {
        let b: [u8; 8] = self.slice(at, 8, what)?.try_into().map_err(|_| ElfError::Malformed(what))?;
        Ok(if self.big_endian { u64::from_be_bytes(b) } else { u64::from_le_bytes(b) })
    }

    /// A word: 8 bytes in ELF64, 4 in ELF32.
    fn word(&self, at: usize, what: &'static str) -> Result<u64, ElfError> {
        if self.wide { self.u64(at, what) } else { self.u32(at, what) }
    }
}

fn to_usize(v: u64, what: &'static str) -> Result<usize, ElfError> {
    usize::try_from(v).map_err(|_| ElfError::Malformed(what))
}

/// The fields of a section header this parser uses.
struct Section {
    name: u64,
    kind: u64,
    offset: u64,
    size: u64,
    link: u64,
}

/// `SHT_NOBITS`: occupies no file bytes (.bss).
const SHT_NOBITS: u64 = 8;
/// `e_shstrndx` escape: the real index is in section 0's `sh_link`.
const SHN_XINDEX: u64 = 0xffff;

/// The bytes of the first section called `name`, or `None` if there is none.
pub fn section<'a>(bytes: &'a [u8], name: &str) -> Result<Option<&'a [u8]>, ElfError> {
    if bytes.get(..4) != Some(b"\x7fELF") {
        return Err(ElfError::NotElf);
    }
    let (wide, big_endian) = match (bytes.get(4), bytes.get(5)) {
        (Some(1), Some(1)) => (false, false),
        (Some(1), Some(2)) => (false, true),
        (Some(2), Some(1)) => (true, false),
        (Some(2), Some(2)) => (true, true),
        _ => return Err(ElfError::Unsupported),
    };
    let r = Reader { bytes, wide, big_endian };
    // e_shoff, then e_shentsize, e_shnum, e_shstrndx.
    let (shoff_at, rest_at) = if wide { (0x28, 0x3A) } else { (0x20, 0x2E) };
    let shoff = to_usize(r.word(shoff_at, "e_shoff")?, "e_shoff")?;
    let entsize = to_usize(r.u16(rest_at, "e_shentsize")?, "e_shentsize")?;
    let mut count = r.u16(rest_at + 2, "e_shnum")?;
    let mut strndx = r.u16(rest_at + 4, "e_shstrndx")?;
    if shoff == 0 {
        return Ok(None);
    }
    if entsize < if wide { 64 } else { 40 } {
        return Err(ElfError::Malformed("e_shentsize"));
    }
    let header = |i: u64| -> Result<Section, ElfError> {
        let at = to_usize(i, "section index")?
            .checked_mul(entsize)
            .and_then(|o| o.checked_add(shoff))
            .ok_or(ElfError::Malformed("section header offset"))?;
        let (offset, size, link) = if wide {
            (r.u64(at + 24, "sh_offset")?, r.u64(at + 32, "sh_size")?, r.u32(at + 40, "sh_link")?)
        } else {
            (r.u32(at + 16, "sh_offset")?, r.u32(at + 20, "sh_size")?, r.u32(at + 24, "sh_link")?)
        };
        Ok(Section { name: r.u32(at, "sh_name")?, kind: r.u32(at + 4, "sh_type")?, offset, size, link })
    };
    let data = |s: &Section, what: &'static str| -> Result<&'a [u8], ElfError> {
        let len = if s.kind == SHT_NOBITS { 0 } else { to_usize(s.size, what)? };
        r.slice(to_usize(s.offset, what)?, len, what)
    };
    // Extended numbering (more than 0xff00 sections) keeps the real count
    // in section 0's size and the name table index in its link.
    if count == 0 || strndx == SHN_XINDEX {
        let zero = header(0)?;
        if count == 0 {
            count = zero.size;
        }
        if strndx == SHN_XINDEX {
            strndx = zero.link;
        }
    }
    // The whole table must be there, not just the fields read.
    to_usize(count, "e_shnum")?
        .checked_mul(entsize)
        .and_then(|len| r.slice(shoff, len, "section headers").ok())
        .ok_or(ElfError::Malformed("section headers"))?;
    let strtab = data(&header(strndx)?, "section name table")?;
    for i in 1..count {
        let s = header(i)?;
        let Some(raw) = to_usize(s.name, "sh_name").ok().and_then(|at| strtab.get(at..)) else { continue };
        let end = raw.iter().position(|&b| b == 0).unwrap_or(raw.len());
        if &raw[..end] == name.as_bytes() {
            return data(&s, "section data").map(Some);
        }
    }
    Ok(None)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;

    /// A minimal relocatable ELF64 little-endian file with the named
    /// sections (plus the null section and `.shstrtab`), laid out as:
    /// header | section data | names | padding | section headers.
    pub(crate) fn elf64(sections: &[(&str, &[u8])]) -> Vec<u8> {
        let mut out = vec![0u8; 64];
        out[..4].copy_from_slice(b"\x7fELF");
        out[4] = 2; // ELFCLASS64
        out[5] = 1; // ELFDATA2LSB
        out[6] = 1; // EV_CURRENT
        out[16..18].copy_from_slice(&1u16.to_le_bytes()); // ET_REL
        out[18..20].copy_from_slice(&62u16.to_le_bytes()); // EM_X86_64
        out[20..24].copy_from_slice(&1u32.to_le_bytes());
        out[52..54].copy_from_slice(&64u16.to_le_bytes()); // e_ehsize

        let mut names = vec![0u8];
        let mut headers: Vec<(u32, u32, u64, u64)> = vec![(0, 0, 0, 0)];
        for (name, data) in sections {
            let name_at = names.len() as u32;
            names.extend_from_slice(name.as_bytes());
            names.push(0);
            headers.push((name_at, 1 /* SHT_PROGBITS */, out.len() as u64, data.len() as u64));
            out.extend_from_slice(data);
        }
        let shstrtab_name = names.len() as u32;
        names.extend_from_slice(b".shstrtab\0");
        headers.push((shstrtab_name, 3 /* SHT_STRTAB */, out.len() as u64, names.len() as u64));
        out.extend_from_slice(&names);
        while !out.len().is_multiple_of(8) {
            out.push(0);
        }
        let shoff = out.len() as u64;
        for (name, kind, offset, size) in &headers {
            let mut h = [0u8; 64];
            h[0..4].copy_from_slice(&name.to_le_bytes());
            h[4..8].copy_from_slice(&kind.to_le_bytes());
            h[24..32].copy_from_slice(&offset.to_le_bytes());
            h[32..40].copy_from_slice(&size.to_le_bytes());
            h[48..56].copy_from_slice(&1u64.to_le_bytes());
            out.extend_from_slice(&h);
        }
        out[0x28..0x30].copy_from_slice(&shoff.to_le_bytes());
        out[0x3A..0x3C].copy_from_slice(&64u16.to_le_bytes());
        out[0x3C..0x3E].copy_from_slice(&(headers.len() as u16).to_le_bytes());
        out[0x3E..0x40].copy_from_slice(&((headers.len() - 1) as u16).to_le_bytes());
        out
    }

    #[test]
    fn finds_a_section_by_name() {
        let elf = elf64(&[(".text", b"\x90\x90"), (".modinfo", b"license=GPL\0depends=a,b\0")]);
        assert_eq!(section(&elf, ".modinfo").unwrap(), Some(&b"license=GPL\0depends=a,b\0"[..]));
        assert_eq!(section(&elf, ".text").unwrap(), Some(&b"\x90\x90"[..]));
        assert_eq!(section(&elf, ".modinf").unwrap(), None);
        assert_eq!(section(&elf, ".nothing").unwrap(), None);
    }

    #[test]
    fn rejects_what_is_not_elf() {
        assert_eq!(section(b"MZ\x90\x00", ".modinfo"), Err(ElfError::NotElf));
        assert_eq!(section(b"", ".modinfo"), Err(ElfError::NotElf));
        let mut elf = elf64(&[]);
        elf[4] = 3;
        assert_eq!(section(&elf, ".modinfo"), Err(ElfError::Unsupported));
    }

    #[test]
    fn truncation_is_an_error_not_a_panic() {
        let elf = elf64(&[(".modinfo", b"depends=\0")]);
        for len in [10, 63, 64, elf.len() - 1, elf.len() - 64] {
            let r = section(&elf[..len], ".modinfo");
            assert!(matches!(r, Err(ElfError::Malformed(_))), "len {len}: {r:?}");
        }
        let mut bad = elf.clone();
        let shoff = u64::from_le_bytes(bad[0x28..0x30].try_into().unwrap()) as usize;
        // .modinfo's sh_size far past the end of the file.
        bad[shoff + 64 + 32..shoff + 64 + 40].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(section(&bad, ".modinfo"), Err(ElfError::Malformed(_))));
    }

    proptest::proptest! {
        #[test]
        fn never_panics_on_garbage(bytes in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..512)) {
            let _ = section(&bytes, ".modinfo");
        }

        #[test]
        fn never_panics_on_a_corrupted_module(at in 0usize..400, byte in proptest::prelude::any::<u8>()) {
            let mut elf = elf64(&[(".modinfo", b"depends=a\0")]);
            let at = at % elf.len();
            elf[at] = byte;
            let _ = section(&elf, ".modinfo");
        }
    }
}
