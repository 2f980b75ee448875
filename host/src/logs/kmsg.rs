//! The kernel log from `/dev/kmsg`: one record per read,
//! `priority,sequence,microseconds,flags;message`.

use std::io::Read;
use std::path::Path;

/// One kernel log record.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KmsgRecord {
    pub priority: u8,
    pub facility: u32,
    pub sequence: u64,
    /// Microseconds since boot.
    pub micros: u64,
    pub message: String,
}

/// Parses one `/dev/kmsg` record; continuation lines (" KEY=value") are dropped.
pub fn parse(record: &str) -> Option<KmsgRecord> {
    let (head, message) = record.split_once(';')?;
    let mut fields = head.split(',');
    let prefix: u32 = fields.next()?.parse().ok()?;
    let sequence = fields.next()?.parse().ok()?;
    let micros = fields.next()?.parse().ok()?;
    let message = message.lines().next().unwrap_or("").to_string();
    Some(KmsgRecord { priority: (prefix & 7) as u8, facility: prefix >> 3, sequence, micros, message })
}

/// Reads records from `path` (normally /dev/kmsg). Without `follow` it stops
/// at the end of the buffer; with it, it blocks for new records and returns
/// when `sink` says stop. Run it on a blocking thread.
pub fn read(path: &Path, follow: bool, mut sink: impl FnMut(KmsgRecord) -> bool) -> std::io::Result<()> {
    use std::os::unix::fs::OpenOptionsExt;
    let flags = if follow { 0 } else { libc::O_NONBLOCK };
    let mut file = std::fs::OpenOptions::new().read(true).custom_flags(flags).open(path)?;
    let mut buf = vec![0u8; 8192];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(()),
            Ok(n) => {
                if let Some(rec) = parse(&String::from_utf8_lossy(&buf[..n]))
                    && !sink(rec)
                {
                    return Ok(());
                }
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => return Ok(()),
            // Records were overwritten while we read: keep going.
            Err(e) if e.raw_os_error() == Some(libc::EPIPE) => continue,
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_records() {
        let r = parse("6,1234,5678901,-;virtio_net virtio0 eth0: up\n SUBSYSTEM=net\n").unwrap();
        assert_eq!((r.priority, r.facility, r.sequence, r.micros), (6, 0, 1234, 5678901));
        assert_eq!(r.message, "virtio_net virtio0 eth0: up");
        assert_eq!(parse("30,1,2,-;x").unwrap().facility, 3);
        assert!(parse("garbage").is_none());
    }
}
