//! `/etc/resolv.conf` and `/etc/hosts` as bronzed writes them: rendered
//! from the plan (never merged with what was there), validated, and
//! written atomically only when the text changed.
//!
//! Pure rendering ([`render_resolv_conf`], [`render_hosts`]) apart from the
//! one write ([`write_if_changed`]), which goes through the one atomic
//! write helper, [`crate::statedir::write_file_atomic_with_mode`].

use std::net::{IpAddr, Ipv4Addr};
use std::path::PathBuf;

/// First line of both files.
pub const HEADER: &str = "# Written by bronzed from its network plan; changes here are overwritten.\n";
/// Where the hostname goes when no address is given, as Debian does it.
pub const HOSTNAME_ADDRESS: IpAddr = IpAddr::V4(Ipv4Addr::new(127, 0, 1, 1));
/// Longest name the resolvers accept (RFC 1035 §2.3.4).
const MAX_NAME: usize = 253;
const MAX_LABEL: usize = 63;

/// Why a file cannot be rendered; each names the value.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RenderError {
    #[error("search domain {domain:?} is not valid: {reason}")]
    SearchDomain { domain: String, reason: &'static str },
    #[error("hostname {hostname:?} is not valid: {reason}")]
    Hostname { hostname: String, reason: &'static str },
}

/// `resolv.conf` for `resolvers` and `search`, rendered by the
/// `resolv-conf` crate (the same parser and printer other Rust resolvers
/// use) under bronzed's header.
pub fn render_resolv_conf(resolvers: &[IpAddr], search: &[String]) -> Result<String, RenderError> {
    for domain in search {
        check_name(domain).map_err(|reason| RenderError::SearchDomain { domain: domain.clone(), reason })?;
    }
    let mut config = resolv_conf::Config::new();
    config.nameservers = resolvers.iter().map(|ip| (*ip).into()).collect();
    if !search.is_empty() {
        config.set_search(search.to_vec());
    }
    Ok(format!("{HEADER}{config}"))
}

/// `/etc/hosts`: localhost on both loopback addresses, and `hostname`
/// (with its first label as the short name) on `address`, else on
/// [`HOSTNAME_ADDRESS`].
pub fn render_hosts(hostname: &str, address: Option<IpAddr>) -> Result<String, RenderError> {
    check_name(hostname).map_err(|reason| RenderError::Hostname { hostname: hostname.to_string(), reason })?;
    let mut text = String::from(HEADER);
    text.push_str("127.0.0.1\tlocalhost\n");
    text.push_str("::1\tlocalhost ip6-localhost ip6-loopback\n");
    let address = address.unwrap_or(HOSTNAME_ADDRESS);
    let short = hostname.split('.').next().unwrap_or(hostname);
    if short == hostname {
        text.push_str(&format!("{address}\t{hostname}\n"));
    } else {
        text.push_str(&format!("{address}\t{hostname} {short}\n"));
    }
    Ok(text)
}

/// A DNS name of letters, digits, `-` and `.`: no whitespace or `#` that
/// would change the file's meaning, labels of 1..=63, 253 at most.
fn check_name(name: &str) -> Result<(), &'static str> {
    if name.is_empty() {
        return Err("it is empty");
    }
    if name.len() > MAX_NAME {
        return Err("it is longer than 253 characters");
    }
    if !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.') {
        return Err("only letters, digits, '-' and '.' are allowed");
    }
    let name = name.strip_suffix('.').unwrap_or(name);
    for label in name.split('.') {
        if label.is_empty() || label.len() > MAX_LABEL {
            return Err("each label must be 1 to 63 characters");
        }
        if label.starts_with('-') || label.ends_with('-') {
            return Err("a label cannot start or end with '-'");
        }
    }
    Ok(())
}

/// Replaces `path` with `text` (permission bits `mode`) unless it already
/// holds exactly that; creates the directory if needed. Returns whether it
/// wrote.
pub async fn write_if_changed(path: PathBuf, text: String, mode: u32) -> std::io::Result<bool> {
    // Blocking file I/O with fsyncs: off the runtime's threads.
    tokio::task::spawn_blocking(move || {
        if std::fs::read(&path).is_ok_and(|current| current == text.as_bytes()) {
            return Ok(false);
        }
        if let Some(dir) = path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        crate::statedir::write_file_atomic_with_mode(&path, text.as_bytes(), mode)?;
        Ok(true)
    })
    .await
    .map_err(std::io::Error::other)?
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_renders_and_parses_back() {
        let resolvers: Vec<IpAddr> = vec!["10.0.0.53".parse().unwrap(), "fd00::53".parse().unwrap()];
        let search = vec!["lan".to_string(), "example.com".to_string()];
        let text = render_resolv_conf(&resolvers, &search).unwrap();
        assert_eq!(text, format!("{HEADER}nameserver 10.0.0.53\nnameserver fd00::53\nsearch lan example.com\n"));
        let parsed = resolv_conf::Config::parse(&text).unwrap();
        let back: Vec<IpAddr> = parsed.nameservers.iter().map(|n| IpAddr::from(n.clone())).collect();
        assert_eq!(back, resolvers);
        assert_eq!(parsed.get_search(), Some(&search));
    }

    #[test]
    fn resolv_conf_without_search_has_no_search_line() {
        let text = render_resolv_conf(&["192.0.2.1".parse().unwrap()], &[]).unwrap();
        assert_eq!(text, format!("{HEADER}nameserver 192.0.2.1\n"));
    }

    #[test]
    fn a_search_domain_that_would_inject_a_line_is_refused() {
        let err = render_resolv_conf(&[], &["lan\nnameserver 6.6.6.6".into()]).unwrap_err();
        assert_eq!(
            err.to_string(),
            "search domain \"lan\\nnameserver 6.6.6.6\" is not valid: only letters, digits, '-' and '.' are allowed"
        );
        assert!(render_resolv_conf(&[], &["a..b".into()]).is_err());
        assert!(render_resolv_conf(&[], &["example.com.".into()]).is_ok(), "a trailing dot is fine");
    }

    #[test]
    fn hosts_names_the_host_on_127_0_1_1_or_the_given_address() {
        let text = render_hosts("node1.example.com", None).unwrap();
        assert_eq!(
            text,
            format!(
                "{HEADER}127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n\
                 127.0.1.1\tnode1.example.com node1\n"
            )
        );
        let text = render_hosts("node1", Some("10.0.0.5".parse().unwrap())).unwrap();
        assert!(text.ends_with("\n10.0.0.5\tnode1\n"), "{text}");
        assert_eq!(
            render_hosts("bad host", None).unwrap_err().to_string(),
            "hostname \"bad host\" is not valid: only letters, digits, '-' and '.' are allowed"
        );
        assert!(render_hosts(&"a".repeat(64), None).is_err());
        assert!(render_hosts("-node", None).is_err());
    }

    #[tokio::test]
    async fn written_atomically_only_when_changed() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("etc/hosts");
        assert!(write_if_changed(path.clone(), "one\n".into(), 0o644).await.unwrap());
        assert!(!write_if_changed(path.clone(), "one\n".into(), 0o644).await.unwrap());
        assert!(write_if_changed(path.clone(), "two\n".into(), 0o644).await.unwrap());
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
        assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o644);
        let names: Vec<_> =
            std::fs::read_dir(dir.path().join("etc")).unwrap().map(|e| e.unwrap().file_name()).collect();
        assert_eq!(names, ["hosts"], "no temp file left behind");
    }
}
