//! NoCloud: `meta-data` (YAML), `network-config` (cloud-init v1 or v2) and
//! `user-data` from a volume labelled `cidata` or `CIDATA`, or over HTTP
//! from a seed URL named by `ds=nocloud;s=URL` (or `ds=nocloud-net;...`,
//! `seedfrom=URL`) on the kernel command line or in the SMBIOS system
//! serial number. `h=<hostname>` and `i=<instance-id>` in the seed override
//! meta-data. The volume wins when both exist (it is local and cannot be
//! spoofed from the network).
//!
//! Detected (facts only) by such a volume, or `ds=nocloud` in the serial or
//! on the command line, as cloud-init's ds-identify does.
//!
//! An HTTP seed needs an `http` grant for its URL, which only the operator
//! can give (the image's `[grants]` cannot know it).

use bronze_plugin_sdk::{
    FetchError, InstanceMetadata, MetadataProvider, NetworkConfig, facts,
    volumes::{self, VolumeError},
};
use bronze_provider_common::{Fetcher, cloudinit, dmi};
use serde_yaml::Value;

const LABELS: [&str; 2] = ["cidata", "CIDATA"];

/// What `ds=nocloud...` says.
#[derive(Debug, Default, Clone, PartialEq)]
struct Seed {
    url: Option<String>,
    hostname: Option<String>,
    instance_id: Option<String>,
}

/// Parses a `ds=` value or a serial like `ds=nocloud;s=http://10.0.0.1/;h=node1`.
fn seed(text: &str) -> Option<Seed> {
    let value = text.split_whitespace().find_map(|w| w.strip_prefix("ds="))?;
    let mut parts = value.split(';');
    let source = parts.next()?.trim();
    if source != "nocloud" && source != "nocloud-net" {
        return None;
    }
    let mut seed = Seed::default();
    for part in parts {
        let Some((key, val)) = part.split_once('=') else { continue };
        let val = val.trim().to_string();
        if val.is_empty() {
            continue;
        }
        match key.trim() {
            "s" | "seedfrom" => seed.url = Some(val),
            "h" | "local-hostname" => seed.hostname = Some(val),
            "i" | "instance-id" => seed.instance_id = Some(val),
            _ => {}
        }
    }
    Some(seed)
}

/// The seed from the command line (first) or the SMBIOS serial.
fn find_seed() -> Option<Seed> {
    let cmdline = facts::cmdline().join(" ");
    seed(&cmdline).or_else(|| seed(&dmi::read().product_serial))
}

fn volume_label() -> Option<&'static str> {
    let devices = volumes::devices();
    LABELS.into_iter().find(|label| devices.iter().any(|d| d.label.as_deref() == Some(*label)))
}

/// Where the documents come from.
enum Source {
    Volume(&'static str),
    Http(Fetcher),
}

impl Source {
    /// `name`'s bytes, None when the source does not have it.
    fn read(&self, name: &str) -> Result<Option<Vec<u8>>, FetchError> {
        match self {
            Source::Volume(label) => match volumes::read_file(label, name) {
                Ok(bytes) => Ok(Some(bytes)),
                Err(VolumeError::NotFound(_)) => Ok(None),
                Err(VolumeError::Io(why)) => Err(FetchError::Unavailable(format!("{label}/{name}: {why}"))),
                Err(e) => Err(FetchError::Invalid(format!("{label}/{name}: {}", e.describe()))),
            },
            Source::Http(fetcher) => fetcher.get_optional(&format!("/{name}"), &[]),
        }
    }

    fn text(&self, name: &str) -> Result<Option<String>, FetchError> {
        self.read(name)?
            .map(|bytes| String::from_utf8(bytes).map_err(|_| FetchError::Invalid(format!("{name}: not UTF-8 text"))))
            .transpose()
    }
}

struct NoCloud;

impl MetadataProvider for NoCloud {
    fn detect() -> bool {
        volume_label().is_some() || find_seed().is_some()
    }

    fn fetch() -> Result<InstanceMetadata, FetchError> {
        let seed = find_seed().unwrap_or_default();
        let source = match (volume_label(), &seed.url) {
            (Some(label), _) => Source::Volume(label),
            (None, Some(url)) => {
                if !(url.starts_with("http://") || url.starts_with("https://")) {
                    return Err(FetchError::Invalid(format!(
                        "seed URL {url:?}: only http:// and https:// are supported"
                    )));
                }
                let mut fetcher = Fetcher::new(url);
                fetcher.timeout_ms = 5000;
                Source::Http(fetcher)
            }
            (None, None) => return Err(FetchError::NotDetected),
        };
        let meta_text = source
            .text("meta-data")?
            .ok_or_else(|| FetchError::Invalid("meta-data: missing (NoCloud requires it)".into()))?;
        let meta: Value = if meta_text.trim().is_empty() {
            Value::Null
        } else {
            serde_yaml::from_str(&meta_text).map_err(|e| FetchError::Invalid(format!("meta-data: not YAML: {e}")))?
        };
        if !meta.is_null() && !meta.is_mapping() {
            return Err(FetchError::Invalid("meta-data: expected a mapping".into()));
        }
        let field = |key: &str| -> Result<Option<String>, FetchError> {
            match meta.get(key) {
                None | Some(Value::Null) => Ok(None),
                Some(Value::String(s)) => Ok(Some(s.trim().to_string()).filter(|s| !s.is_empty())),
                Some(Value::Number(n)) => Ok(Some(n.to_string())),
                Some(_) => Err(FetchError::Invalid(format!("meta-data: {key} is not a string"))),
            }
        };

        let mut md = InstanceMetadata::new("nocloud");
        md.instance_id = seed.instance_id.clone().map(Some).unwrap_or(field("instance-id")?);
        md.hostname = match seed.hostname.clone() {
            Some(h) => Some(h),
            None => field("local-hostname")?.or(field("hostname")?),
        };

        if let Some(doc) = source.text("network-config")?
            && !doc.trim().is_empty()
        {
            let settings = cloudinit::parse(&doc, &cloudinit::host_links())
                .map_err(|e| FetchError::Invalid(format!("network-config: {e}")))?;
            md.interfaces = settings.interfaces.clone();
            md.nameservers = settings.nameservers.clone();
            md.search_domains = settings.search_domains.clone();
            md.network_config = Some(NetworkConfig { format: settings.format(), body: doc });
        }
        md.user_data = source.read("user-data")?.filter(|u| !u.is_empty());
        if let Source::Volume(label) = source {
            md.attributes.push(("source".into(), format!("volume:{label}")));
        } else if let Some(url) = &seed.url {
            md.attributes.push(("source".into(), url.clone()));
        }
        Ok(md)
    }
}

bronze_plugin_sdk::export_metadata_provider!(NoCloud);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seeds() {
        let s = seed("console=ttyS0 ds=nocloud;s=http://10.0.2.2:8000/seed/;h=node-1;i=iid-7 quiet").unwrap();
        assert_eq!(s.url.as_deref(), Some("http://10.0.2.2:8000/seed/"));
        assert_eq!(s.hostname.as_deref(), Some("node-1"));
        assert_eq!(s.instance_id.as_deref(), Some("iid-7"));
        assert_eq!(seed("ds=nocloud-net;seedfrom=http://x/").unwrap().url.as_deref(), Some("http://x/"));
        assert_eq!(seed("ds=nocloud").unwrap(), Seed::default());
        assert!(seed("ds=ec2").is_none());
        assert!(seed("Serial 1234").is_none());
    }
}
